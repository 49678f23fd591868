"""`make bench`: Sluice against the bare upstream (and, with --peers, LiteLLM and Portkey).

    python -m bench.run [--quick] [--only latency,throughput,streams] [--peers]
                        [--systems sluice,nginx-hop,...] [--chunk-ms 10]
                        [--variants [auth,logging,translation,traffic]]

The gateway under test is pinned to core 0 (`taskset -c 0`); this harness, wrk, and the
upstreams share core 1. Each system is started, warmed, measured in every selected scenario,
has its peak RSS read, and is stopped before the next one starts. Results are printed and
written to bench/results/<date>-<scenarios>.md. With --variants, Sluice's variants (issues 3–6,
bench/variants.py) follow in the same run, against the same upstreams.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen, procs, report, systems, variants, variants_report
from bench.loadgen import Target
from bench.procs import Proc

HERE = Path(__file__).resolve().parent
SCENARIOS = ("latency", "throughput", "streams")


@dataclass(frozen=True)
class Durations:
    """How long each scenario runs (seconds) and how many rounds of streams."""

    warm: float
    latency: float
    throughput: float
    streams: float
    burst_rounds: int

    @classmethod
    def pick(cls, quick: bool) -> Durations:
        """Short runs for checking the harness; full ones for the figures (≲ 3 min total)."""
        return cls(1, 2, 3, 2, 1) if quick else cls(2, 8, 10, 8, 3)


def measure(
    run: report.Run, target: Target, only: set[str], d: Durations, proc: Proc | None = None
) -> int:
    """Warm `target`, run the selected scenarios, record figures; returns failed requests.

    With the gateway's `proc`, the c=64 run also yields its CPU time per request: unlike
    requests/s, that figure barely moves when other work shares the machine."""
    name, failed = target.name, 0
    if only & {"latency", "throughput"}:
        loadgen.http_load(target, 16, max(d.warm, target.warm_s))  # pools, caches, JITs warm
    if "latency" in only:
        r = loadgen.http_load(target, 1, d.latency)
        run.put(name, "c1_p50", r.p50_ms)
        run.put(name, "c1_p99", r.p99_ms)
        failed += r.failed
    if "throughput" in only:
        cpu0 = proc.cpu_seconds() if proc else 0.0
        r = loadgen.http_load(target, 64, d.throughput)
        if proc is not None and r.requests:
            cpu_us = 1e6 * (proc.cpu_seconds() - cpu0) / r.requests
            run.put(name, "c64_cpu_us", cpu_us)
            run.put(name, "core_rps", 1e6 / cpu_us if cpu_us else None)
        run.put(name, "c64_rps", r.rps)
        run.put(name, "c64_p99", r.p99_ms)
        failed += r.failed
    if "streams" in only:
        loadgen.streams(target, 50, 1)  # a warm burst: connections are open when timing starts
        cpu0 = proc.cpu_seconds() if proc else 0.0
        s = loadgen.streams(target, 50, seconds=d.streams)
        if proc is not None and s.streams:
            run.put(name, "stream_cpu_us", 1e6 * (proc.cpu_seconds() - cpu0) / s.streams)
        run.put(name, "streams_per_s", s.streams / d.streams)
        b = loadgen.streams(target, 50, d.burst_rounds)
        for q, tag in ((0.5, "p50"), (0.99, "p99")):
            run.put(name, f"ttfb_{tag}", s.p("ttfb", q))
            run.put(name, f"total_{tag}", s.p("total", q))
            run.put(name, f"burst_ttfb_{tag}", b.p("ttfb", q))
        ok = s.streams - s.failed + b.streams - b.failed
        run.put(name, "streams_intact", f"{ok}/{s.streams + b.streams}")
        failed += s.failed + b.failed
        if s.problems or b.problems:
            run.errors[f"{name} streams"] = "; ".join(s.problems + b.problems)[:400]
    run.put(name, "failed", failed)
    return failed


def bench_system(
    run: report.Run, key: str, workdir: Path, up: systems.Upstreams, only: set[str], d: Durations
) -> None:
    """Start one gateway, measure it, read its peak RSS, stop it; failures are reported."""
    proc: Proc | None = None
    label = key.replace("-", " ")
    try:
        print(f"· starting {label} …", flush=True)
        proc, target = systems.STARTERS[key](workdir, up)
        t0 = time.monotonic()
        measure(run, target, only, d, proc)
        rss = proc.peak_rss_mb()
        if rss is not None:
            run.put(target.name, "rss_mb", rss)
        print(f"  {label}: measured in {time.monotonic() - t0:.0f}s", flush=True)
    except Exception as exc:  # a peer that cannot start is reported, the run goes on
        msg = str(exc).strip().replace("\n", " ")[:600]
        run.errors[label] = msg
        print(f"  {label}: not measured: {msg}", flush=True)
    finally:
        if proc is not None:
            proc.stop()


def _prune(root: Path, keep: int) -> None:
    """Remove all but the newest `keep` run folders (audit logs grow by MBs a run)."""
    runs = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:8].isdigit())
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (checks the harness)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    ap.add_argument(
        "--peers", action="store_true", help="also install and measure LiteLLM, Portkey"
    )
    ap.add_argument(
        "--systems", default=None, help="e.g. sluice,nginx-hop, or none (direct always runs)"
    )
    ap.add_argument("--chunk-ms", type=float, default=10.0, help="upstream pause between chunks")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's header")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    ap.add_argument(
        "--variants",
        nargs="?",
        const="all",
        default=None,
        help="also measure Sluice variants: all, or some of " + ",".join(variants.GROUPS),
    )
    ap.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server for the audit-pg variant (database sluice_bench is created)",
    )
    ap.add_argument(
        "--redis",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for the traffic-redis variant (keys under a per-run prefix, deleted after)",
    )
    args = ap.parse_args(argv)
    args.only_set = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only_set - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.systems == "none":  # direct only (e.g. with --variants)
        args.system_list = []
    elif args.systems:
        args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    else:
        args.system_list = ["nginx-hop", "sluice", *(systems.PEERS if args.peers else ())]
    bad = [s for s in args.system_list if s not in systems.STARTERS]
    if bad:
        ap.error(f"unknown system(s) {bad}; choose from {', '.join(systems.STARTERS)}")
    if args.variants is not None:
        try:
            variants.selected(args.variants)
        except ValueError as exc:
            ap.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a Sluice target fails."""
    args = parse(argv)
    d = Durations.pick(args.quick)
    procs.pin_self()
    stamp = dt.datetime.now(dt.UTC)
    workdir = HERE / ".work" / stamp.strftime("%Y%m%dT%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    _prune(HERE / ".work", keep=5)
    env = systems.environment()
    only = [s for s in SCENARIOS if s in args.only_set]
    notes = [
        f"{stamp:%Y-%m-%d %H:%M} UTC, {'quick' if args.quick else 'full'} run: "
        f"{', '.join(only)}; load {os.getloadavg()[0]:.1f} (1-min average) at start",
        f"{env['cores']} cores; gateway on core {procs.GATEWAY_CORE}, load generator + "
        f"upstreams on core {procs.LOAD_CORE}; Python {env['python']}; wrk: {env['wrk']}; "
        f"nginx: {env['nginx']}",
        f"durations: warm-up {d.warm:g}s, c=1 {d.latency:g}s, c=64 {d.throughput:g}s, "
        f"streams: 50 kept in flight for {d.streams:g}s (starts spread), then "
        f"{d.burst_rounds} burst(s) of 50 simultaneous starts",
        f"upstream: nginx returns a fixed chat.completion JSON; bench/upstream.py streams 20 "
        f"chunks {args.chunk_ms:g} ms apart (+ usage when asked) and [DONE]",
        "Sluice: bench/configs/sluice.yaml (static token auth, keys, BYOK, limits, budgets, "
        "usage + audit log on — audit lines to a file in bench/.work/; cache off)",
        *(
            [
                f"variants ({args.variants}): bench/configs/sluice-{{open,key,traffic}}.yaml, "
                "see the Variants section"
            ]
            if args.variants is not None
            else []
        ),
        *args.note,
    ]
    run = report.Run("Sluice benchmark", notes)
    print(f"workdir {workdir}", flush=True)
    up = systems.start_upstreams(workdir, args.chunk_ms)
    verdicts: list[str] = []
    try:
        print("· direct (the load generator against the upstreams) …", flush=True)
        measure(run, up.direct(), args.only_set, d)
        for key in args.system_list:
            bench_system(run, key, workdir, up, args.only_set, d)
        if args.variants is not None:
            vd = variants.Durations.pick(args.quick)
            vres = variants.measure(
                args.variants, args.only_set, vd, workdir, up, args.postgres, args.redis
            )
            run.sections += variants_report.markdown(vres)
            run.errors.update(vres.errors)
            verdicts += [v for _, _, v in variants_report.targets(vres)]
    finally:
        up.stop()
    text = report.markdown(run)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{stamp:%Y-%m-%d}-{'+'.join(only)}{'-peers' if args.peers else ''}"
    name += "-variants" if args.variants is not None else ""
    path = args.out / f"{name}{'-quick' if args.quick else ''}.md"
    path.write_text(text + "\n")
    print(
        f"written to {path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path}"
    )
    if "sluice" in run.systems:
        verdicts += [v for _, _, v in report.targets(run)]
    return 1 if "FAIL" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
