"""Readiness: the checks behind GET /health/ready (Kubernetes readiness probes).

A check is an async callable returning None when ready or a short reason when not; other
parts of the gateway append theirs to `Gateway.ready_checks`. Checks must be cheap: the
storage probe below caches its answer for `ttl_s`, so probes never cost a query each.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ReadyCheck = Callable[[], Awaitable[str | None]]


class StorageProbe:
    """Is the configured storage (SQLite file or PostgreSQL server) reachable? Cached."""

    def __init__(self, url: str, ttl_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._at = -1e9
        self._result: str | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> str | None:
        """None when storage answered within the last `ttl_s`, else why not."""
        if time.monotonic() - self._at < self.ttl_s:
            return self._result
        async with self._lock:  # concurrent probes share one query
            if time.monotonic() - self._at >= self.ttl_s:
                try:
                    self._result = await asyncio.wait_for(self._probe(), self.timeout_s)
                except TimeoutError:
                    self._result = "storage did not answer in time"
                except Exception as exc:
                    self._result = f"storage unreachable ({type(exc).__name__})"
                self._at = time.monotonic()
        return self._result

    async def _probe(self) -> str | None:
        if self.url.startswith("sqlite:///"):
            return await asyncio.to_thread(_sqlite_probe, self.url.removeprefix("sqlite:///"))
        if self.url.startswith(("postgresql://", "postgres://")):
            import asyncpg  # lazy: only PostgreSQL deployments pay for it

            conn = await asyncpg.connect(self.url, timeout=self.timeout_s)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()
            return None
        return None  # a storage this probe doesn't know: nothing to say


def _sqlite_probe(path: str) -> str | None:
    """Open the file read-write and read its schema page; a missing file is fine if it can
    be created."""
    file = Path(path)
    if not file.exists():
        parent = file.parent if str(file.parent) else Path(".")
        return None if os.access(parent, os.W_OK) else f"cannot create {path}"
    conn = sqlite3.connect(f"file:{file}?mode=rw", uri=True, timeout=1.0)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()
    return None
