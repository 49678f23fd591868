"""Profile Sluice's hot path under c=64 non-streamed load (not part of `make bench`).

    python -m bench.experiments.profile [--seconds 10] [--streams]

Starts the bench upstreams and Sluice (bench/configs/sluice.yaml, core 0), attaches py-spy
(installed into bench/peers/tools-venv) for the run, and prints the top functions by own
time and by total time from py-spy's raw (collapsed) output. `--streams` profiles 50 streams
in flight instead.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
from pathlib import Path

from bench import loadgen, procs, systems

HERE = Path(__file__).resolve().parent.parent
TOOLS = HERE / "peers" / "tools-venv"
LINES = bool(int(__import__("os").environ.get("PROFILE_LINES", "0")))  # py-spy with line numbers


def py_spy() -> Path:
    """py-spy, installed on first use into an ignored venv."""
    exe = TOOLS / "bin" / "py-spy"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS)], check=True)
        pip = [str(TOOLS / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"]
        subprocess.run(pip, check=True)
    return exe


def top(collapsed: Path, n: int = 25) -> str:
    """Own-time and total-time tables from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        samples += k
        frames = stack.split(";")
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    out = [f"{samples} samples", "", "own time:"]
    out += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(n)]
    out += ["", "total time (incl. callees):"]
    out += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return "\n".join(out)


def main() -> None:
    """Run the load with py-spy attached and print where the gateway's time goes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--streams", action="store_true")
    args = ap.parse_args()
    procs.pin_self()
    workdir = HERE / ".work" / "profile"
    workdir.mkdir(parents=True, exist_ok=True)
    spy = py_spy()
    up = systems.start_upstreams(workdir, 5.0)
    gw = None
    try:
        gw, target = systems.start_sluice(workdir, up)
        loadgen.http_load(target, 16, 2)  # warm
        out = workdir / ("streams.txt" if args.streams else "c64.txt")
        cmd = [
            str(spy),
            "record",
            "-f",
            "raw",
            *([] if LINES else ["--nolineno"]),
            "--nonblocking",
            "-r",
            "250",
        ]
        cmd += ["-p", str(gw.pid)]
        cmd += ["-d", str(int(args.seconds) + 1), "-o", str(out)]
        rec = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if args.streams:
            res = loadgen.streams(target, 50, seconds=args.seconds)
            print(f"streams: {res.streams} ({res.failed} failed)")
        else:
            timer = threading.Timer(args.seconds + 5, rec.kill)
            timer.start()
            r = loadgen.http_load(target, 64, args.seconds)
            timer.cancel()
            print(f"c=64: {r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms, {r.failed} failed")
        _, err = rec.communicate(timeout=60)
        if rec.returncode != 0 and not out.exists():
            raise SystemExit(f"py-spy failed: {err.decode()[-800:]}")
        print(top(out))
    finally:
        if gw is not None:
            gw.stop()
        up.stop()


if __name__ == "__main__":
    main()
