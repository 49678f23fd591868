"""Shared counters and a small blob store behind one protocol: in-process or Redis.

Limits and budgets speak only `reserve` (all-or-nothing: every counter stays within its cap
or none moves) and `adjust` (settle a reservation to the real amount). The in-process backend
is exact because an event loop runs one coroutine at a time and `reserve` never awaits; the
Redis backend (sluice/state_redis.py) does the same in one Lua script per call, so many
instances share one set of counters.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Counter(NamedTuple):
    """One counter a request reserves on.

    `cap` < 0 means "count, never refuse". `ttl_ms` > 0 sets the expiry once (a fixed
    window or a budget period); < 0 refreshes it to -ttl_ms on every reservation (a gauge
    such as in-flight requests, which must not expire while busy); 0 never expires.
    """

    key: str
    amount: int
    cap: int
    ttl_ms: int


@dataclass(slots=True)
class Admission:
    """The answer to `reserve`: admitted or not, and each counter's value and ms to expiry.

    When refused, `failed` is the index of the first counter that would pass its cap and
    `values`/`ttls` hold only that counter's current state. `local` says the reservation was
    made on per-instance counters (Redis down), so its settlement must go there too.
    """

    ok: bool
    failed: int
    values: list[int]
    ttls: list[int]
    local: bool = False


class State(Protocol):
    """Counters and blobs shared by every request of a gateway (and, with Redis, instances)."""

    async def reserve(self, counters: Sequence[Counter]) -> Admission:
        """Add each counter's amount unless one would pass its cap; atomic."""
        ...

    def adjust(self, deltas: Sequence[tuple[str, int]], local: bool = False) -> None:
        """Add deltas to existing counters (never below 0), without blocking the caller."""
        ...

    async def peek(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        """(value, ms to expiry) of each key, 0 and -1 when absent."""
        ...

    async def get_blob(self, key: str) -> bytes | None:
        """A stored blob, None when absent, expired or unreachable."""
        ...

    def get_blob_soon(self, key: str) -> asyncio.Future[bytes | None]:
        """`get_blob` started now, awaited later: the lookup travels with the next call."""
        ...

    def set_blob(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store a blob for `ttl_s` seconds (best effort, without waiting; a later
        `get_blob` of this instance sees it)."""
        ...

    async def start(self) -> None:
        """Begin background work (heartbeats, reconnects)."""
        ...

    async def close(self) -> None:
        """Stop background work and close connections."""
        ...


class MemoryState:
    """Per-process counters (exact within one event loop) and an LRU of blobs."""

    def __init__(self, max_blobs: int = 10_000) -> None:
        self._counters: dict[str, list[float]] = {}  # key -> [value, expires_at or 0]
        self._blobs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._max_blobs = max_blobs
        self._next_sweep = time.monotonic() + 60

    def _value(self, key: str, now: float) -> list[float] | None:
        slot = self._counters.get(key)
        if slot is not None and slot[1] and slot[1] <= now:
            del self._counters[key]
            return None
        return slot

    def reserve_now(
        self,
        counters: Sequence[Counter],
        divisor: int = 1,
        floors: Mapping[str, tuple[int, float]] | None = None,
    ) -> Admission:
        """Synchronous `reserve`; caps are divided by `divisor` (Redis-down fallback), and a
        counter first met here starts at its share of `floors` (what the shared counter had
        reached: value, monotonic expiry), so an outage never re-grants what was spent."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        table = self._counters
        slots = []
        for i, (key, amount, cap, _) in enumerate(counters):
            slot = table.get(key)
            if slot is not None and slot[1] and slot[1] <= now:
                del table[key]
                slot = None
            if slot is None and floors and key in floors and floors[key][1] > now:
                slot = table[key] = [floors[key][0] // divisor, floors[key][1]]
            if cap >= 0:
                if divisor > 1:
                    cap = max(1, cap // divisor)
                if (slot[0] if slot else 0) + amount > cap:
                    cur = int(slot[0]) if slot else 0
                    return Admission(False, i, [cur], [_ttl_left(slot, now)], divisor > 1)
            slots.append(slot)
        values, ttls = [], []
        for (key, amount, _, ttl_ms), slot in zip(counters, slots, strict=True):
            if slot is None:
                slot = table.setdefault(key, [0, 0.0])
            slot[0] += amount
            if ttl_ms < 0 or (ttl_ms > 0 and not slot[1]):
                slot[1] = now + abs(ttl_ms) / 1000
            values.append(int(slot[0]))
            ttls.append(int((slot[1] - now) * 1000) if slot[1] else -1)
        return Admission(True, -1, values, ttls, divisor > 1)

    async def reserve(self, counters: Sequence[Counter]) -> Admission:
        """See `State.reserve`."""
        return self.reserve_now(counters)

    def live_slot(self, key: str, ttl_ms: int) -> list[float]:
        """Counter `key`'s slot, [value, monotonic expiry or 0], created at 0 (expiring per
        `ttl_ms`, as in `Counter`) when absent or expired.

        A caller may keep the slot and count on it directly while it is unexpired: a slot
        stays in the table until it expires, and an expired slot never comes back (its
        counter gets a new one), so an unexpired slot is always the counter's. Counting on
        held slots skips `reserve_now`, so the sweep of expired counters runs here too."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        slot = self._value(key, now)
        if slot is None:
            slot = self._counters[key] = [0, 0.0]
        if ttl_ms and not slot[1]:
            slot[1] = now + abs(ttl_ms) / 1000
        return slot

    def adjust(self, deltas: Sequence[tuple[str, int]], local: bool = False) -> None:
        """See `State.adjust`."""
        now = time.monotonic()
        for key, delta in deltas:
            slot = self._value(key, now)
            if slot is not None:
                slot[0] = max(0, slot[0] + delta)

    async def peek(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        """See `State.peek`."""
        now = time.monotonic()
        out = []
        for key in keys:
            slot = self._value(key, now)
            out.append((int(slot[0]) if slot else 0, _ttl_left(slot, now)))
        return out

    async def get_blob(self, key: str) -> bytes | None:
        """See `State.get_blob`."""
        return self.get_blob_now(key)

    def get_blob_now(self, key: str) -> bytes | None:
        """`get_blob` without a coroutine (this backend never waits)."""
        hit = self._blobs.get(key)
        if hit is None:
            return None
        if hit[1] <= time.monotonic():
            del self._blobs[key]
            return None
        self._blobs.move_to_end(key)
        return hit[0]

    def get_blob_soon(self, key: str) -> asyncio.Future[bytes | None]:
        """See `State.get_blob_soon` (here the answer is already known)."""
        blob: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        blob.set_result(self.get_blob_now(key))
        return blob

    def set_blob(self, key: str, value: bytes, ttl_s: float) -> None:
        """See `State.set_blob`; the least recently used blob goes when full."""
        self._blobs[key] = (value, time.monotonic() + ttl_s)
        self._blobs.move_to_end(key)
        while len(self._blobs) > self._max_blobs:
            self._blobs.popitem(last=False)

    def _sweep(self, now: float) -> None:
        # Windowed keys change every minute; drop the expired ones so memory stays flat.
        self._next_sweep = now + 60
        dead = [k for k, (_, exp) in self._counters.items() if exp and exp <= now]
        for k in dead:
            del self._counters[k]

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""


def _ttl_left(slot: list[float] | None, now: float) -> int:
    if slot is None or not slot[1]:
        return -1
    return max(0, int((slot[1] - now) * 1000))


def build(redis_url: str | None, prefix: str, instances: int | None, max_blobs: int) -> State:
    """The configured backend: Redis when a URL is set, else in-process."""
    if not redis_url:
        return MemoryState(max_blobs)
    from sluice.state_redis import RedisState

    return RedisState(redis_url, prefix, instances, MemoryState(max_blobs))
