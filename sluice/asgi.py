"""The thin ASGI layer: a request view, body reading with the size limit, response senders.

Pure ASGI rather than a framework's Request/Response objects: on the hot path every
allocation shows up in the benchmark.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from random import getrandbits
from typing import Any
from urllib.parse import parse_qsl

import orjson

from sluice.deadlines import Wheel
from sluice.errors import GatewayError
from sluice.server import SluiceCycle

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
JSON_HEADERS: RawHeaders = [(b"content-type", b"application/json")]
SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


_NO_BODY = frozenset({204, 304})  # statuses that must not carry a Content-Length (RFC 9110)


def new_request_id() -> str:
    """A fresh request id in seed 004's shape: req_<ms>_<random>.

    An id is a label, not a secret: the process's PRNG (seeded from the OS at start, afresh
    in every worker) costs ~0.3 µs, where os.urandom was a syscall of up to ~20 µs here."""
    return f"req_{int(time.time() * 1000)}_{getrandbits(48):012x}"


class Request:
    """One HTTP request: lower-cased headers, query, the body read once under a size limit."""

    __slots__ = (
        "_body",
        "_query",
        "headers",
        "method",
        "path",
        "receive",
        "request_id",
        "response_headers",
        "scope",
        "send",
        "started",
        "usage",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started = time.perf_counter()
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        rid = self.headers.get("x-request-id")
        self.request_id = rid if rid and _SANE_ID.match(rid) else new_request_id()
        self.response_headers: RawHeaders = [(b"x-request-id", self.request_id.encode())]
        self._body: bytes | None = None
        self._query: dict[str, str] | None = None
        self.usage: Any = None  # the UsageRecord, once the pipeline has taken the request

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (first value wins)."""
        if self._query is None:
            qs = self.scope.get("query_string", b"").decode("latin-1")
            self._query = {}
            for k, v in parse_qsl(qs, keep_blank_values=True):
                self._query.setdefault(k, v)
        return self._query

    @property
    def client_ip(self) -> str:
        """The peer address (no proxy headers are trusted)."""
        client = self.scope.get("client")
        return str(client[0]) if client else ""

    def cookie(self, name: str) -> str | None:
        """One cookie's value."""
        raw = self.headers.get("cookie")
        if not raw or name not in raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except Exception:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 as soon as Content-Length or the bytes read pass `limit`."""
        if self._body is not None:
            return self._body
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise _too_large(limit)
            except ValueError:
                raise GatewayError(
                    "VALIDATION_ERROR", "invalid Content-Length", param="Content-Length"
                ) from None
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone()
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def respond(self, status: int, body: bytes, headers: RawHeaders = JSON_HEADERS) -> None:
        """Send a whole response with the collected response headers.

        With its Content-Length: without one the server frames the body as chunked, which
        costs both sides more for a body that is already whole."""
        cycle = getattr(self.send, "__self__", None)
        if type(cycle) is SluiceCycle and cycle.respond_whole(
            status, [*headers, *self.response_headers], body
        ):
            return
        sized = [(b"content-length", b"%d" % len(body))] if status not in _NO_BODY else []
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, *sized, *self.response_headers],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    async def json(self, status: int, obj: Any) -> None:
        """Send a JSON response."""
        await self.respond(status, orjson.dumps(obj))

    async def start_stream(self, status: int = 200, headers: RawHeaders = SSE_HEADERS) -> None:
        """Send the status line and headers of a streamed response."""
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, *self.response_headers],
            }
        )

    async def write(self, data: bytes) -> None:
        """Send one piece of a streamed body at once (no buffering)."""
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        """Finish a streamed body."""
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    def add_header(self, name: str, value: str) -> None:
        """Add a response header (must be called before the response starts)."""
        self.response_headers.append((name.encode("latin-1"), value.encode("latin-1")))


class ClientGone(Exception):
    """The client disconnected."""


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        "PAYLOAD_TOO_LARGE", f"request body is larger than {limit} bytes", param="body"
    )


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the body must already be read)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


# A non-streamed request watches for its client leaving only once it has run this long:
# most are answered sooner, and the watch costs a task (see DisconnectWatch).
WATCH_AFTER_S = 0.05


class DisconnectWatch:
    """Cancels `task` when the client disconnects (the body must already be read).

    Watching takes a task awaiting `receive`; most answers are done in a few ms, so with
    `delay` > 0 that task is only started once the request has run `delay` seconds: the
    start waits on the deadline wheel (`sluice.deadlines.Wheel`), a dict entry added and
    removed per request instead of a timer. A client that leaves is noticed within `delay`
    (and a tick). `stop()` (in a `finally`) ends the watch.
    """

    __slots__ = ("_key", "_receive", "_task", "_watcher", "_wheel")

    def __init__(self, task: asyncio.Task[Any] | None, receive: Receive, delay: float) -> None:
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Future[None] | None = None
        self._wheel: Wheel | None = None  # set while the late start waits
        self._key = 0  # its slot on the wheel
        if task is None:
            return
        if delay > 0:
            self._wheel = Wheel.of(task.get_loop())
            self._wheel.add(self, delay)
        else:
            self._start()

    def _expire(self) -> None:  # the wheel: the delay has passed
        self._wheel = None
        self._start()

    def _start(self) -> None:
        self._watcher = asyncio.ensure_future(wait_disconnect(self._receive))
        self._watcher.add_done_callback(self._on_done)

    def _on_done(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and self._task is not None:
            self._task.cancel()

    @property
    def gone(self) -> bool:
        """Whether the client has disconnected."""
        w = self._watcher
        return w is not None and w.done() and not w.cancelled()

    def stop(self) -> None:
        """Stop watching."""
        if self._wheel is not None:
            self._wheel.remove(self)
            self._wheel = None
        w = self._watcher
        if w is not None:
            w.remove_done_callback(self._on_done)
            w.cancel()


async def aiter_bytes(data: bytes) -> AsyncIterator[bytes]:
    """One bytes object as an async iterator (to replay cached streams)."""
    yield data
