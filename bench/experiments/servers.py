"""One-off: Sluice under uvicorn (as `sluice serve` runs it) vs under granian (not in `make bench`).

    python -m bench.experiments.servers [--quick] [--only latency,throughput]

The same app (`sluice.app:factory`, bench/configs/sluice.yaml) on core 0, measured by the same
scenarios as `make bench`; granian gets one worker, uvloop, its single-threaded runtime.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bench import procs, report, run, systems
from bench.loadgen import Target
from bench.procs import Proc

HERE = Path(__file__).resolve().parent.parent


def start_granian(workdir: Path, up: systems.Upstreams) -> tuple[Proc, Target]:
    """Sluice's ASGI factory served by granian."""
    port = procs.free_port()
    env = {
        "PYTHONPATH": str(systems.ROOT),
        "SLUICE_CONFIG": str(systems.CONFIGS / "sluice.yaml"),
        "BENCH_WORKDIR": str(workdir),
        "BENCH_JSON_BASE": up.json_base,
        "BENCH_SSE_BASE": up.sse_base,
        "BENCH_AUTH_TOKEN": systems.AUTH_TOKEN,
    }
    granian = shutil.which("granian") or str(Path(sys.executable).parent / "granian")
    cmd = [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1", "--loop", "uvloop", "--runtime-mode", "st"]
    cmd += ["--no-access-log", "--log-level", "warning", "sluice.app:factory"]
    proc = procs.start("sluice-granian", cmd, port, workdir, procs.GATEWAY_CORE, env)
    url = f"http://127.0.0.1:{port}{systems.CHAT}"
    return proc, Target(
        "sluice granian", url, url, {"Authorization": f"Bearer {systems.AUTH_TOKEN}"}
    )


def main() -> None:
    """Measure both servers in one run and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="latency,throughput,streams")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",")}
    d = run.Durations.pick(args.quick)
    procs.pin_self()
    workdir = HERE / ".work" / "servers"
    workdir.mkdir(parents=True, exist_ok=True)
    systems.STARTERS["sluice-granian"] = start_granian
    result = report.Run("Sluice: uvicorn vs granian", ["one-off experiment, busy machine"])
    up = systems.start_upstreams(workdir, 5.0)
    try:
        run.measure(result, up.direct(), only, d)
        for key in ("sluice", "sluice-granian"):
            run.bench_system(result, key, workdir, up, only, d)
    finally:
        up.stop()
    print(report.markdown(result))


if __name__ == "__main__":
    main()
