"""The systems measured: the upstream itself (direct), Sluice, and the peers.

Each `start_*` launches one gateway pinned to the gateway core and returns it with the
`Target` the load generators hit; all of them point at the same two upstream URLs.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import install_peers, procs
from bench.loadgen import Target
from bench.procs import Proc
from bench.upstream import nginx_hop_conf, nginx_upstream_conf

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).resolve().parent / "configs"
AUTH_TOKEN = "sk-bench-client-token"
UPSTREAM_KEY = "sk-bench-upstream-key"
CHAT = "/v1/chat/completions"


@dataclass
class Upstreams:
    """The two upstream servers every system calls."""

    json_port: int
    sse_port: int
    procs: list[Proc]

    @property
    def json_base(self) -> str:
        """OpenAI base URL of the fixed-JSON nginx."""
        return f"http://127.0.0.1:{self.json_port}/v1"

    @property
    def sse_base(self) -> str:
        """OpenAI base URL of the streaming server."""
        return f"http://127.0.0.1:{self.sse_port}/v1"

    def direct(self) -> Target:
        """The baseline: the load generator talking to the upstreams themselves."""
        return Target("direct", self.json_base + "/chat/completions", self.sse_base + CHAT[3:])

    def stop(self) -> None:
        """Stop both upstream servers."""
        for p in self.procs:
            p.stop()


def nginx_cmd(workdir: Path, conf: str, name: str) -> list[str]:
    """Write an nginx config under `workdir` and return the command that runs it."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    path = home / "nginx.conf"
    path.write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [nginx, "-p", str(home), "-e", str(home / "error.log"), "-c", str(path)]


def start_upstreams(workdir: Path, chunk_ms: float) -> Upstreams:
    """nginx (fixed JSON) and the stream server, both on the load core."""
    started: list[Proc] = []
    try:
        sse_port = procs.free_port()
        started.append(
            procs.start(
                "upstream-sse",
                [
                    sys.executable,
                    "-m",
                    "bench.upstream",
                    "--port",
                    str(sse_port),
                    "--chunk-ms",
                    str(chunk_ms),
                ],
                sse_port,
                workdir,
                procs.LOAD_CORE,
                env={"PYTHONPATH": str(ROOT)},
            )
        )
        json_port = procs.free_port()
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
            conf = nginx_upstream_conf(str(workdir / "nginx-upstream"), json_port)
            cmd = nginx_cmd(workdir, conf, "nginx-upstream")
        else:  # no nginx: the stream server answers non-streamed requests too
            cmd = [sys.executable, "-m", "bench.upstream", "--port", str(json_port)]
        started.append(
            procs.start(
                "upstream-json", cmd, json_port, workdir, procs.LOAD_CORE, {"PYTHONPATH": str(ROOT)}
            )
        )
    except BaseException:
        for p in started:
            p.stop()
        raise
    return Upstreams(json_port, sse_port, started)


def start_sluice(workdir: Path, up: Upstreams, root: Path = ROOT) -> tuple[Proc, Target]:
    """Sluice with bench/configs/sluice.yaml; its stdout (the audit log) goes to a file.
    `root`: the checkout whose `sluice` package runs (bench.experiments.ab_throughput)."""
    port = procs.free_port()
    env = {
        "PYTHONPATH": str(root),
        "BENCH_WORKDIR": str(workdir),
        "BENCH_JSON_BASE": up.json_base,
        "BENCH_SSE_BASE": up.sse_base,
        "BENCH_AUTH_TOKEN": AUTH_TOKEN,
    }
    cmd = [sys.executable, "-m", "sluice", "serve", "--config", str(CONFIGS / "sluice.yaml")]
    proc = procs.start(
        "sluice", [*cmd, "--port", str(port)], port, workdir, procs.GATEWAY_CORE, env, cwd=root
    )
    url = f"http://127.0.0.1:{port}{CHAT}"
    return proc, Target("sluice", url, url, {"Authorization": f"Bearer {AUTH_TOKEN}"})


def start_nginx_hop(workdir: Path, up: Upstreams) -> tuple[Proc, Target]:
    """nginx as a plain reverse proxy in front of the same upstreams."""
    port = procs.free_port()
    conf = nginx_hop_conf(str(workdir / "nginx-hop"), port, up.json_port, up.sse_port)
    proc = procs.start(
        "nginx-hop", nginx_cmd(workdir, conf, "nginx-hop"), port, workdir, procs.GATEWAY_CORE
    )
    base = f"http://127.0.0.1:{port}"
    return proc, Target("nginx hop", base + CHAT, base + "/sse" + CHAT)


def start_litellm(workdir: Path, up: Upstreams) -> tuple[Proc, Target]:
    """LiteLLM's proxy (one worker) with both models pointed at the upstreams."""
    err = install_peers.install_litellm()
    if err:
        raise RuntimeError(err)
    port = procs.free_port()
    master = "sk-litellm-master"
    params = {"model": "openai/gpt-bench", "api_key": UPSTREAM_KEY}
    config = {
        "model_list": [
            {"model_name": "gpt-bench", "litellm_params": {**params, "api_base": up.json_base}},
            {
                "model_name": "gpt-bench-stream",
                "litellm_params": {**params, "api_base": up.sse_base},
            },
        ],
        "general_settings": {"master_key": master},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [str(install_peers.litellm_bin()), "--config", str(path), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--num_workers", "1"]
    env = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "PYTHONPATH": ""}
    env |= {"NO_DOCS": "True", "DISABLE_ADMIN_UI": "True"}
    proc = procs.start("litellm", cmd, port, workdir, procs.GATEWAY_CORE, env, ready_timeout=180)
    url = f"http://127.0.0.1:{port}{CHAT}"
    # LiteLLM keeps importing modules during its first few hundred requests: warm it longer.
    return proc, Target("litellm", url, url, {"Authorization": f"Bearer {master}"}, warm_s=8)


def start_portkey(workdir: Path, up: Upstreams) -> tuple[Proc, Target]:
    """Portkey's Node gateway; the upstream is named per request by x-portkey-custom-host."""
    err = install_peers.install_portkey()
    if err:
        raise RuntimeError(err)
    port = procs.free_port()
    node = shutil.which("node") or "node"
    cmd = [node, str(install_peers.portkey_entry()), f"--port={port}"]
    env = {"NODE_ENV": "production"}
    proc = procs.start("portkey", cmd, port, workdir, procs.GATEWAY_CORE, env, ready_timeout=90)
    url = f"http://127.0.0.1:{port}{CHAT}"
    headers = {
        "Authorization": f"Bearer {UPSTREAM_KEY}",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": up.json_base,
    }
    target = Target("portkey", url, url, headers, warm_s=3)
    target.sse_headers = {"x-portkey-custom-host": up.sse_base}
    return proc, target


def start_bare_proxy(workdir: Path, up: Upstreams) -> tuple[Proc, Target]:
    """bench/bare_proxy.py: the uvicorn + aiohttp floor, without any of Sluice's features."""
    port = procs.free_port()
    cmd = [sys.executable, "-m", "bench.bare_proxy", "--port", str(port)]
    cmd += [
        "--json",
        f"http://127.0.0.1:{up.json_port}",
        "--sse",
        f"http://127.0.0.1:{up.sse_port}",
    ]
    env = {"PYTHONPATH": str(ROOT)}
    proc = procs.start("bare-proxy", cmd, port, workdir, procs.GATEWAY_CORE, env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}{CHAT}"
    return proc, Target("bare proxy", url, url)


STARTERS = {
    "sluice": start_sluice,
    "bare-proxy": start_bare_proxy,
    "nginx-hop": start_nginx_hop,
    "litellm": start_litellm,
    "portkey": start_portkey,
}
PEERS = ("litellm", "portkey")


def environment() -> dict[str, str]:
    """What the report should say about the machine."""
    return {
        "cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "wrk": "yes" if shutil.which("wrk") else "no (Python client fallback)",
        "nginx": "yes" if shutil.which("nginx") or Path("/usr/sbin/nginx").exists() else "no",
    }
