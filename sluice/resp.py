"""A small pipelined Redis client (RESP2) for the admission hot path.

Why not redis-py's asyncio client: a round trip through it costs ~100 µs of Python on top of
the network (connection-pool checkout, command packing, response callbacks), which is most
of the Redis backend's budget per request. Here every request shares one connection:
commands are written as they come and replies are matched to callers in order (Redis
answers a connection's commands in order), so concurrent requests never wait for each other.

A reply slower than `timeout_s` drops the connection and fails every waiting call, so a hung
Redis costs at most that long before the caller falls back (SPEC §6).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit


class RespError(Exception):
    """An error reply from Redis (e.g. NOSCRIPT, WRONGTYPE)."""


def encode(args: tuple[Any, ...]) -> bytes:
    """One command in RESP's array-of-bulk-strings form."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """One reply; error replies come back as RespError values (raised by the caller)."""
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else (await reader.readexactly(n + 2))[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [await read_reply(reader) for _ in range(n)]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RespError(rest.decode(errors="replace"))
    raise ConnectionError(f"unexpected reply from Redis: {line[:20]!r}")


class RespClient:
    """One pipelined connection to the Redis at `url` (redis:// or rediss://)."""

    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 6379
        self.ssl = u.scheme == "rediss"
        self.username = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        self.db = int(u.path.strip("/") or 0)
        self.timeout_s = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._writer is not None:
                return self._writer
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl or None), self.timeout_s
            )
            # AUTH and SELECT are written before any caller can see the connection, so every
            # later command runs after them.
            setup: list[tuple[Any, ...]] = []
            if self.password:
                setup.append(
                    ("AUTH", self.username, self.password)
                    if self.username
                    else ("AUTH", self.password)
                )
            if self.db:
                setup.append(("SELECT", self.db))
            waits = [self._send(writer, cmd) for cmd in setup]
            self._writer = writer
            self._tasks = [
                asyncio.ensure_future(self._read_loop(reader, writer)),
                asyncio.ensure_future(self._watchdog(writer)),
            ]
            for fut in waits:
                if isinstance(await fut, RespError):
                    self._drop(writer, ConnectionError("Redis refused AUTH/SELECT"))
                    raise ConnectionError("Redis refused AUTH/SELECT")
            return writer

    def _send(self, writer: asyncio.StreamWriter, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fut, time.monotonic()))
        writer.write(encode(args))
        return fut

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; RespError for an error reply."""
        reply = await self._send(self._writer or await self._connect(), args)
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                reply = await read_reply(reader)
                fut, _ = self._pending.popleft()
                if not fut.done():
                    fut.set_result(reply)
        except (OSError, EOFError, ConnectionError, asyncio.IncompleteReadError, IndexError) as exc:
            self._drop(writer, ConnectionError(f"Redis connection lost: {type(exc).__name__}"))

    async def _watchdog(self, writer: asyncio.StreamWriter) -> None:
        # A hung Redis must not hold requests: the oldest unanswered call bounds everyone's wait.
        while self._writer is writer:
            await asyncio.sleep(self.timeout_s / 4)
            if self._pending and time.monotonic() - self._pending[0][1] > self.timeout_s:
                self._drop(writer, TimeoutError("Redis did not answer in time"))

    def _drop(self, writer: asyncio.StreamWriter, exc: Exception) -> None:
        if self._writer is not writer:
            return
        self._writer = None
        writer.close()
        pending, self._pending = self._pending, deque()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(exc)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def close(self) -> None:
        """Close the connection (pending calls fail)."""
        if self._writer is not None:
            self._drop(self._writer, ConnectionError("client closed"))
