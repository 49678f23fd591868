"""Helpers for the traffic-control tests: parallel requests, fixed-window timing, Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import free_port


def chat_body(model: str = "gpt-4o-mini", text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _burst(
    urls: list[str], body: dict[str, Any], headers: dict[str, str]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return list(
            await asyncio.gather(*(client.post(u, json=body, headers=headers) for u in urls))
        )


def burst(
    url: str | list[str], n: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """`n` requests sent at once (round-robin over several gateways when given a list)."""
    bases = [url] if isinstance(url, str) else url
    urls = [bases[i % len(bases)] + "/v1/chat/completions" for i in range(n)]
    return asyncio.run(_burst(urls, body, headers or {}))


def fresh_window(margin_s: float = 8.0) -> None:
    """Wait until a one-minute window has at least `margin_s` left, so a burst stays in one."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.2)


def prefix() -> str:
    """A unique Redis key prefix per test (the shared Redis is never flushed)."""
    return f"sluicetest:{uuid.uuid4().hex[:10]}:"


def drop_prefix(url: str, pfx: str) -> None:
    """Delete this test's keys from the shared Redis."""
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=pfx + "*", count=500))
    if keys:
        r.delete(*keys)
    r.close()


class RedisServer:
    """A throwaway redis-server on a free port, started and stopped (by PID) by the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out
