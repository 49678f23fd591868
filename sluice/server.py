"""The HTTP server protocol: uvicorn's httptools protocol, with two changes that matter on
the hot path.

1. uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body with the next message: two `write` syscalls and two
TCP segments for every whole answer, so the client is woken twice. Here the head is held
until the next write (the body follows in the same task step) or, when nothing follows in
this loop iteration (a stream waiting for its first event, a 204), until the loop's next
turn. A whole answer leaves in one write; nothing is ever held longer than one iteration.

2. A whole answer (`Request.respond`) skips the two ASGI messages: `SluiceCycle.respond_whole`
writes status line, headers, Content-Length and body at once. uvicorn checks every header
name and value with a regular expression and lower-cases each name (~1 µs a header, and a
limited, cached answer carries ~15); here all names are checked in one `bytes.translate`
pass and all values in another, with tables built from uvicorn's own patterns, so what is
refused is the same. Anything unusual (a name with upper case, a HEAD request, paused
writing, a header uvicorn treats specially, an access log) goes through uvicorn's `send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

_HEAD = b"HTTP/1."  # every status line uvicorn writes starts so; a body chunk never does


class _HeadHolding:
    """A transport that joins the response head to the write after it."""

    __slots__ = ("_held", "_loop", "_t")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._t.write(held + bytes(data))
        elif data[:7] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self._release)
        else:
            self._t.write(data)

    def _release(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._t.is_closing():
                self._t.write(held)

    def write_whole(self, data: bytes) -> None:
        """A whole response: written at once (a head held before it goes first)."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._t.write(data)

    def close(self) -> None:
        self._release()
        self._t.close()

    def abort(self) -> None:
        self._held = None
        self._t.abort()

    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, is_closing, ...
        return getattr(self._t, name)


class SluiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a head-holding transport, with one keep-alive timer
    per connection instead of one per response."""

    _idle_since: float | None = None  # loop time the last response ended; None while busy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        held = _HeadHolding(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(held)  # type: ignore[arg-type]

    # uvicorn arms a `call_later` for the keep-alive timeout after every response and cancels
    # it when the next request's bytes arrive: with uvloop a timer handle made and a libuv
    # timer started and stopped per request, ~11 % of the server layer's CPU answering a
    # fixed body at c=64 (py-spy, 2026-12-02). Here the timer is armed once and, when it
    # fires, closes the connection only if it has been idle for the whole timeout; otherwise
    # it is armed again for the rest. The timeout itself is unchanged.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy: bytes of a request arrived

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request waits: start it
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_check
            )

    def _keep_alive_check(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:  # a request is in flight; its response arms the timer again
            return
        idle = self.loop.time() - since
        if idle >= self.timeout_keep_alive:
            self.timeout_keep_alive_handler()
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive - idle, self._keep_alive_check
            )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None


# Headers uvicorn's `send` gives a meaning to (framing, keep-alive): left to it.
_FRAMING = (b"content-length", b"transfer-encoding", b"connection")


def _check_table(refused: Callable[[bytes], object]) -> bytes:
    """A `bytes.translate` table marking with "!" every byte `refused` matches: one C pass
    over all names (or values) instead of a regular-expression scan, same verdict."""
    return bytes(b"!"[0] if refused(bytes([b])) else b"a"[0] for b in range(256))


# uvicorn's own patterns decide; upper case is marked too (uvicorn lower-cases names).
_NAME_CHECK = _check_table(lambda b: HEADER_RE.search(b) or b.isupper())
_VALUE_CHECK = _check_table(HEADER_VALUE_RE.search)


class SluiceCycle(RequestResponseCycle):
    """uvicorn's request/response cycle with a one-call path for whole answers."""

    def respond_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Send a whole answer with its Content-Length, as `send` would for the two
        messages; False (nothing sent) when uvicorn's `send` must do it."""
        if (
            self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
            or status in (204, 304)
            or self.scope["method"] == "HEAD"
        ):
            return False
        parts = [STATUS_LINE[status]]
        for name, value in (*self.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        names = b"".join(parts[1::4])
        if (
            b"!" in names.translate(_NAME_CHECK)
            or b"!" in b"\t".join(parts[3::4]).translate(_VALUE_CHECK)
            or any(special in names for special in _FRAMING)
        ):
            return False  # uvicorn's send refuses, lower-cases or treats it specially
        parts.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        transport = self.transport
        if isinstance(transport, _HeadHolding):
            transport.write_whole(b"".join(parts))
        else:
            transport.write(b"".join(parts))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            transport.close()
        self.on_response()
        return True


# uvicorn's protocol makes its cycles from this module global; SluiceHttpProtocol's cycles
# (and any other httptools protocol's in this process) are SluiceCycles, which behave
# exactly as uvicorn's until `respond_whole` is called.
httptools_impl.RequestResponseCycle = SluiceCycle  # type: ignore[misc]
