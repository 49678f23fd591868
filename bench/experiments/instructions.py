"""One-off: CPU instructions per request, counted by valgrind's callgrind (not in `make bench`).

    python -m bench.experiments.instructions [--requests 300] [--config bench/configs/sluice.yaml]
                                             [--root PATH]    # another checkout, for an A/B

Timings on a shared VM move ±15 % between runs of the same code; an instruction count moves
~1 % (2026-11-23, core config, 300 requests: one commit 1,224,628 / 1,234,628 / 1,240,609,
the stop's first commit 1,254,342 / 1,247,994 per request), so this tells whether a change to
the hot path made it cheaper. Run one measurement at a time and alternate the checkouts: two
in parallel slow each other, and slower requests take time-dependent paths (the disconnect
watcher starts after 50 ms; the usage writer batches by time) — parallel runs read ~8 % higher.
Only user-space instructions count: a syscall saved (e.g. sluice/server.py's joined write)
does not show here. It starts the bench upstreams, then `sluice serve` under callgrind
twice — 20 warm-up requests and stop, then the same plus `--requests` more — all at
concurrency 1, and reports (instructions of the second − the first) ÷ requests. Everything
the process does per request counts: parsing, auth, limits, the upstream call, the usage
writer thread. Valgrind makes the gateway ~50× slower, so batching that depends on time
(the usage writer's linger) groups fewer rows than at full speed. ~1½ min per checkout.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import orjson

from bench import procs, systems

WARM = 20


def instructions(root: Path, config: Path, count: int, up: systems.Upstreams, work: Path) -> int:
    """Total instructions of one `sluice serve` that answered WARM + `count` requests."""
    port = procs.free_port()
    out = work / f"callgrind.{root.name}.{count}.out"
    env = {
        # Fixed hash seeds: with random ones, the start-up's dict probing differs between
        # the two runs by millions of instructions (±20k a request over 300 requests).
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": str(root),
        "BENCH_WORKDIR": str(work),
        "BENCH_JSON_BASE": up.json_base,
        "BENCH_SSE_BASE": up.sse_base,
        "BENCH_AUTH_TOKEN": systems.AUTH_TOKEN,
    }
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    cmd += ["-m", "sluice", "serve", "--config", str(config), "--port", str(port)]
    proc = procs.start(
        f"callgrind-{count}", cmd, port, work, None, env, cwd=root, ready_timeout=300
    )
    headers = {"Authorization": f"Bearer {systems.AUTH_TOKEN}", "content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(WARM + count):
            msg = {"role": "user", "content": f"hello {i}"}
            body = orjson.dumps({"model": "gpt-bench", "messages": [msg], "max_tokens": 16})
            conn.request("POST", systems.CHAT, body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"request {i}: HTTP {resp.status}")
    finally:
        conn.close()
        proc.proc.send_signal(signal.SIGINT)  # a clean exit writes callgrind's totals
        proc.proc.wait(300)
    return callgrind_total(out)


def callgrind_total(out: Path) -> int:
    """The instruction total a callgrind output file reports."""
    found = re.search(r"^(?:summary|totals):\s*(\d+)", out.read_text(errors="replace"), re.M)
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def main() -> None:
    """Print instructions per request for one checkout."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--root", type=Path, default=systems.ROOT, help="the checkout to measure")
    ap.add_argument("--config", type=Path, default=None, help="default: ROOT's bench config")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package valgrind)")
    root = args.root.resolve()
    config = args.config or root / "bench" / "configs" / "sluice.yaml"
    work = Path(tempfile.mkdtemp(prefix="sluice-instructions-"))
    up = systems.start_upstreams(work, 10.0)
    try:
        base = instructions(root, config, 0, up, work)
        total = instructions(root, config, args.requests, up, work)
    finally:
        up.stop()
    per = (total - base) / args.requests
    print(f"{root} ({config.name}): {per:,.0f} instructions per request")


if __name__ == "__main__":
    main()
