"""Team keys on the hot path: verified keys cached in-process, storage touched only on a miss.

- Hit: a dict lookup by SHA-256; entries older than `REVALIDATE_S` are re-read in the
  background (stale-while-revalidate), and a failed re-read keeps the entry, so a key
  verified recently keeps working while storage is down (SPEC §6).
- Miss: a malformed key never reaches storage; a well-formed one does one indexed lookup,
  with concurrent misses for the same hash sharing it and at most `MISS_CONCURRENCY`
  lookups in flight. Unknown and revoked hashes are remembered for `NEGATIVE_TTL_S` in a
  bounded map (`NEGATIVE_MAX`), so repeating a bad key costs no lookup.
- Storage down on a miss: 503 SERVICE_UNAVAILABLE, never 200 and never 401.
- Revocation and rotation evict at once here and, with Redis, are published on a channel
  every instance sharing the storage listens to (within a second); without Redis another
  instance notices at its next background re-read (≤ `REVALIDATE_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from sluice.errors import GatewayError
from sluice.store import KEY_SHAPE, KeyRecord, Store

log = logging.getLogger("sluice.auth.keys")

REVALIDATE_S = 30.0
NEGATIVE_TTL_S = 300.0
NEGATIVE_MAX = 10_000
MISS_CONCURRENCY = 4
LOOKUP_TIMEOUT_S = 3.0


def channel_for(storage_url: str) -> str:
    """The Redis channel of every instance sharing one key storage."""
    return "sluice:keys:" + hashlib.sha256(storage_url.encode()).hexdigest()[:16]


def _redis(url: str) -> Any:
    """A Redis client, imported on first use: a gateway without Redis never loads it."""
    from redis import asyncio as aioredis

    return aioredis.from_url(url)


def storage_down() -> GatewayError:
    """The answer when a key cannot be checked because storage is unreachable."""
    return GatewayError("SERVICE_UNAVAILABLE", "key storage is unavailable; try again shortly")


class KeyEvents:
    """Publishes key changes on Redis (used by the gateway and by `sluice keys`)."""

    def __init__(self, redis_url: str | None, channel: str) -> None:
        self.channel = channel
        self.client = _redis(redis_url) if redis_url else None

    async def publish(self, op: str, rec: KeyRecord) -> None:
        """Tell every instance about `op` ("revoke", "create", "update") on a key (no secret)."""
        if self.client is None:
            return
        msg = json.dumps({"op": op, "id": rec.id, "hash": rec.hash})
        # Two tries: after a Redis restart the pooled connection is dead, and the first
        # command on it fails (the pool then drops it); the event must not be lost with it.
        for attempt in (1, 2):
            try:
                await self.client.publish(self.channel, msg)
                return
            except Exception as exc:  # Redis down must not fail an admin action
                if attempt == 2:
                    log.warning("could not publish key %s on Redis: %s", op, type(exc).__name__)

    async def close(self) -> None:
        """Close the Redis connection."""
        if self.client is not None:
            await self.client.aclose()


@dataclass(slots=True)
class _Entry:
    record: KeyRecord
    checked: float  # monotonic time of the last storage read


class KeyAuth:
    """Verifies team keys from an in-process cache backed by `Store`."""

    def __init__(self, store: Store, redis_url: str | None) -> None:
        self.store = store
        self.redis_url = redis_url
        self.events = KeyEvents(redis_url, channel_for(store.url))
        self.any_keys = True  # fail closed until storage says none was ever issued
        self._counted = False  # whether storage has answered that question yet
        self.lookups = 0
        self._pos: dict[str, _Entry] = {}
        self._neg: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[KeyRecord | None]] = {}
        self._revalidating: set[str] = set()
        self._sem = asyncio.Semaphore(MISS_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Learn whether any key exists, and listen for other instances' changes."""
        await self._count()
        self._tasks.append(asyncio.create_task(self._watch()))
        if self.redis_url:
            self._tasks.append(asyncio.create_task(self._listen()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 3.0)

    async def close(self) -> None:
        """Stop background work."""
        for t in self._tasks:
            t.cancel()
        await self.events.close()

    async def _count(self) -> None:
        try:
            n = await asyncio.wait_for(self.store.count_keys(), LOOKUP_TIMEOUT_S)
        except Exception as exc:
            log.warning(
                "key storage unreachable or not migrated at start (%s): auth stays on "
                "(PostgreSQL: run `sluice db upgrade`)",
                type(exc).__name__,
            )
            self.any_keys = True
            return
        self.any_keys = n > 0
        self._counted = True

    async def lookup(self, key: str, digest: str | None = None) -> KeyRecord | None:
        """The active key record for `key` (whose SHA-256 hex the caller may already have),
        None if unknown or revoked, 503 if storage is down."""
        if digest is None:
            digest = hashlib.sha256(key.encode()).hexdigest()
        hit = self._pos.get(digest)
        if hit is not None:
            if time.monotonic() - hit.checked > REVALIDATE_S:
                self._revalidate(digest)
            return hit.record
        if not KEY_SHAPE.match(key):
            return None
        neg = self._neg.get(digest)
        if neg is not None and neg > time.monotonic():
            return None
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(self._load(digest))
            self._inflight[digest] = task
            task.add_done_callback(lambda _t: self._inflight.pop(digest, None))
        return await asyncio.shield(task)

    async def _load(self, digest: str) -> KeyRecord | None:
        async with self._sem:
            self.lookups += 1
            try:
                rec = await asyncio.wait_for(self.store.by_hash(digest), LOOKUP_TIMEOUT_S)
            except Exception as exc:
                log.warning("key lookup failed: storage unavailable (%s)", type(exc).__name__)
                raise storage_down() from None
        self._remember(digest, rec)
        return rec if rec is not None and rec.active else None

    def _remember(self, digest: str, rec: KeyRecord | None) -> None:
        if rec is not None and rec.active:
            self._pos[digest] = _Entry(rec, time.monotonic())
            self._neg.pop(digest, None)
            return
        self._pos.pop(digest, None)
        if len(self._neg) >= NEGATIVE_MAX:
            now = time.monotonic()
            self._neg = {h: t for h, t in self._neg.items() if t > now}
            if len(self._neg) >= NEGATIVE_MAX:  # still full: drop the oldest half
                self._neg = dict(list(self._neg.items())[NEGATIVE_MAX // 2 :])
        self._neg[digest] = time.monotonic() + NEGATIVE_TTL_S

    def _revalidate(self, digest: str) -> None:
        if digest in self._revalidating:
            return
        self._revalidating.add(digest)

        async def run() -> None:
            try:
                rec = await asyncio.wait_for(self.store.by_hash(digest), LOOKUP_TIMEOUT_S)
                self._remember(digest, rec)
            except Exception:
                # Storage down: keep serving the key we verified (SPEC §6), try again later.
                if digest in self._pos:
                    self._pos[digest].checked = time.monotonic()
            finally:
                self._revalidating.discard(digest)

        self._tasks.append(asyncio.create_task(run()))
        self._tasks = [t for t in self._tasks if not t.done()]

    def apply(self, op: str, digest: str) -> None:
        """A key change (local or from another instance): evict, allow, or reload at once."""
        if op == "revoke":
            self._remember(digest, None)
        elif op == "create":
            self.any_keys = True
            self._neg.pop(digest, None)
        elif op == "update":  # new limits or models: the next request reads them from storage
            self._pos.pop(digest, None)
            self._neg.pop(digest, None)

    async def announce(self, op: str, rec: KeyRecord) -> None:
        """Apply a change here and publish it to every other instance."""
        self.apply(op, rec.hash)
        await self.events.publish(op, rec)

    async def _watch(self) -> None:
        """While no key exists the gateway is open; notice the first one made elsewhere.
        Until storage has answered at all (down, or not migrated yet) ask again soon."""
        while True:
            await asyncio.sleep(REVALIDATE_S if self._counted else 2.0)
            if not self.any_keys or not self._counted:
                await self._count()

    async def _listen(self) -> None:
        assert self.redis_url is not None
        warned = False
        while True:
            client: Any = _redis(self.redis_url)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(self.events.channel)
                self._subscribed.set()
                warned = False
                self._mark_stale()  # changes may have been missed while disconnected
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        self._on_message(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not warned:
                    log.warning("Redis key channel lost (%s); retrying", type(exc).__name__)
                    warned = True
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _on_message(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            self.apply(str(msg["op"]), str(msg["hash"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed key event")

    def _mark_stale(self) -> None:
        for entry in self._pos.values():
            entry.checked = 0.0
