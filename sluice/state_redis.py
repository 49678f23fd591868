"""The Redis backend of `sluice.state`: one Lua script per reserve/settle, so limits and
budgets hold across every instance sharing the Redis.

Leases keep that round trip off most requests. A reservation on a window or a period
(rpm, tpm, budgets) that is far from its cap also takes a lease: `LEASE_REQUESTS` more of
the same amount, counted in Redis at once. The instance then admits the following requests
from its leases in memory, with no round trip, until one runs short. Redis grants a lease
only while the counter stays `LEASE_MARGIN` × instances leases below its cap, so near the
cap every request goes to Redis and the last of a window or budget is admitted exactly
(N parallel requests against a cap of K admit exactly K); far from it, what other
instances hold unused can only make a counter read high, never let one pass its cap. A
lease unused for `LEASE_IDLE_S` goes back, and so do all of them when the instance stops;
an instance that dies keeps its leases counted, so its crash can make a budget look more
spent, never overspent. In-flight (`concurrent`) gauges are never leased: their slots come
back with every request.

The cache keeps its misses off Redis the same way. Every instance holds a directory of the
cache keys Redis has (key → expiry): each store adds its key to an index (a sorted set by
expiry) and publishes it on a channel; an instance loads the index once it has subscribed,
then follows the channel. A lookup whose key is not in the directory is a miss with no
round trip; only a probable hit is fetched. While the subscription is down, every lookup
asks Redis as before, and the directory is reloaded when it comes back. A store on another
instance is seen here once its message arrives (well under a millisecond on one host).

Redis down (SPEC §6): the first failure logs one warning and switches to per-instance
counters whose caps are divided by the number of live instances — the last count seen
through the instances' heartbeats (a sorted set refreshed every few seconds), or
`redis.instances` when configured. The cache misses meanwhile. A background probe pings
Redis every second; when it answers, what was spent locally joins the shared counters
(_RECOVER) and shared counting resumes; reservations made locally settle locally.

Redis restarted empty: an epoch key changes, and every instance brings back its last view
of each live counter — on its return from the outage, at its next reservation (which checks
the epoch) or heartbeat — before counting on; a counter resumes from the largest view plus
what was spent during the outage (see _RECOVER).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sluice.resp import RespClient, RespError
from sluice.state import Admission, Counter, MemoryState

log = logging.getLogger("sluice.state")

# KEYS: counters, then the epoch marker; ARGV: amount, cap, ttl_ms, floor, floor_ttl_ms,
# lease per counter (see state.Counter), then the epoch this instance knows ('' if none yet)
# and the lease margin. A counter that is missing while this instance last saw it at `floor`
# was lost by Redis (a restart without persistence): it resumes from `floor`, so a restart
# never hands out a window's or a period's allowance again, and the floor is kept as the
# counter's base (see _RECOVER). Returns {2} and moves nothing when the epoch is not the
# one this instance knows (Redis lost its data while the instance stayed connected, e.g. a
# flush): the instance brings its views back first (_RECOVER), then reserves again.
# Returns {0, i, value, pttl} when counter i would pass its cap (no count changed), else
# {1, value1, ttl1, lease1, value2, ttl2, lease2, ...} after adding every amount, and a
# lease on top where one was asked for and the counter stays `margin` leases below its cap
# (see RedisState: far from the cap an instance admits from leases without a round trip).
# Two calls a counter on the way through (Redis runs every instance's script on one core, so
# this is the fleet's ceiling): a missing counter is created with its expiry (SET NX: its
# floor, else 0), then INCRBY; one over its cap undoes what this call added. A window's or a
# period's ttl is the one the caller computed from the same boundary as the key's expiry
# (the key names the window), so it is returned rather than read back with PTTL.
_RESERVE = """
local known = ARGV[#ARGV - 1]
if known ~= '' and redis.call('GET', KEYS[#KEYS]) ~= known then
  return {2}
end
local margin = tonumber(ARGV[#ARGV])
local out = {1}
local added = {}
for i = 1, #KEYS - 1 do
  local amount = tonumber(ARGV[6*i-5])
  local ttl = tonumber(ARGV[6*i-3])
  if tonumber(ARGV[6*i-2]) > 0 then
    if redis.call('SET', KEYS[i], ARGV[6*i-2], 'PX', ARGV[6*i-1], 'NX') then
      redis.call('SET', KEYS[i] .. ':base', ARGV[6*i-2], 'PX', ARGV[6*i-1])
    end
  elseif ttl > 0 then
    redis.call('SET', KEYS[i], 0, 'PX', ttl, 'NX')
  end
  local v = redis.call('INCRBY', KEYS[i], amount)
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[i], -ttl)
  end
  local cap = tonumber(ARGV[6*i-4])
  if cap >= 0 and v > cap then
    redis.call('DECRBY', KEYS[i], amount)
    for j = 1, i - 1 do
      redis.call('DECRBY', KEYS[j], added[j])
    end
    return {0, i, v - amount, redis.call('PTTL', KEYS[i])}
  end
  local lease = tonumber(ARGV[6*i])
  if lease > 0 and (cap < 0 or v + lease * margin <= cap) then
    v = redis.call('INCRBY', KEYS[i], lease)
  else
    lease = 0
  end
  added[i] = amount + lease
  out[#out+1] = v
  out[#out+1] = ttl < 0 and -ttl or (ttl > 0 and ttl or -1)
  out[#out+1] = lease
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

# KEYS: the epoch marker, then the windowed and period counters this instance has seen;
# ARGV: the epoch it knew ('' if none yet), a new epoch in case the marker is missing, then
# per counter what it spent locally while Redis was away (delta), its last view of the
# counter before the outage and the ms left to the counter's expiry. Returns the epoch.
# Same epoch: Redis kept its data, so each counter just gets the delta. New epoch: Redis
# lost everything (a restart without persistence), and every instance's last view is a
# lower bound of what was spent, the largest one the best. The counter's `:base` is the
# view it was recreated from; a larger view adds the difference and becomes the base, so
# whatever order the instances come back in, the counter ends at the largest view plus
# every instance's delta, never below what was really spent (before the restart, only
# settlements that no view includes can make it read high).
_RECOVER = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[2])
  epoch = ARGV[2]
end
local lost = ARGV[1] ~= '' and epoch ~= ARGV[1]
for i = 2, #KEYS do
  local delta = tonumber(ARGV[3*i-3])
  local view = tonumber(ARGV[3*i-2])
  local ttl = tonumber(ARGV[3*i-1])
  local base = KEYS[i] .. ':base'
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if delta ~= 0 then
      redis.call('INCRBY', KEYS[i], delta)
    end
    if lost then
      local from = tonumber(redis.call('GET', base) or '0')
      if view > from then
        redis.call('INCRBY', KEYS[i], view - from)
        redis.call('SET', base, view, 'KEEPTTL')
      end
    end
  elseif ttl > 0 and (lost or delta > 0) then
    redis.call('SET', KEYS[i], view + delta, 'PX', ttl)
    redis.call('SET', base, view, 'PX', ttl)
  end
end
return epoch
"""

# KEYS: the blob, the cache index, the cache channel; ARGV: value, ttl_ms, expiry (epoch ms),
# the blob's name (without the prefix), now (epoch ms). Stores the blob, indexes it by
# expiry (dropping expired names; the index lives as long as its longest entry) and tells
# every instance's directory.
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('PUBLISH', KEYS[3], ARGV[4] .. ' ' .. ARGV[2])
return 1
"""

# KEYS: the instances set, the epoch marker; ARGV: this instance, now, the oldest heartbeat
# still alive, a new epoch in case the marker is missing. Returns {live instances, epoch}.
_HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('EXPIRE', KEYS[1], 60)
redis.call('SET', KEYS[2], ARGV[4], 'NX')
return {redis.call('ZCARD', KEYS[1]), redis.call('GET', KEYS[2])}
"""

LEASE_REQUESTS = 32  # a lease is this many more of the reserving request's amount
LEASE_MARGIN = 4  # ... granted while the counter stays this many leases × instances below its cap
LEASE_IDLE_S = 2.0  # a lease unused this long goes back to the shared counter

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
        self.sent = False  # submitted with its source once

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.client.execute("EVAL", self.source, len(keys), *keys, *args)

    def submit(self, keys: Sequence[str], args: Sequence[Any], source: bool = False) -> Any:
        """Send the script now; nobody waits for its reply (see RespClient.submit). The first
        time it goes with its source (which loads it), so a command sent after it never
        overtakes it through a NOSCRIPT retry."""
        source = source or not self.sent
        self.sent = True
        cmd = ("EVAL", self.source) if source else ("EVALSHA", self.sha)
        return self.client.submit(*cmd, len(keys), *keys, *args, awaited=False)


class _Lease:
    """Allowance on one counter that Redis already counts and this instance hands out."""

    __slots__ = ("left", "until", "used_at", "value")

    def __init__(self, left: int, value: int, until: float, now: float) -> None:
        self.left = left  # not yet handed out
        self.value = value  # the shared counter after the lease was added
        self.until = until  # the counter's window or period end (monotonic)
        self.used_at = now


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
        self._store = Script(self.redis, _STORE)
        self._pending: set[asyncio.Future[Any]] = set()  # replies nobody waits for
        self._batch: dict[str, int] = {}
        self._loop_task: asyncio.Task[None] | None = None
        # The last value and expiry (monotonic) this instance saw of each windowed or period
        # counter: it reseeds counters a Redis restart lost, and starts the Redis-down
        # fallback from what was already spent instead of from zero.
        self.seen: dict[str, tuple[int, float]] = {}
        self._outage: dict[str, int] = {}  # spent on local counters while Redis was down
        # Redis's data generation (a marker key): when it changes, Redis lost its counters
        # and every instance brings back its views of them (see _RECOVER).
        self.epoch = b""  # as Redis returns it; b"" until the first heartbeat
        self._leases: dict[str, _Lease] = {}
        self._rejoining: asyncio.Future[None] | None = None  # see _rejoin_once
        # The cache directory: blob name -> expiry (monotonic); None while not subscribed.
        self._directory: OrderedDict[str, float] | None = None
        self._loading: OrderedDict[str, float] | None = None
        self._subscription: asyncio.Transport | None = None

    def _fail(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self._leases.clear()  # still counted in Redis: the outage starts from there
            self._unsubscribe()
            log.warning(
                "Redis unreachable (%s): limits fall back to per-instance counters at "
                "limit / %d instances; the cache misses until it returns",
                type(exc).__name__,
                self.instances,
            )

    async def reserve(self, counters: Sequence[Counter]) -> Admission:
        """See `State.reserve`: from this instance's leases when they cover every counter,
        else one EVALSHA (taking leases where far from the cap), or the local fallback while
        Redis is down."""
        now = time.monotonic()
        if not self.down:
            leased = self._from_leases(counters, now)
            if leased is not None:
                return leased
            args: list[Any] = []
            for c in counters:
                floor, until = self.seen.get(c.key, (0, 0.0))
                left_ms = int((until - now) * 1000)
                if c.ttl_ms <= 0 or left_ms <= 0:
                    floor = left_ms = 0
                held = self._leases.get(c.key)
                # A lease that still covers this amount is kept; an ended or short one renewed.
                short = held is None or held.until <= now or held.left < c.amount
                lease = LEASE_REQUESTS * c.amount if c.ttl_ms > 0 and short else 0
                args += (c.amount, c.cap, c.ttl_ms, floor, left_ms, lease)
            args += (self.epoch, LEASE_MARGIN * max(1, self.instances))
            keys = [self.prefix + c.key for c in counters]
            keys.append(self.prefix + "epoch")
            try:
                raw = await self._reserve(keys, args)
                for _ in range(2):  # {2}: Redis lost its data; this instance's views go back
                    if raw[0] != 2:
                        break
                    if self.epoch == args[-2]:  # not already brought back by another request
                        await self._rejoin_once()
                    args[-2] = self.epoch
                    raw = await self._reserve(keys, args)
            except _ERRORS as exc:
                self._fail(exc)
            else:
                if raw[0] == 0:
                    failed = int(raw[1]) - 1
                    self._see(counters[failed], int(raw[2]), int(raw[3]), now)
                    return Admission(False, failed, [int(raw[2])], [int(raw[3])])
                if raw[0] == 1:
                    return self._granted(counters, [int(v) for v in raw[1:]], now)
                # Another epoch still after two rejoins (Redis keeps losing its data): this
                # one is counted locally and joins the shared counter with the next rejoin.
        got = self.local.reserve_now(counters, max(1, self.instances), self.seen)
        if got.ok:
            for c, ttl in zip(counters, got.ttls, strict=True):
                if c.ttl_ms > 0:
                    value, until = self.seen.get(c.key, (0, now + ttl / 1000))
                    self.seen[c.key] = (value + c.amount, until)
                    self._outage[c.key] = self._outage.get(c.key, 0) + c.amount
        return got

    def _from_leases(self, counters: Sequence[Counter], now: float) -> Admission | None:
        """Admit from leases in memory when every counter has one that covers its amount."""
        leases = self._leases
        found = []
        for c in counters:
            lease = leases.get(c.key)
            if lease is None or lease.left < c.amount or lease.until <= now:
                return None
            found.append(lease)
        values, ttls = [], []
        for c, lease in zip(counters, found, strict=True):
            lease.left -= c.amount
            lease.used_at = now
            values.append(lease.value - lease.left)
            ttls.append(int((lease.until - now) * 1000))
        return Admission(True, -1, values, ttls)

    def _granted(self, counters: Sequence[Counter], raw: list[int], now: float) -> Admission:
        """Record what a successful EVALSHA returned (value, ttl, lease per counter)."""
        values, ttls = raw[0::3], raw[1::3]
        for i, (c, lease) in enumerate(zip(counters, raw[2::3], strict=True)):
            v, ttl = values[i], ttls[i]
            self._see(c, v, ttl, now)
            held = self._leases.get(c.key)
            if lease > 0:
                if held is None or held.until <= now:
                    held = self._leases[c.key] = _Lease(0, v, now + ttl / 1000, now)
                held.left += lease
            if held is not None:
                held.value = v
                values[i] = v - held.left  # what is handed out, as far as this instance knows
        return Admission(True, -1, values, ttls)

    def _see(self, c: Counter, value: int, ttl_ms: int, now: float) -> None:
        if c.ttl_ms > 0 and ttl_ms > 0:
            self.seen[c.key] = (value, now + ttl_ms / 1000)

    def adjust(self, deltas: Sequence[tuple[str, int]], local: bool = False) -> None:
        """See `State.adjust`: local reservations settle locally; a counter this instance
        holds a lease on settles into the lease; others in a background batch."""
        if local:
            self.local.adjust(deltas)
            return
        if self.down or not deltas:
            return  # the Redis reservation expires with its window or period
        batch = self._batch
        leases = self._leases
        for key, delta in deltas:
            lease = leases.get(key)
            if lease is not None:
                left = lease.left - delta
                if left >= 0:  # handed back to (or taken from) what this instance holds
                    lease.left = left
                    continue
                lease.left, delta = 0, -left  # the part the lease cannot cover goes to Redis
            if not batch:
                # Every settlement of this loop iteration goes in one script call: under
                # load that is one round trip for many requests.
                asyncio.get_running_loop().call_soon(self._flush)
            batch[key] = batch.get(key, 0) + delta

    def _return_leases(self, now: float, idle_before: float) -> None:
        """Give back what leases unused since `idle_before` hold; forget ended ones."""
        for key, lease in list(self._leases.items()):
            if lease.until <= now:
                del self._leases[key]  # the window or period is over: nothing to give back
            elif lease.used_at <= idle_before:
                del self._leases[key]
                if lease.left:
                    self.adjust([(key, -lease.left)])

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
        out = []
        for key, i in zip(keys, range(0, len(raw), 2), strict=True):
            lease = self._leases.get(key)
            held = lease.left if lease is not None else 0  # counted, not yet handed out
            out.append((max(0, int(raw[i] or 0) - held), int(raw[i + 1])))
        return out

    async def get_blob(self, key: str) -> bytes | None:
        """See `State.get_blob`; a miss while Redis is down."""
        return await self.get_blob_soon(key)

    def get_blob_soon(self, key: str) -> asyncio.Future[bytes | None]:
        """See `State.get_blob_soon`: a key the directory does not hold is a miss at once;
        otherwise the GET is written now, so it shares the round trip of whatever is sent
        next."""
        blob: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        directory = self._directory
        if self.down or (directory is not None and directory.get(key, 0.0) <= time.monotonic()):
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
        """See `State.set_blob`: written now, its reply watched, not waited for; every
        instance's directory learns the key."""
        if self.down:
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        self._listed(key, ttl_ms)
        now_ms = int(time.time() * 1000)
        keys = [self.prefix + key, self.prefix + "cache-index", self.prefix + "cache"]
        args = [value, ttl_ms, now_ms + ttl_ms, key, now_ms]
        self._unwaited(
            self._store.submit(keys, args), partial(self._store.submit, keys, args, True)
        )

    # ---- the cache directory -------------------------------------------------------------

    @property
    def directory_live(self) -> bool:
        """Whether lookups consult the directory (subscribed and loaded)."""
        return self._directory is not None

    def _listed(self, key: str, ttl_ms: int) -> None:
        """Note a stored key in the directory (and in one being loaded)."""
        until = time.monotonic() + ttl_ms / 1000
        for directory in (self._directory, self._loading):
            if directory is not None:
                self._bounded(directory, key)[key] = until

    def _bounded(self, directory: OrderedDict[str, float], key: str) -> OrderedDict[str, float]:
        """Room for `key`: the oldest name goes when full (a name dropped early only turns a
        hit into a miss; expired ones are swept every second by the background loop)."""
        if len(directory) >= 2 * self.local._max_blobs and key not in directory:
            directory.popitem(last=False)
        return directory

    def _sweep_directory(self, now: float) -> None:
        directory = self._directory
        if directory is not None:
            for name in [k for k, until in directory.items() if until <= now]:
                del directory[name]

    def _announced(self, payload: bytes) -> None:
        key, _, ttl = payload.decode(errors="replace").rpartition(" ")
        if key and ttl.isdigit():
            self._listed(key, int(ttl))

    def _subscription_lost(self) -> None:
        self._directory = self._loading = None  # lookups ask Redis until it is reloaded
        self._subscription = None

    def _unsubscribe(self) -> None:
        sub, self._subscription = self._subscription, None
        self._directory = self._loading = None
        if sub is not None:
            sub.abort()

    async def _subscribe(self) -> None:
        """Follow the cache channel, then load the index: a store between the two is both
        in the index and announced, none is missed."""
        try:
            self._subscription = await self.redis.subscribe(
                self.prefix + "cache", self._announced, self._subscription_lost
            )
            loading = self._loading = OrderedDict()  # announced while the index loads
            now_ms = int(time.time() * 1000)
            raw = await self.redis.execute(
                "ZRANGEBYSCORE",
                self.prefix + "cache-index",
                now_ms,
                "+inf",
                "WITHSCORES",
                "LIMIT",
                0,
                2 * self.local._max_blobs,
            )
        except _ERRORS:  # ConnectionError is an OSError
            # Only the directory waits: lookups ask Redis, and a command that fails there
            # is what switches to the fallback (a subscription is retried every second).
            self._unsubscribe()
            return
        now = time.monotonic()
        directory: OrderedDict[str, float] = OrderedDict()
        for name, expires in zip(raw[0::2], raw[1::2], strict=True):
            directory[name.decode(errors="replace")] = now + (float(expires) - now_ms) / 1000
        if self._subscription is not None and self._loading is loading:
            directory.update(loading)
            self._directory, self._loading = directory, None

    async def start(self) -> None:
        """Start the heartbeat / reconnect loop."""
        self._loop_task = asyncio.ensure_future(self._background())

    async def _background(self) -> None:
        beat_at = 0.0
        while True:
            now = time.monotonic()
            for key in [k for k, (_, until) in self.seen.items() if until <= now]:
                del self.seen[key]  # the window or period is over
            if not self.down:
                self._return_leases(now, now - LEASE_IDLE_S)
                self._sweep_directory(now)
            if self.down:
                try:
                    await self.redis.execute("PING")
                    await self._rejoin()  # before shared counting resumes
                except _ERRORS:
                    pass
                else:
                    self.down = False
                    log.warning("Redis is reachable again: shared limits and cache resumed")
            if not self.down and self._subscription is None:
                await self._subscribe()
            if not self.down and time.monotonic() >= beat_at:
                beat_at = time.monotonic() + _HEARTBEAT_S
                await self._heartbeat()
            await asyncio.sleep(_PROBE_S)

    async def _rejoin_once(self) -> None:
        """`_rejoin`, once for every request that finds Redis's data lost at the same time:
        the others wait for the one under way."""
        if self._rejoining is None:
            self._rejoining = asyncio.ensure_future(self._rejoin())
            self._rejoining.add_done_callback(self._rejoined)
        await asyncio.shield(self._rejoining)

    def _rejoined(self, fut: asyncio.Future[None]) -> None:
        self._rejoining = None
        if not fut.cancelled():
            fut.exception()  # raised to the awaiting requests; retrieved here for asyncio

    async def _rejoin(self) -> None:
        """This instance's views of the live counters, and what it spent on them locally
        during an outage, join the shared counters (_RECOVER); raises if Redis fails.
        The caller resumes shared counting right after, with no await in between."""
        now = time.monotonic()
        views = [k for k, (_, until) in self.seen.items() if until > now]
        spent, self._outage = self._outage, {}
        try:
            epoch = await self._recover(*self._recover_call(views, spent, now))
        except _ERRORS:
            for key, delta in spent.items():  # sent with the next try
                self._outage[key] = self._outage.get(key, 0) + delta
            raise
        self.epoch = epoch
        if self._outage:  # spent locally while that call was in flight: sent now, unwaited
            later, self._outage = self._outage, {}
            self._unwaited(self._recover.submit(*self._recover_call([], later, now)))

    def _recover_call(
        self, views: list[str], spent: dict[str, int], now: float
    ) -> tuple[list[str], list[Any]]:
        """_RECOVER's keys and arguments for these counters."""
        keys = [self.prefix + "epoch"]
        args: list[Any] = [self.epoch, os.urandom(8).hex()]
        for key in {*views, *spent}:
            delta = spent.get(key, 0)
            value, until = self.seen.get(key, (delta, now))  # a view includes local spend
            keys.append(self.prefix + key)
            args += (delta, value - delta, max(0, int((until - now) * 1000)))
        return keys, args

    async def _heartbeat(self) -> None:
        """Count live instances: each refreshes its member; stale members are dropped."""
        now = time.time()
        args = (self.instance_id, now, now - 3 * _HEARTBEAT_S, os.urandom(8).hex())
        keys = [self.prefix + "instances", self.prefix + "epoch"]
        try:
            live, epoch = await self._heartbeat_script(keys, args)
            if self.epoch and epoch != self.epoch:
                # Redis lost its data without this instance seeing it down (a restart
                # between two calls, a flush) nor reserving since: bring the views back now.
                await self._rejoin_once()
            else:
                self.epoch = epoch
        except _ERRORS as exc:
            self._fail(exc)
            return
        if self.instances_hint is None:
            self.instances = max(1, int(live))

    async def close(self) -> None:
        """Stop the loop, let pending settlements finish, leave the heartbeat set."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._unsubscribe()
        if not self.down:
            now = time.monotonic()
            self._return_leases(now, now)
        self._flush()
        if self._pending:  # held settlements leave within the client's hold_s
            await asyncio.wait(list(self._pending), timeout=2)
        if not self.down:
            try:
                await self.redis.execute("ZREM", self.prefix + "instances", self.instance_id)
            except _ERRORS:
                pass
        await self.redis.close()
