"""One-off: the floor under any Python gateway on this machine — a bare proxy (no auth,
limits or usage) on five server + client stacks, in one run (not in `make bench`).

    python -m bench.experiments.floors [--quick]

- `bare-proxy`: bench/bare_proxy.py, uvicorn + httptools + uvloop + aiohttp (the issue's floor);
- `uvicorn-rnet`: the same with rnet as the client (Sluice's stack since 2026-12-02);
- `rsgi-aiohttp`: bench/experiments/rsgi_proxy.py on granian's RSGI interface, aiohttp;
- `rsgi-pyreqwest`: the same with pyreqwest (Rust reqwest/hyper) as the client;
- `rsgi-rnet`: the same with rnet (Rust wreq/hyper), Sluice's client since 2026-12-02.
granian runs one worker, single-threaded runtime, uvloop. granian and pyreqwest are installed
into an ignored venv (bench/peers/floors-venv) with the proxy's other imports, so Sluice's
own environment never holds them. Peak RSS counts granian's supervisor process too.

2026-11-23, this machine (bench/results/floors/): c=64 requests/s and gateway CPU per request —
nginx hop 81,043 / 12 µs, bare-proxy 6,779 / 147 µs (0.084 × the hop), rsgi-aiohttp 7,535 /
132 µs, rsgi-pyreqwest 13,762 / 72 µs (0.17 ×); c=1 p50 0.257 / 0.313 / 0.258 ms (direct
0.010); peak RSS 43 / 77 / 79 MB. Only the last stack clears issue 2's 0.12 × line here.

2026-12-02, same machine class (bench/results/floors/2026-12-02-…): nginx hop 75,114 / 13 µs;
bare-proxy 5,853 / 170 µs (0.078 ×); uvicorn-rnet 10,959 / 91 µs (0.146 ×); rsgi-aiohttp
5,984 / 166; rsgi-pyreqwest 13,045 / 76; rsgi-rnet 12,707 / 78 (0.169 ×). c=1 p50 overhead
+0.378 / +0.347 / +0.433 / +0.377 / +0.362 ms. With rnet, Sluice's own stack clears the
line bare; granian would save ~13 µs more. What Sluice spends above 91 µs is its own work.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import procs, run, systems
from bench.loadgen import Target
from bench.procs import Proc

HERE = Path(__file__).resolve().parent.parent
VENV = HERE / "peers" / "floors-venv"
PACKAGES = ["granian", "pyreqwest", "rnet", "aiohttp", "orjson", "uvloop"]


def venv_python() -> Path:
    """The floors venv's python, created on first use."""
    py = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES], check=True)
        (VENV / ".installed").touch()
    return py


def rsgi_starter(client: str) -> Callable[[Path, systems.Upstreams], tuple[Proc, Target]]:
    """A `systems.STARTERS` entry: rsgi_proxy.py under granian with `client`."""

    def start(workdir: Path, up: systems.Upstreams) -> tuple[Proc, Target]:
        port = procs.free_port()
        env = {
            "PYTHONPATH": str(systems.ROOT),
            "FLOOR_CLIENT": client,
            "FLOOR_JSON": f"http://127.0.0.1:{up.json_port}",
            "FLOOR_SSE": f"http://127.0.0.1:{up.sse_port}",
        }
        cmd = [str(venv_python().parent / "granian"), "--interface", "rsgi", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1", "--loop", "uvloop", "--runtime-mode", "st"]
        cmd += ["--no-access-log", "--log-level", "warning", "bench.experiments.rsgi_proxy:app"]
        proc = procs.start(f"rsgi-{client}", cmd, port, workdir, procs.GATEWAY_CORE, env)
        url = f"http://127.0.0.1:{port}{systems.CHAT}"
        return proc, Target(f"rsgi {client}", url, url)

    return start


def start_uvicorn_rnet(workdir: Path, up: systems.Upstreams) -> tuple[Proc, Target]:
    """bench/bare_proxy.py (uvicorn) with rnet as its client: Sluice's own stack, bare."""
    port = procs.free_port()
    cmd = [sys.executable, "-m", "bench.bare_proxy", "--port", str(port), "--client", "rnet"]
    cmd += [
        "--json",
        f"http://127.0.0.1:{up.json_port}",
        "--sse",
        f"http://127.0.0.1:{up.sse_port}",
    ]
    env = {"PYTHONPATH": str(systems.ROOT)}
    proc = procs.start(
        "uvicorn-rnet", cmd, port, workdir, procs.GATEWAY_CORE, env, cwd=systems.ROOT
    )
    url = f"http://127.0.0.1:{port}{systems.CHAT}"
    return proc, Target("uvicorn rnet", url, url)


def main() -> None:
    """Measure the three floors and nginx's hop in one run; write the usual report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    venv_python()
    systems.STARTERS["rsgi-aiohttp"] = rsgi_starter("aiohttp")
    systems.STARTERS["rsgi-pyreqwest"] = rsgi_starter("pyreqwest")
    systems.STARTERS["rsgi-rnet"] = rsgi_starter("rnet")
    systems.STARTERS["uvicorn-rnet"] = start_uvicorn_rnet
    argv = ["--systems", "nginx-hop,bare-proxy,uvicorn-rnet,rsgi-aiohttp,rsgi-pyreqwest,rsgi-rnet"]
    argv += ["--only", "latency,throughput", "--note", "floors: bare proxies on five stacks"]
    argv += ["--out", str(HERE / "results" / "floors")]
    if args.quick:
        argv.append("--quick")
    run.main(argv)


if __name__ == "__main__":
    main()
