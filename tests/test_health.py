"""Liveness and readiness probes (/health/live, /health/ready), in process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sluice import config, db
from sluice.app import App, create_app
from sluice.readiness import StorageProbe
from sluice.store import Store


async def _client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def _app(storage_url: str) -> App:
    return create_app(config.from_mapping({"storage": {"url": storage_url}}))


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[App]:
    url = f"sqlite:///{tmp_path}/sluice.db"
    await asyncio.to_thread(db.upgrade, url)
    app = _app(url)
    yield app
    await app.gw.shutdown()


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
    try:
        async for client in _client(app):
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["reasons"][0].startswith("storage unreachable")
    finally:
        await app.gw.shutdown()


async def test_unmigrated_storage_is_not_ready(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path}/empty.db")
    try:
        assert "not migrated" in (await app.gw.ready_checks[0]() or "")
    finally:
        await app.gw.shutdown()


async def test_corrupt_sqlite_file_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "sluice.db"
    path.write_bytes(b"this is not a database" * 100)
    store = Store(f"sqlite:///{path}")
    try:
        assert "DatabaseError" in (await StorageProbe(store.engine)() or "")
    finally:
        await store.close()


async def test_unreachable_postgres_is_not_ready() -> None:
    store = Store("postgresql://sluice:pw@127.0.0.1:1/sluice")
    try:
        reason = await StorageProbe(store.engine, timeout_s=2)()
        assert reason is not None and reason.startswith("storage")
    finally:
        await store.close()


async def test_migrated_postgres_is_ready(pg_database: str) -> None:
    await asyncio.to_thread(db.upgrade, pg_database)
    store = Store(pg_database)
    try:
        assert await StorageProbe(store.engine)() is None
    finally:
        await store.close()


async def test_the_storage_probe_is_cached(sqlite_app: App) -> None:
    probe = sqlite_app.gw.ready_checks[0]
    assert isinstance(probe, StorageProbe)
    probe.ttl_s = 60
    calls = 0
    real = probe._probe

    async def counting() -> None:
        nonlocal calls
        calls += 1
        await real()

    probe._probe = counting  # type: ignore[method-assign]
    for _ in range(5):
        assert await probe() is None
    assert calls == 1
