"""Processes of `make soak`: PostgreSQL database, Redis, the fake upstream, gateways, nginx.

Everything listens on 127.0.0.1, is started by this harness and stopped by its PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("SOAK_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_pid(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Signal one process we started, wait, SIGKILL it if it lingers; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


def rss_mb(pid: int) -> float | None:
    """VmRSS of one process in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- PostgreSQL ------------------------------------------------------------------------------


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(name: str) -> str:
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    return f"{PG_ADMIN}/{name}"


def drop_database(name: str) -> None:
    asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def fetch_rows(url: str, prefix: str) -> list[dict[str, Any]]:
    """Every usage row whose request_id starts with `prefix`."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT request_id, ts, status, error_code, model, team, key_id, cost_usd,"
            " cache_hit, stream, prompt_tokens, completion_tokens FROM usage"
            " WHERE request_id LIKE $1",
            prefix + "%",
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


# -- Redis -----------------------------------------------------------------------------------


@dataclass
class Redis:
    """A throwaway redis-server (no persistence), restartable on its port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if not wait_port(self.port, 10):
            raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)


# -- the fake upstream -----------------------------------------------------------------------


def fake_main(port: int, interval: float) -> None:
    """`python -m bench.soak --fake PORT`: tests/fakes/openai_fake.py, long -slowstream."""
    from aiohttp import web

    from tests.fakes.openai_fake import FakeOpenAI

    fake = FakeOpenAI()
    fake.stream_interval = interval

    async def forget(app: web.Application) -> None:  # the fake records every request: cap it
        async def trim() -> None:
            while True:
                await asyncio.sleep(5)
                fake.requests.clear()

        app["trim"] = asyncio.ensure_future(trim())

    app = fake.app()
    app.on_startup.append(forget)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def start_fake(workdir: Path, interval: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--fake", str(port), "--fake-interval", str(interval)],
        cwd=ROOT, env=env, stdout=(workdir / "fake.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    if not wait_port(port, 15):
        raise RuntimeError("fake upstream did not start")
    return proc, port


# -- gateways --------------------------------------------------------------------------------


def gateway_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_API_TOKEN"))
        and k not in ("AUTH_TOKEN", "SLUICE_CONFIG", "SLUICE_DATABASE_URL", "SLUICE_REDIS_URL")
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def write_config(path: Path, settings: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


def db_upgrade(config: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "sluice", "db", "upgrade", "--config", str(config)],
        cwd=ROOT, env=gateway_env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@dataclass
class Incarnation:
    """One process of one gateway instance (a restart makes a new one)."""

    name: str  # gw1, gw2#2, ...
    proc: subprocess.Popen[bytes]
    stdout: Path
    started: float  # monotonic
    stopped: float | None = None
    exit_status: int | None = None
    rss: list[tuple[float, float]] = field(default_factory=list)  # (run second, MB)


@dataclass
class Gateway:
    """One `sluice serve` instance on a fixed port; restartable."""

    index: int
    config: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    lives: list[Incarnation] = field(default_factory=list)

    @property
    def current(self) -> Incarnation:
        return self.lives[-1]

    def start(self) -> Incarnation:
        n = len(self.lives) + 1
        name = f"gw{self.index}" + (f"#{n}" if n > 1 else "")
        out = self.workdir / f"{name.replace('#', '-')}.out"
        err = self.workdir / f"{name.replace('#', '-')}.err"
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "serve", "--config", str(self.config),
             "--port", str(self.port)],
            cwd=self.workdir, env=gateway_env(), stdout=out.open("wb"), stderr=err.open("wb"),
        )  # fmt: skip
        life = Incarnation(name, proc, out, time.monotonic())
        self.lives.append(life)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}: {err.read_text()[-2000:]}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/health/ready", timeout=1)
                if r.status_code == 200:
                    return life
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not become ready: {err.read_text()[-2000:]}")

    def stop(self, timeout: float) -> int:
        life = self.current
        if life.exit_status is None:
            life.exit_status = stop_pid(life.proc, timeout=timeout)
            life.stopped = time.monotonic()
        return life.exit_status


# -- nginx -----------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    upstream sluice {{
{servers}
        keepalive 64;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://sluice;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout 660s;
            proxy_send_timeout 660s;
            proxy_connect_timeout 5s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    """nginx in front of `ports` with deploy/nginx.conf's proxy settings, in the foreground."""
    port = free_port()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;" for p in ports
    )
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, servers=servers, port=port))
    os.chmod(workdir, 0o755)  # noqa: S103 (nginx's workers read their temp dirs)
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        stdout=(workdir / "nginx.out").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    if not wait_port(port, 10):
        raise RuntimeError(f"nginx did not start: {(workdir / 'nginx.out').read_text()[-2000:]}")
    return proc, port
