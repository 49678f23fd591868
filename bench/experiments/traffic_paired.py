"""The traffic features' c=1 cost in one process, request by request (not part of `make bench`;
`make bench` measures the same pair, see bench/variants.py).

    python -m bench.experiments.traffic_paired [--seconds 10] [--repeat 3] [--redis]
                                               [--only limit|cache] [--against DIR]

Starts the bench upstreams and one `sluice serve` with bench/configs/sluice-traffic.yaml on
the gateway core, with two team keys (one with a key limit, one without), then alternates
requests between "limit + cache (misses)" and "no limit, Cache-Control: no-store" on two
connections (`loadgen.paired`) and prints the median difference. `--only limit` keeps the
limit and sends no-store on both sides; `--only cache` uses the key without limits on both
sides. `--against DIR` compares two builds instead: this checkout's gateway and one run from
the checkout at DIR (e.g. a `git worktree` of the commit before a change), both with the
traffic features on, alternating request by request (Δ = this − DIR). About 15 s plus `--seconds`
per repeat: quick enough to try a change to the hot path.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench import loadgen, systems
from bench.variant_setup import redis_cleanup, redis_ok, redis_prefix, start
from bench.variants import ENTRIES, target

REDIS_URL = "redis://127.0.0.1:6379/0"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--redis", action="store_true", help="the Redis backend (traffic-redis)")
    ap.add_argument("--only", choices=("limit", "cache"), help="one feature on, not both")
    ap.add_argument("--against", type=Path, help="another checkout: this build vs that one")
    args = ap.parse_args()
    name = "traffic-redis" if args.redis else "traffic-local"
    rd = REDIS_URL if args.redis and redis_ok(REDIS_URL) else None
    if args.redis and rd is None:
        raise SystemExit(f"Redis is not reachable at {REDIS_URL}")
    work = Path(tempfile.mkdtemp(prefix="sluice-traffic-paired-"))
    up = systems.start_upstreams(work, 10.0)
    run = other = None
    try:
        run = start(name, work, up, None, rd)
        on = target(name, ENTRIES[name], run, up)
        off = target(f"{name} off", ENTRIES[f"{name} off"], run, up)
        if args.only == "limit":  # the limited key, no-store: the cache is not used
            on.headers["Cache-Control"] = "no-store"
        elif args.only == "cache":  # the plain key, cache on
            on.headers = {k: v for k, v in off.headers.items() if k != "Cache-Control"}
        if args.against is not None:  # the same request to the other build
            (work / "against").mkdir()
            other = start(name, work / "against", up, None, rd, args.against.resolve())
            off = target(name, ENTRIES[name], other, up)
            off.headers = {**on.headers, "Authorization": f"Bearer {other.key}"}
        loadgen.paired(on, off, 2.0)  # warm: plans, slots, connections
        what = args.only or "limit + cache"
        for _ in range(args.repeat):
            r = loadgen.paired(on, off, args.seconds)
            print(
                f"{name} {what}: Δ {r.delta_p50_ms * 1000:+.1f} µs over {r.pairs:,} pairs "
                f"(on {r.a_p50_ms:.3f} ms, off {r.b_p50_ms:.3f} ms p50, {r.failed} failed)",
                flush=True,
            )
    finally:
        for r in (run, other):
            if r is not None:
                r.proc.stop()
        up.stop()
        if rd is not None:
            redis_cleanup(rd, redis_prefix(work))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
