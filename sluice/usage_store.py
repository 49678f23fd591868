"""Writes usage records off the hot path: a bounded in-memory queue, batched inserts (SQLite
through the standard driver in a worker thread, PostgreSQL through SQLAlchemy's async engine),
a local spool while storage is down, retention.

The request path only appends to a deque (`put`). One background task takes batches, writes
the audit lines, feeds metrics and traces, and inserts the rows; if the insert fails the
batch goes to the spool (fsync'd) and storage is retried with backoff; once it answers again
the spool is drained. `close()` (lifespan shutdown, i.e. SIGTERM) flushes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice import db
from sluice.spool import Spool
from sluice.usage import UsageRecord

log = logging.getLogger("sluice.usage")

ROW_FIELDS = tuple(f.name for f in fields(UsageRecord) if f.name in db.usage.c)
_row_values = operator.attrgetter(*ROW_FIELDS)
# Strings a client can influence (a model name, a request id, a session...): these are
# scrubbed; the rest come from configuration or fixed codes.
_CLIENT_STRINGS = (
    *("request_id", "path", "model", "upstream_model"),
    *("team", "key_id", "user", "session"),
)
_STORAGE_TIMEOUT_S = 10.0  # one insert may not hold the writer longer than this
_RETRY_MAX_S = 5.0
_RETENTION_EVERY_S = 3600.0
_CHUNK = 1000  # rows per INSERT when draining the spool
_UNOBSERVED = "_unobserved"  # a spilled row not yet audited or counted in metrics


def engine_for(url: str) -> AsyncEngine:
    """An engine of its own for `storage.url` (the CLI; a gateway shares `Store`'s)."""
    return db.engine_for(url)


def to_row(rec: UsageRecord, clean: Callable[[str], str]) -> dict[str, Any]:
    """A record as a storage row with every string scrubbed."""
    row = dict(zip(ROW_FIELDS, _row_values(rec), strict=True))
    for k in _CLIENT_STRINGS:
        v = row[k]
        if v:
            row[k] = clean(v)
    return row


def cached_cleaner(clean: Callable[[str], str], size: int = 4096) -> Callable[[str], str]:
    """`clean` remembering its answers: a batch repeats the same paths, models, teams and key
    ids, and each scrub is a regex pass. Bounded: emptied when full."""
    seen: dict[str, str] = {}

    def cached(text: str) -> str:
        out = seen.get(text)
        if out is None:
            if len(seen) >= size:
                seen.clear()
            out = seen[text] = clean(text)
        return out

    return cached


class UsageWriter:
    """The queue and the background task that empties it into storage."""

    def __init__(
        self,
        url: str,
        spool: Spool,
        on_batch: Callable[[list[UsageRecord] | None, list[dict[str, Any]]], bytes],
        clean: Callable[[str], str],
        *,
        max_queue: int = 100_000,
        batch_max: int = 1000,
        linger_s: float = 0.02,
        retention_days: float = 90.0,
    ) -> None:
        self.url = url
        self.spool = spool
        # Metrics and traces for a batch; returns the audit lines to write (b"" for none).
        self.on_batch = on_batch
        self.audit_out: Callable[[bytes], None] | None = None
        self.clean = cached_cleaner(clean)
        self.max_queue = max_queue
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.retention_days = retention_days
        self._buf: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()  # set by the first record of a batch
        self._hurry = asyncio.Event()  # a full batch or a shutdown: stop lingering
        self._task: asyncio.Task[None] | None = None
        self._engine: AsyncEngine | None = None
        # SQLite rows go in through the standard driver in a worker thread (see
        # db.SqliteAppender); the engine serves PostgreSQL, retention and the spool's checks.
        self._sqlite = (
            db.SqliteAppender(url, db.usage, ROW_FIELDS) if url.startswith("sqlite:///") else None
        )
        self._owns_engine = False  # True when start() opened it (no shared engine given)
        self._closing = False
        self._stopped = False  # after close(): a late record is spooled, never left in memory
        self._down_until = 0.0  # monotonic; storage is not retried before this
        self._backoff = 0.5
        self._next_retention = 0.0
        self._next_orphan_check = 0.0  # other workers' leftovers are looked for now and then
        self._spool_dirty = True  # something may be in the spool: check at start
        self.queued = self.written = self.spooled = self.dropped = 0
        self.on_count: Callable[[str, int], None] = lambda kind, n: None

    # --- hot path -------------------------------------------------------------------------
    def put(self, rec: UsageRecord) -> None:
        """Queue one record (no I/O unless the queue is full, then it spills to the spool)."""
        self.queued += 1
        if len(self._buf) >= self.max_queue or self._stopped:
            self._spill(rec)
            return
        self._buf.append(rec)
        if not self._wake.is_set():
            self._wake.set()
        elif len(self._buf) >= self.batch_max and not self._hurry.is_set():
            self._hurry.set()

    def _spill(self, rec: UsageRecord) -> None:
        """The queue is full (or the writer has stopped): straight to disk, not away."""
        try:
            self.spool.append([{**to_row(rec, self.clean), _UNOBSERVED: True}])
            self._spool_dirty = True
            self._count("spooled", 1)
        except Exception as exc:
            self._count("dropped", 1)
            log.error("usage record lost: queue full and spool unwritable (%s)", exc)

    def _count(self, kind: str, n: int) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        self.on_count(kind, n)

    # --- lifecycle ------------------------------------------------------------------------
    def share_engine(self, engine: AsyncEngine) -> None:
        """Write through `engine` (the gateway's one engine for this URL) instead of opening
        one; its owner disposes of it, after `close()`."""
        self._engine = engine

    async def start(self) -> None:
        """Open the engine (unless one is shared) and start the background task."""
        if self._engine is None:
            self._engine = engine_for(self.url)
            self._owns_engine = True
        self._task = asyncio.create_task(self._run(), name="sluice-usage-writer")

    async def close(self) -> None:
        """Flush every queued record (to storage, else the spool) and stop."""
        self._closing = True
        self._wake.set()
        self._hurry.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._buf:  # the task ended early (it should not): flush here
            await self._flush()
        self._stopped = True
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine | None:
        """The storage engine (for usage queries), once started."""
        return self._engine

    @property
    def depth(self) -> int:
        """Records waiting in memory."""
        return len(self._buf)

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            await self._maintain()  # leftovers from a previous run, retention
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                # Let a burst gather into one batch; a full batch or a shutdown ends the wait.
                await asyncio.wait_for(self._hurry.wait(), timeout=self.linger_s)
            self._wake.clear()
            self._hurry.clear()
            try:
                # What gathered while lingering, in batches; records that arrive during
                # these inserts wait for the next linger. Draining until empty here made a
                # chain of one- and two-row transactions (one fsync each) whenever an
                # insert took longer than the gap between requests: at c=1, ~1 commit a
                # request instead of one per linger.
                left = len(self._buf)
                while left > 0 and self._buf:
                    left -= await self._flush()
                await self._maintain()
            except Exception:  # the writer must outlive any bug in one batch
                log.exception("usage writer error")
        while self._buf:
            await self._flush()
        with contextlib.suppress(Exception):
            await self._drain_spool()

    # --- batches --------------------------------------------------------------------------
    async def _flush(self) -> int:
        """Take one batch: audit/metrics/traces, then storage or the spool; how many."""
        n = min(len(self._buf), self.batch_max)
        batch = [self._buf.popleft() for _ in range(n)]
        # Rows, metrics, spans and audit lines are built in a thread: a big batch would
        # otherwise hold the event loop for milliseconds, and a slow stdout could stall it.
        rows = await asyncio.to_thread(self._prepare, batch)
        if not await self._insert(rows):
            await self._to_spool(rows)
        return n

    def _prepare(self, batch: list[UsageRecord]) -> list[dict[str, Any]]:
        rows = [to_row(r, self.clean) for r in batch]
        self._observe(batch, rows)
        return rows

    def _observe(self, batch: list[UsageRecord] | None, rows: list[dict[str, Any]]) -> None:
        """Audit lines, metrics and spans for rows (in a worker thread)."""
        try:
            audit = self.on_batch(batch, rows)
            if audit and self.audit_out is not None:
                self.audit_out(audit)
        except Exception:
            log.exception("usage observers failed")

    def _observe_spilled(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Rows that spilled past a full queue were never audited or counted: do it now,
        and rewrite the file without their mark so a retry never counts them twice."""
        fresh = [r for r in rows if r.pop(_UNOBSERVED, False)]
        if fresh:
            self._observe(None, fresh)
            _rewrite(path, rows)

    async def _insert(self, rows: list[dict[str, Any]]) -> bool:
        """Insert rows in one transaction; False (and storage marked down) on failure."""
        if not rows:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            if self._sqlite is not None:
                # Not cancellable in its thread; the driver gives up waiting for a lock.
                await asyncio.to_thread(self._sqlite.insert, rows)
            elif self._engine is None:
                return False
            else:
                async with asyncio.timeout(_STORAGE_TIMEOUT_S):
                    async with self._engine.begin() as conn:
                        await conn.execute(db.usage.insert(), rows)
        except Exception as exc:  # any driver error means "not stored": spool, never lose
            self._mark_down(exc)
            return False
        if self._backoff > 0.5:
            log.warning("usage storage is reachable again")
        self._backoff = 0.5
        self._count("written", len(rows))
        return True

    def _mark_down(self, exc: BaseException) -> None:
        if self._backoff <= 0.5:
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            log.warning(
                "usage storage unavailable (%s: %s); spooling to disk", type(exc).__name__, detail
            )
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _RETRY_MAX_S)

    async def _to_spool(self, rows: list[dict[str, Any]]) -> None:
        try:
            await asyncio.to_thread(self.spool.append, rows)
            self._spool_dirty = True
            self._count("spooled", len(rows))
        except Exception as exc:  # disk full, permissions: counted, never silent
            self._count("dropped", len(rows))
            log.error("%d usage records lost: spool unwritable (%s)", len(rows), exc)

    # --- background upkeep ----------------------------------------------------------------
    async def _maintain(self) -> None:
        """Drain the spool when storage is back; enforce retention now and then."""
        if time.monotonic() >= self._down_until:
            await self._drain_spool()
        if self.retention_days > 0 and time.monotonic() >= self._next_retention:
            await self._retention()

    async def _drain_spool(self) -> None:
        """Move spooled rows into storage; a file is removed only once its rows are in."""
        now = time.monotonic()
        if not self._spool_dirty and now < self._next_orphan_check:
            return
        self._next_orphan_check = now + 30
        self._spool_dirty = False
        if not await asyncio.to_thread(self.spool.pending):
            return
        for path in await asyncio.to_thread(self.spool.claim):
            rows = await asyncio.to_thread(self.spool.read, path)
            await asyncio.to_thread(self._observe_spilled, path, rows)
            for i in range(0, len(rows), _CHUNK):
                if not await self._insert(rows[i : i + _CHUNK]):
                    # Keep what is not in yet; the claimed file stays ours for the next try.
                    if i:
                        await asyncio.to_thread(_rewrite, path, rows[i:])
                    self._spool_dirty = True
                    return
            await asyncio.to_thread(self.spool.done, path)
            log.info("usage spool drained: %d rows from %s", len(rows), path.name)

    async def _retention(self) -> None:
        """Delete rows older than `retention_days`."""
        self._next_retention = time.monotonic() + _RETENTION_EVERY_S
        if self._engine is None:
            return
        cutoff = time.time() - self.retention_days * 86400
        try:
            async with asyncio.timeout(_STORAGE_TIMEOUT_S * 3):
                async with self._engine.begin() as conn:
                    res = await conn.execute(delete(db.usage).where(db.usage.c.ts < cutoff))
        except Exception as exc:
            self._next_retention = time.monotonic() + 60  # try again soon
            log.warning("usage retention skipped: %s", type(exc).__name__)
            return
        if res.rowcount:
            log.info(
                "usage retention: deleted %d rows (%g days)", res.rowcount, self.retention_days
            )


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace a claimed file with the rows still to insert (atomically, via a temp file)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
