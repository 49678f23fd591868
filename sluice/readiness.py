"""Readiness: the checks behind GET /health/ready (Kubernetes readiness probes).

A check is an async callable returning None when ready or a short reason when not; other
parts of the gateway append theirs to `Gateway.ready_checks`. Checks must be cheap: the
storage probe below caches its answer for `ttl_s`, so probes never cost a query each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

ReadyCheck = Callable[[], Awaitable[str | None]]


class StorageProbe:
    """Can team keys be read? One tiny query on the store's own pool, cached for `ttl_s`:
    it fails while the database is unreachable and while it is not migrated."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.engine = engine
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
                    await asyncio.wait_for(self._probe(), self.timeout_s)
                    self._result = None
                except TimeoutError:
                    self._result = "storage did not answer in time"
                except Exception as exc:
                    self._result = f"storage unreachable or not migrated ({type(exc).__name__})"
                self._at = time.monotonic()
        return self._result

    async def _probe(self) -> None:
        from sqlalchemy import select

        from sluice.db import api_keys

        async with self.engine.connect() as conn:
            await conn.execute(select(api_keys.c.id).limit(1))
