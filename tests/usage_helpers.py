"""Helpers for the usage tests: read the real usage table, a TCP proxy that can cut storage."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from sluice import db


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A migrated, empty storage: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    url: str = request.getfixturevalue("pg_database")
    db.upgrade(url)
    return url


def read_rows(url: str) -> list[dict[str, Any]]:
    """Every row of the usage table at `url`, as dicts."""

    async def run() -> list[dict[str, Any]]:
        engine = create_async_engine(db.async_url(url))
        try:
            async with engine.connect() as conn:
                res = await conn.execute(select(db.usage).order_by(db.usage.c.id))
                return [dict(r) for r in res.mappings().all()]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def insert_rows(url: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows straight into the usage table (to seed old data)."""

    async def run() -> None:
        engine = create_async_engine(db.async_url(url))
        try:
            async with engine.begin() as conn:
                await conn.execute(db.usage.insert(), rows)
        finally:
            await engine.dispose()

    asyncio.run(run())


def wait_rows(url: str, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The rows once at least `n` are in storage (the writer batches in the background)."""
    end = time.monotonic() + timeout
    while True:
        try:
            rows = read_rows(url)
        except Exception:
            rows = []
        if len(rows) >= n or time.monotonic() > end:
            return rows
        time.sleep(0.1)


def sqlite_bytes(url: str) -> bytes:
    """Every byte SQLite keeps for `url`: the file and its write-ahead log, if any."""
    from pathlib import Path

    path = Path(url.removeprefix("sqlite:///"))
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class CuttableProxy:
    """A TCP proxy on a fixed local port to `target`; `cut()` closes the listener and every
    connection (storage "down"), `restore()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self._writers.update((w, uw))
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))
        self._writers.difference_update((w, uw))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> CuttableProxy:
        self._call(self._start())
        return self

    def cut(self) -> None:
        self._call(self._stop())

    async def _settle(self) -> None:
        """Let the connection handlers see their aborted sockets and end."""
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=2)

    def close(self) -> None:
        self.cut()
        self._call(self._settle())  # no "Task was destroyed but it is pending" at exit
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
