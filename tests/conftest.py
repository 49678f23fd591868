"""Shared test harness: real servers on loopback ports.

- `fake_openai`: the fake OpenAI-compatible upstream (tests/fakes/openai_fake.py).
- `start_gateway(config)`: writes the YAML, starts `python -m sluice serve` as a subprocess on
  a free port, waits for /health, and stops it (by PID) at teardown. Its stdout (the audit
  log) is captured in `gw.stdout_path`.
- `postgres_url` / `redis_url`: skip with a reason when absent, but fail under CI=true.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes.openai_fake import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    """A running `sluice serve` subprocess."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    config_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def audit(self) -> list[dict[str, Any]]:
        import orjson

        out = []
        for line in self.stdout().splitlines():
            if line.startswith("{"):
                obj = orjson.loads(line)
                if obj.get("type") == "audit":
                    out.append(obj)
        return out

    def wait_audit(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The audit lines once at least `n` are written (records follow the response)."""
        end = time.monotonic() + timeout
        while True:
            lines = self.audit()
            if len(lines) >= n or time.monotonic() > end:
                return lines
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def launch_gateway(
    tmp: Path,
    config: dict[str, Any] | None,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
) -> Gateway:
    """Start a gateway subprocess and wait until /health answers."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp / f"sluice-{port}.yaml"
    config = dict(config or {})
    config.setdefault("storage", {"url": f"sqlite:///{tmp}/sluice-{port}.db"})
    cfg_path.write_text(yaml.safe_dump(config))
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_API_TOKEN")) and k not in ("AUTH_TOKEN", "SLUICE_CONFIG")
    }
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    out_path, err_path = tmp / f"gw-{port}.out", tmp / f"gw-{port}.err"
    cmd = [
        sys.executable,
        "-m",
        "sluice",
        "serve",
        "--config",
        str(cfg_path),
        "--port",
        str(port),
        *(args or []),
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp, env=full_env, stdout=out_path.open("wb"), stderr=err_path.open("wb")
    )
    gw = Gateway(f"http://127.0.0.1:{port}", port, proc, out_path, err_path, cfg_path, full_env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited {proc.returncode}: {gw.stderr()[-3000:]}")
        try:
            if httpx.get(gw.url + "/health", timeout=0.5).status_code == 200:
                return gw
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    gw.stop(signal.SIGKILL)
    raise RuntimeError(f"gateway did not become healthy: {gw.stderr()[-3000:]}")


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        port: int | None = None,
    ) -> Gateway:
        gw = launch_gateway(tmp_path, config, env, args, port)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def openai_config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    """A config with one `openai` provider pointed at the fake, routing gpt-* there."""
    config: dict[str, Any] = {
        "providers": {
            "openai": {
                "kind": "openai",
                "api_key": "sk-test-upstream-key-0001",
                "base_url": fake.url,
            }
        },
        "models": [{"match": "gpt-*", "provider": "openai"}],
    }
    config.update(extra)
    return config


def _service_or_skip(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError:
        reason = f"{what} is not running at {host}:{port}"
        if IN_CI:
            pytest.fail(f"{reason} (required under CI=true)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL for the local server (database `test`); skip/fail when absent."""
    _service_or_skip("127.0.0.1", 5432, "PostgreSQL")
    return os.environ.get("SLUICE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis URL; skip/fail when absent."""
    _service_or_skip("127.0.0.1", 6379, "Redis")
    return os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards), so parallel
    runs never share rows."""
    import asyncio
    import uuid

    import asyncpg

    name = f"sluice_t_{uuid.uuid4().hex[:12]}"
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
