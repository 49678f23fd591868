"""Liveness and readiness probes (/health/live, /health/ready), in process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sluice import config
from sluice.app import App, create_app
from sluice.readiness import StorageProbe


async def _client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def _app(storage_url: str) -> App:
    return create_app(config.from_mapping({"storage": {"url": storage_url}}))


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[App]:
    app = _app(f"sqlite:///{tmp_path}/sluice.db")
    yield app
    await app.gw.upstream.close()


async def test_live_and_ready_answer_200(sqlite_app: App) -> None:
    async for client in _client(sqlite_app):
        live = await client.get("/health/live")
        assert live.status_code == 200
        assert live.json() == {"status": "ok", "pid": os.getpid()}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}


async def test_ready_is_503_while_draining_and_live_stays_200(sqlite_app: App) -> None:
    sqlite_app.gw.drain.begin()
    try:
        async for client in _client(sqlite_app):
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {"status": "draining"}
            assert (await client.get("/health/live")).status_code == 200
    finally:
        sqlite_app.gw.drain.uninstall()


async def test_a_failing_ready_check_makes_ready_503(sqlite_app: App) -> None:
    async def redis_down() -> str | None:
        return "redis unreachable"

    sqlite_app.gw.ready_checks.append(redis_down)
    async for client in _client(sqlite_app):
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "reasons": ["redis unreachable"]}


async def test_unreachable_sqlite_storage_is_not_ready(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path}/missing-dir/sluice.db")
    async for client in _client(app):
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert "cannot create" in ready.json()["reasons"][0]


async def test_corrupt_sqlite_file_is_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "sluice.db"
    db.write_bytes(b"this is not a database" * 100)
    probe = StorageProbe(f"sqlite:///{db}")
    assert "DatabaseError" in (await probe() or "")


async def test_unreachable_postgres_is_not_ready() -> None:
    probe = StorageProbe("postgresql://sluice:pw@127.0.0.1:1/sluice", timeout_s=1)
    reason = await probe()
    assert reason is not None and reason.startswith("storage unreachable")


async def test_reachable_postgres_is_ready(postgres_url: str) -> None:
    assert await StorageProbe(postgres_url)() is None


async def test_the_storage_probe_is_cached(tmp_path: Path) -> None:
    probe = StorageProbe(f"sqlite:///{tmp_path}/sluice.db", ttl_s=60)
    calls = 0
    real = probe._probe

    async def counting() -> str | None:
        nonlocal calls
        calls += 1
        return await real()

    probe._probe = counting  # type: ignore[method-assign]
    for _ in range(5):
        assert await probe() is None
    assert calls == 1
