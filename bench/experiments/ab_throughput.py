"""One-off: this checkout's Sluice against another checkout's at c=64, in alternating rounds
(not part of `make bench`).

    python -m bench.experiments.ab_throughput --against DIR [--rounds 8] [--seconds 3]

Starts the bench upstreams and two `sluice serve` processes with bench/configs/sluice.yaml,
both on the gateway core: this checkout's and the one at DIR (e.g. `git worktree add
/tmp/base HEAD~1`, with this checkout's .venv linked into it). Then runs wrk at c=64 against
each in turn, A B B A …, `--rounds` pairs of `--seconds` each, and prints each round's
requests/s and gateway CPU µs per request, the medians, and the median of the paired
differences (this − DIR). Only one process is loaded at a time, so they never share the core;
alternating cancels most of the VM's drift, which moves whole runs by ±10 % here. About
`2 × rounds × (seconds + 1)` seconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import loadgen, procs, systems


def round_of(proc: procs.Proc, target: loadgen.Target, seconds: float) -> tuple[float, float]:
    """One wrk run at c=64: (requests/s, CPU µs a request)."""
    cpu0 = proc.cpu_seconds()
    r = loadgen.wrk(target, 64, seconds)
    cpu = proc.cpu_seconds() - cpu0
    if r.failed:
        raise RuntimeError(f"{r.failed} requests failed")
    return r.rps, 1e6 * cpu / max(r.requests, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    procs.pin_self()
    work = Path(tempfile.mkdtemp(prefix="sluice-ab-"))
    up = systems.start_upstreams(work, 5.0)
    started: list[procs.Proc] = []
    try:
        (work / "a").mkdir()
        (work / "b").mkdir()
        a, ta = systems.start_sluice(work / "a", up)
        started.append(a)
        b, tb = systems.start_sluice(work / "b", up, args.against.resolve())
        started.append(b)
        for target in (ta, tb):  # warm: connections, plans, caches
            loadgen.wrk(target, 64, 2)
        mine: list[tuple[float, float]] = []
        theirs: list[tuple[float, float]] = []
        for i in range(args.rounds):
            order = [(a, ta, mine), (b, tb, theirs)]
            for proc, target, out in order if i % 2 == 0 else order[::-1]:
                out.append(round_of(proc, target, args.seconds))
            print(
                f"round {i + 1}: this {mine[-1][0]:,.0f} req/s {mine[-1][1]:.1f} µs · "
                f"other {theirs[-1][0]:,.0f} req/s {theirs[-1][1]:.1f} µs",
                flush=True,
            )
        med = statistics.median
        print(
            f"median: this {med(m[0] for m in mine):,.0f} req/s {med(m[1] for m in mine):.1f} µs"
            f" · other {med(t[0] for t in theirs):,.0f} req/s"
            f" {med(t[1] for t in theirs):.1f} µs"
        )
        deltas = [m[1] - t[1] for m, t in zip(mine, theirs, strict=True)]
        print(f"paired Δ CPU a request (this − other): median {med(deltas):+.1f} µs")
    finally:
        for p in started:
            p.stop()
        up.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
