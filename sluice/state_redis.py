"""The Redis backend of `sluice.state`: one Lua script per reserve/settle, so limits and
budgets hold across every instance sharing the Redis.

Redis down (SPEC §6): the first failure logs one warning and switches to per-instance
counters whose caps are divided by the number of live instances — the last count seen
through the instances' heartbeats (a sorted set refreshed every few seconds), or
`redis.instances` when configured. The cache misses meanwhile. A background probe pings
Redis every second and switches back when it answers; reservations made locally settle
locally.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sluice.resp import RespClient, RespError
from sluice.state import Admission, Counter, MemoryState

log = logging.getLogger("sluice.state")

# KEYS: counters; ARGV: amount, cap, ttl_ms, floor, floor_ttl_ms per counter (see
# state.Counter). A counter that is missing while this instance last saw it at `floor` was
# lost by Redis (a restart without persistence): it resumes from `floor`, so a restart never
# hands out a window's or a period's allowance again.
# Returns {0, i, value, pttl} when counter i would pass its cap (no count changed), else
# {1, value1, ttl1, value2, ttl2, ...} after adding every amount.
# Two calls a counter on the way through (Redis runs every instance's script on one core, so
# this is the fleet's ceiling): a missing counter is created with its expiry (SET NX: its
# floor, else 0), then INCRBY; one over its cap undoes what this call added. A window's or a
# period's ttl is the one the caller computed from the same boundary as the key's expiry
# (the key names the window), so it is returned rather than read back with PTTL.
_RESERVE = """
local out = {1}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[5*i-4])
  local ttl = tonumber(ARGV[5*i-2])
  if tonumber(ARGV[5*i-1]) > 0 then
    redis.call('SET', KEYS[i], ARGV[5*i-1], 'PX', ARGV[5*i], 'NX')
  elseif ttl > 0 then
    redis.call('SET', KEYS[i], 0, 'PX', ttl, 'NX')
  end
  local v = redis.call('INCRBY', KEYS[i], amount)
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[i], -ttl)
  end
  local cap = tonumber(ARGV[5*i-3])
  if cap >= 0 and v > cap then
    for j = 1, i do
      redis.call('DECRBY', KEYS[j], tonumber(ARGV[5*j-4]))
    end
    return {0, i, v - amount, redis.call('PTTL', KEYS[i])}
  end
  out[#out+1] = v
  out[#out+1] = ttl < 0 and -ttl or (ttl > 0 and ttl or -1)
end
return out
"""

# KEYS: counters; ARGV: deltas. Only existing counters move (an expired window stays gone)
# and none goes below 0.
_ADJUST = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], ARGV[i]) < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return 1
"""

# KEYS: counters an instance spent on locally while Redis was away; ARGV: delta, floor,
# floor_ttl_ms per counter. A counter that survived gets the delta, but never ends below the
# instance's last view (which already includes the delta): after a restart another instance
# may have recreated it from a smaller view. One Redis lost is recreated at that view.
_RECOVER = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], ARGV[3*i-2])
    if v < tonumber(ARGV[3*i-1]) then
      redis.call('SET', KEYS[i], ARGV[3*i-1], 'KEEPTTL')
    end
  elseif tonumber(ARGV[3*i-1]) > 0 and tonumber(ARGV[3*i]) > 0 then
    redis.call('SET', KEYS[i], ARGV[3*i-1], 'PX', ARGV[3*i])
  end
end
return 1
"""

# KEYS: the instances set; ARGV: this instance, now, stale-before. Returns live instances.
_HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('EXPIRE', KEYS[1], 60)
return redis.call('ZCARD', KEYS[1])
"""

_HEARTBEAT_S = 3.0
_PROBE_S = 1.0
_ERRORS = (RespError, OSError, asyncio.TimeoutError)


def _outcome(fut: asyncio.Future[Any]) -> Any:
    """A finished call's reply, or its exception (None when it was cancelled)."""
    if fut.cancelled():
        return None
    return fut.exception() or fut.result()


class Script:
    """A Lua script run by its SHA1, loaded on the first NOSCRIPT (e.g. after a restart)."""

    def __init__(self, client: RespClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's script id)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.client.execute("EVAL", self.source, len(keys), *keys, *args)

    def submit(self, keys: Sequence[str], args: Sequence[Any], source: bool = False) -> Any:
        """Send the script now; nobody waits for its reply (see RespClient.submit)."""
        cmd = ("EVAL", self.source) if source else ("EVALSHA", self.sha)
        return self.client.submit(*cmd, len(keys), *keys, *args, awaited=False)


class RedisState:
    """Counters and blobs in Redis under `prefix`, with a per-instance fallback."""

    def __init__(self, url: str, prefix: str, instances: int | None, fallback: MemoryState) -> None:
        self.prefix = prefix
        self.instances_hint = instances
        self.instances = instances or 1
        self.local = fallback
        self.down = False
        self.instance_id = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self.redis = RespClient(url, timeout_s=0.5)
        self._reserve = Script(self.redis, _RESERVE)
        self._adjust = Script(self.redis, _ADJUST)
        self._recover = Script(self.redis, _RECOVER)
        self._heartbeat_script = Script(self.redis, _HEARTBEAT)
        self._pending: set[asyncio.Future[Any]] = set()  # replies nobody waits for
        self._batch: dict[str, int] = {}
        self._loop_task: asyncio.Task[None] | None = None
        # The last value and expiry (monotonic) this instance saw of each windowed or period
        # counter: it reseeds counters a Redis restart lost, and starts the Redis-down
        # fallback from what was already spent instead of from zero.
        self.seen: dict[str, tuple[int, float]] = {}
        self._outage: dict[str, int] = {}  # spent on local counters while Redis was down

    def _fail(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            log.warning(
                "Redis unreachable (%s): limits fall back to per-instance counters at "
                "limit / %d instances; the cache misses until it returns",
                type(exc).__name__,
                self.instances,
            )

    async def reserve(self, counters: Sequence[Counter]) -> Admission:
        """See `State.reserve`: one EVALSHA, or the local fallback while Redis is down."""
        now = time.monotonic()
        if not self.down:
            args: list[int] = []
            for c in counters:
                floor, until = self.seen.get(c.key, (0, 0.0))
                left_ms = int((until - now) * 1000)
                if c.ttl_ms <= 0 or left_ms <= 0:
                    floor = left_ms = 0
                args += (c.amount, c.cap, c.ttl_ms, floor, left_ms)
            try:
                raw = await self._reserve([self.prefix + c.key for c in counters], args)
            except _ERRORS as exc:
                self._fail(exc)
            else:
                if raw[0] == 0:
                    failed = int(raw[1]) - 1
                    self._see(counters[failed], int(raw[2]), int(raw[3]), now)
                    return Admission(False, failed, [int(raw[2])], [int(raw[3])])
                vals = [int(v) for v in raw[1:]]
                for c, v, ttl in zip(counters, vals[0::2], vals[1::2], strict=True):
                    self._see(c, v, ttl, now)
                return Admission(True, -1, vals[0::2], vals[1::2])
        got = self.local.reserve_now(counters, max(1, self.instances), self.seen)
        if got.ok:
            for c, ttl in zip(counters, got.ttls, strict=True):
                if c.ttl_ms > 0:
                    value, until = self.seen.get(c.key, (0, now + ttl / 1000))
                    self.seen[c.key] = (value + c.amount, until)
                    self._outage[c.key] = self._outage.get(c.key, 0) + c.amount
        return got

    def _see(self, c: Counter, value: int, ttl_ms: int, now: float) -> None:
        if c.ttl_ms > 0 and ttl_ms > 0:
            self.seen[c.key] = (value, now + ttl_ms / 1000)

    def adjust(self, deltas: Sequence[tuple[str, int]], local: bool = False) -> None:
        """See `State.adjust`: local reservations settle locally, others in a background batch."""
        if local:
            self.local.adjust(deltas)
            return
        if self.down or not deltas:
            return  # the Redis reservation expires with its window or period
        batch = self._batch
        if not batch:
            # Every settlement of this loop iteration goes in one script call: under load
            # that is one round trip for many requests.
            asyncio.get_running_loop().call_soon(self._flush)
        for key, delta in deltas:
            batch[key] = batch.get(key, 0) + delta

    def _flush(self) -> None:
        batch, self._batch = self._batch, {}
        deltas = [(k, d) for k, d in batch.items() if d]
        if deltas and not self.down:
            keys, args = [self.prefix + k for k, _ in deltas], [d for _, d in deltas]
            self._unwaited(
                self._adjust.submit(keys, args), partial(self._adjust.submit, keys, args, True)
            )

    def _unwaited(self, fut: asyncio.Future[Any], resend: Callable[[], Any] | None = None) -> None:
        """Watch a reply nobody waits for (a settlement, a cache store): a failure switches
        to the fallback; NOSCRIPT (Redis restarted) sends the script's source once."""
        self._pending.add(fut)
        fut.add_done_callback(partial(self._replied, resend))

    def _replied(self, resend: Callable[[], Any] | None, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        reply = _outcome(fut)
        if (
            isinstance(reply, RespError)
            and resend is not None
            and str(reply).startswith("NOSCRIPT")
        ):
            self._unwaited(resend())
        elif isinstance(reply, _ERRORS):
            self._fail(reply)

    async def peek(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        """See `State.peek`."""
        if self.down:
            return await self.local.peek(keys)
        calls = []
        for k in keys:
            calls.append(self.redis.execute("GET", self.prefix + k))
            calls.append(self.redis.execute("PTTL", self.prefix + k))
        try:
            raw = await asyncio.gather(*calls)  # pipelined on the one connection
        except _ERRORS as exc:
            self._fail(exc)
            return await self.local.peek(keys)
        return [(int(raw[i] or 0), int(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def get_blob(self, key: str) -> bytes | None:
        """See `State.get_blob`; a miss while Redis is down."""
        return await self.get_blob_soon(key)

    def get_blob_soon(self, key: str) -> asyncio.Future[bytes | None]:
        """See `State.get_blob_soon`: the GET is written now, so it shares the round trip of
        whatever is sent next (the request's reservation)."""
        blob: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        if self.down:
            blob.set_result(None)
            return blob
        self.redis.submit("GET", self.prefix + key).add_done_callback(
            partial(self._blob_replied, blob)
        )
        return blob

    def _blob_replied(self, blob: asyncio.Future[bytes | None], fut: asyncio.Future[Any]) -> None:
        reply = _outcome(fut)
        if isinstance(reply, _ERRORS):
            self._fail(reply)
        if not blob.done():
            blob.set_result(reply if isinstance(reply, bytes) else None)

    def set_blob(self, key: str, value: bytes, ttl_s: float) -> None:
        """See `State.set_blob`: written now, its reply watched, not waited for."""
        if not self.down:
            ttl_ms = max(1, int(ttl_s * 1000))
            self._unwaited(
                self.redis.submit("SET", self.prefix + key, value, "PX", ttl_ms, awaited=False)
            )

    async def start(self) -> None:
        """Start the heartbeat / reconnect loop."""
        self._loop_task = asyncio.ensure_future(self._background())

    async def _background(self) -> None:
        beat_at = 0.0
        while True:
            now = time.monotonic()
            for key in [k for k, (_, until) in self.seen.items() if until <= now]:
                del self.seen[key]  # the window or period is over
            if self.down:
                try:
                    await self.redis.execute("PING")
                except _ERRORS:
                    pass
                else:
                    self.down = False
                    log.warning("Redis is reachable again: shared limits and cache resumed")
                    await self._rejoin()
            if not self.down and time.monotonic() >= beat_at:
                beat_at = time.monotonic() + _HEARTBEAT_S
                await self._heartbeat()
            await asyncio.sleep(_PROBE_S)

    async def _rejoin(self) -> None:
        """What was spent locally during the outage joins the shared counters."""
        spent, self._outage = self._outage, {}
        now = time.monotonic()
        keys: list[str] = []
        args: list[int] = []
        for key, delta in spent.items():
            floor, until = self.seen.get(key, (0, now))
            keys.append(self.prefix + key)
            args += (delta, floor, max(0, int((until - now) * 1000)))
        if keys:
            try:
                await self._recover(keys, args)
            except _ERRORS as exc:
                self._fail(exc)

    async def _heartbeat(self) -> None:
        """Count live instances: each refreshes its member; stale members are dropped."""
        now = time.time()
        args = (self.instance_id, now, now - 3 * _HEARTBEAT_S)
        try:
            live = await self._heartbeat_script([self.prefix + "instances"], args)
        except _ERRORS as exc:
            self._fail(exc)
            return
        if self.instances_hint is None:
            self.instances = max(1, int(live))

    async def close(self) -> None:
        """Stop the loop, let pending settlements finish, leave the heartbeat set."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._flush()
        if self._pending:  # held settlements leave within the client's hold_s
            await asyncio.wait(list(self._pending), timeout=2)
        if not self.down:
            try:
                await self.redis.execute("ZREM", self.prefix + "instances", self.instance_id)
            except _ERRORS:
                pass
        await self.redis.close()
