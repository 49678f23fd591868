"""A small pipelined Redis client (RESP2) for the admission hot path.

Why not redis-py's asyncio client: a round trip through it costs ~100 µs of Python on top of
the network (connection-pool checkout, command packing, response callbacks), which is most
of the Redis backend's budget per request. Here every request shares one connection:
commands are written as they come and replies are matched to callers in order (Redis
answers a connection's commands in order), so concurrent requests never wait for each other.
Replies are parsed synchronously in `data_received` (no await per array element).

A reply slower than `timeout_s` drops the connection and fails every waiting call, so a hung
Redis costs at most about that long before the caller falls back (SPEC §6).

Commands nobody awaits (`submit(..., awaited=False)`: a settlement, a cache store, sent after
the answer left) are held up to `hold_s` and written with the next awaited command (the next
request's lookup and reservation), so their replies come back in the same read: one write,
one read and one event-loop wake-up a request instead of two each (strace, concurrency 1).
A quiet gateway writes them when `hold_s` is up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit


class RespError(Exception):
    """An error reply from Redis (e.g. NOSCRIPT, WRONGTYPE)."""


class _Incomplete(Exception):
    pass


def encode(args: tuple[Any, ...]) -> bytes:
    """One command in RESP's array-of-bulk-strings form."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at `pos` and the position after it; _Incomplete if cut short.
    Error replies come back as RespError values (the caller raises them)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line, pos = buf[pos], bytes(buf[pos + 1 : end]), end + 2
    if kind == 58:  # ':' integer
        return int(line), pos
    if kind == 36:  # '$' bulk string
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind == 42:  # '*' array
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # '+' simple string
        return line.decode(), pos
    if kind == 45:  # '-' error
        return RespError(line.decode(errors="replace")), pos
    raise ConnectionError(f"unexpected reply from Redis: {bytes(buf[pos - 2 : pos + 18])!r}")


def take_replies(buf: bytearray, data: bytes) -> tuple[list[Any], ConnectionError | None]:
    """Append `data` to `buf` and take every complete reply off its front; the error when
    a reply is malformed (the connection is then unusable)."""
    buf += data
    pos = 0
    replies: list[Any] = []
    try:
        while pos < len(buf):
            reply, pos = parse(buf, pos)
            replies.append(reply)
    except _Incomplete:
        pass
    except (ValueError, ConnectionError, IndexError) as exc:
        return replies, ConnectionError(f"bad reply from Redis: {exc}")
    del buf[:pos]
    return replies, None


class _Protocol(asyncio.Protocol):
    """Feeds complete replies to the client in arrival order."""

    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []  # commands to write together, in the order sent
        self._soon = False  # a write is due this loop iteration
        self._later: asyncio.TimerHandle | None = None  # a write of held commands only

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def queue(self, command: bytes, hold_s: float = 0.0) -> None:
        """Write `command` with every other one queued in this loop iteration (a request's
        cache lookup and reservation; many requests' settlements): one syscall for all.
        With `hold_s`, it may wait that long for the next command that is not held."""
        self.out.append(command)
        if self._soon:
            return
        if hold_s <= 0:
            self._soon = True
            asyncio.get_running_loop().call_soon(self.flush)
        elif self._later is None:
            self._later = asyncio.get_running_loop().call_later(hold_s, self.flush)

    def flush(self) -> None:
        self._soon = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        out, self.out = self.out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        replies, bad = take_replies(self.buf, data)
        for reply in replies:
            self.client._deliver(reply)
        if bad is not None:
            self.client._drop(self, bad)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._drop(self, ConnectionError("Redis connection lost"))


class _Subscription(asyncio.Protocol):
    """A connection in subscribe mode: each message's payload goes to `on_message`."""

    def __init__(self, on_message: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        replies, bad = take_replies(self.buf, data)
        for reply in replies:
            if isinstance(reply, list) and reply and reply[0] == b"message":
                self.on_message(reply[2])
            elif isinstance(reply, list) and reply and reply[0] == b"subscribe":
                if not self.ready.done():
                    self.ready.set_result(None)
            elif isinstance(reply, RespError) and not self.ready.done():
                self.ready.set_exception(reply)  # AUTH refused
        if bad is not None:
            if not self.ready.done():
                self.ready.set_exception(bad)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("Redis connection lost"))
        self.on_lost()


class RespClient:
    """One pipelined connection to the Redis at `url` (redis:// or rediss://)."""

    def __init__(self, url: str, timeout_s: float = 0.5, hold_s: float = 0.005) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 6379
        self.ssl = u.scheme == "rediss"
        self.username = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        self.db = int(u.path.strip("/") or 0)
        self.timeout_s = timeout_s
        self.hold_s = hold_s  # how long a command nobody awaits may wait for company
        self._proto: _Protocol | None = None
        # (future, sent at) per command, in the order Redis answers them
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    async def _connect(self) -> _Protocol:
        async with self._lock:
            if self._proto is not None:
                return self._proto
            loop = asyncio.get_running_loop()
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self.ssl or None
                ),
                self.timeout_s,
            )
            # AUTH and SELECT are written before any caller can see the connection, so every
            # later command runs after them.
            setup: list[tuple[Any, ...]] = []
            if self.password:
                user = (self.username,) if self.username else ()
                setup.append(("AUTH", *user, self.password))
            if self.db:
                setup.append(("SELECT", self.db))
            waits = [self._send(proto, cmd) for cmd in setup]
            self._proto = proto
            self._watch = asyncio.ensure_future(self._watchdog(proto))
            for fut in waits:
                if isinstance(await fut, RespError):
                    self._drop(proto, ConnectionError("Redis refused AUTH/SELECT"))
                    raise ConnectionError("Redis refused AUTH/SELECT")
            return proto

    def _send(
        self, proto: _Protocol, args: tuple[Any, ...], awaited: bool = True
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport = proto.transport
        if transport is None or transport.is_closing():
            fut.set_exception(ConnectionError("Redis connection is closed"))
            return fut
        self._pending.append((fut, time.monotonic()))
        proto.queue(encode(args), 0.0 if awaited else self.hold_s)
        return fut

    def submit(self, *args: Any, awaited: bool = True) -> asyncio.Future[Any]:
        """Send one command now and return its reply's future without waiting: commands
        submitted together share the round trip. `awaited=False` says nobody will wait for
        the reply soon: it is held for the next awaited command (see the module's
        docstring). An error reply is the result as a RespError value; a lost connection is
        the future's exception."""
        proto = self._proto
        if proto is None:
            return asyncio.ensure_future(self._connect_and_send(args, awaited))
        return self._send(proto, args, awaited)

    async def _connect_and_send(self, args: tuple[Any, ...], awaited: bool) -> Any:
        return await self._send(await self._connect(), args, awaited)

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; RespError for an error reply."""
        reply = await self._send(self._proto or await self._connect(), args)
        if isinstance(reply, RespError):
            raise reply
        return reply

    def _deliver(self, reply: Any) -> None:
        if self._pending:
            fut, _ = self._pending.popleft()
            if not fut.done():
                fut.set_result(reply)

    async def _watchdog(self, proto: _Protocol) -> None:
        # A hung Redis must not hold requests: the oldest unanswered call bounds everyone's wait.
        while self._proto is proto:
            await asyncio.sleep(self.timeout_s / 4)
            if self._pending and time.monotonic() - self._pending[0][1] > self.timeout_s:
                self._drop(proto, TimeoutError("Redis did not answer in time"))

    def _drop(self, proto: _Protocol, exc: Exception) -> None:
        if self._proto is not proto:
            return
        self._proto = None
        if proto.transport is not None:
            proto.transport.abort()
        pending, self._pending = self._pending, deque()
        proto.out.clear()  # held commands go with the connection; their callers get `exc`
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(exc)
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()

    async def subscribe(
        self, channel: str, on_message: Callable[[bytes], None], on_lost: Callable[[], None]
    ) -> asyncio.Transport:
        """A second connection subscribed to `channel`; returns once Redis confirmed, so
        every message published after that reaches `on_message`. `on_lost` is called when
        the connection ends (close the returned transport to end it). Its messages are
        parsed in `data_received` like replies here: the cache channel carries one per
        store, to every instance, where redis-py's pubsub (the rare key events,
        sluice/auth/keys.py) costs a task step and a dict per message."""
        loop = asyncio.get_running_loop()
        transport, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Subscription(on_message, on_lost),
                self.host,
                self.port,
                ssl=self.ssl or None,
            ),
            self.timeout_s,
        )
        setup = []
        if self.password:
            user = (self.username,) if self.username else ()
            setup.append(encode(("AUTH", *user, self.password)))
        setup.append(encode(("SUBSCRIBE", channel)))
        transport.write(b"".join(setup))
        try:
            await asyncio.wait_for(proto.ready, self.timeout_s)
        except BaseException:
            transport.abort()
            raise
        return transport

    async def close(self) -> None:
        """Close the connection (pending calls fail)."""
        if self._proto is not None:
            self._drop(self._proto, ConnectionError("client closed"))
