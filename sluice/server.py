"""The HTTP/1.1 server protocol: httptools (llhttp) parsing, ASGI for the app, run by
uvicorn's `Server` (sockets, lifespan, workers, signals and graceful shutdown stay uvicorn's).

Why not uvicorn's HttpToolsProtocol: counted with callgrind (2026-12-02, one request at a
time, a fixed 200 answer), it spent ~121,000 instructions a request where a bare httptools
protocol spent ~21,000, and Sluice as a whole spends ~660,000. Its per-request parts cost:
an `asyncio.Event` and a cycle object built with eleven keyword arguments, the body copied
into an ASGI message through `Event.wait`, header checks by regular expression, a keep-alive
timer made and cancelled per response. Here:

- a request's body is read from its cycle (`SluiceCycle.receive`, a future only when the
  body has not all arrived);
- a whole answer (`Request.respond`) goes out with `SluiceCycle.respond_whole`: status
  line, headers, Content-Length and body in one write, without two ASGI messages; streams
  use `send` with uvicorn's framing rules (Content-Length or chunked, HEAD, 204/304,
  `connection: close`);
- header names and values are checked by two `bytes.translate` passes with tables built
  from uvicorn's own patterns, so what is refused is the same;
- one keep-alive timer per connection: armed once, it closes the connection when it has
  been idle for the whole timeout, else re-arms for the rest.

What uvicorn's protocol does and this one does too: pipelined requests answered in order,
`Expect: 100-continue`, reading paused above 64 KiB of unread body and writing awaited
while the transport is paused, `http.disconnect` once the client leaves, a 400 for a
request that is not HTTP, a 500 when the app fails before answering, `shutdown()` closing
idle connections and ending busy ones after their response. Not here: websockets (an
Upgrade request is served as plain HTTP, as uvicorn does without a websocket library),
`limit_concurrency` and the access log (Sluice sets neither; its audit log is its own).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

log = logging.getLogger("uvicorn.error")

_HIGH_WATER = 65536  # unread request body above which reading pauses
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}


def _check_table(refused: Callable[[bytes], object]) -> bytes:
    """A `bytes.translate` table marking with "!" every byte `refused` matches: one C pass
    over all names (or values) instead of a regular-expression scan, same verdict."""
    return bytes(b"!"[0] if refused(bytes([b])) else b"a"[0] for b in range(256))


# uvicorn's own patterns decide; upper case is marked in names too (they are sent as given
# on the fast path, so a name with upper case takes `send`, which lower-cases it).
_NAME_CHECK = _check_table(lambda b: HEADER_RE.search(b) or b.isupper())
_VALUE_CHECK = _check_table(HEADER_VALUE_RE.search)


class SluiceHttpProtocol(asyncio.Protocol):
    """One client connection: parses requests and runs a `SluiceCycle` task for each."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.keep_alive_s: float = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        try:  # answer the first of pipelined requests even when the client closes after them
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # httptools < 0.6.3
            pass
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.scope_base: dict[str, Any] = {}
        self.cycle: SluiceCycle | None = None  # the newest request (its body is fed here)
        self.pipeline: deque[SluiceCycle] = deque()  # parsed, waiting for the one before
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.idle_since: float | None = None  # loop time the last response ended
        self.keep_alive_timer: asyncio.TimerHandle | None = None

    # --- the connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)
        self.scope_base = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "scheme": "https" if is_ssl(self.transport) else "http",
            "root_path": self.root_path,
        }

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.keep_alive_timer is not None:
            self.keep_alive_timer.cancel()
            self.keep_alive_timer = None
        for cycle in (self.cycle, *self.pipeline):
            if cycle is not None:
                if not cycle.response_complete:
                    cycle.disconnected = True
                cycle.wake()
        self.resume_writing()
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.idle_since = None  # busy: bytes of a request arrived
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no websockets: the request is served as plain HTTP, as uvicorn's is
        except httptools.HttpParserError:
            log.warning("Invalid HTTP request received.")
            self._refuse(b"Invalid HTTP request received.")

    def _refuse(self, msg: bytes) -> None:
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(msg), msg)
        )
        self.transport.write(b"".join(head))
        self.transport.close()

    # --- the parser's callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace; RFC 9110 excludes it
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope = self.scope_base.copy()
        scope["method"] = parser.get_method().decode("ascii")
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        scope["headers"] = self.headers
        scope["state"] = self.app_state.copy()
        if version != "1.1":
            scope["http_version"] = version
        keep_alive = version != "1.0" and parser.should_keep_alive()
        cycle = SluiceCycle(self, scope, keep_alive, self.expect_continue)
        before = self.cycle
        self.cycle = cycle
        if before is None or before.response_complete:
            self._start(cycle)
        else:  # pipelined: it runs when the one before has answered
            self.pause_reading()
            self.pipeline.appendleft(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > _HIGH_WATER:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.wake()

    # --- requests -------------------------------------------------------------------------

    def _start(self, cycle: SluiceCycle) -> None:
        tasks = self.server_state.tasks
        task = self.loop.create_task(cycle.run_asgi(self.app))
        task.add_done_callback(tasks.discard)
        tasks.add(task)

    def on_response_complete(self, cycle: SluiceCycle) -> None:
        """A response has been sent whole: the next pipelined request, or wait idle."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if not cycle.keep_alive:
            self.transport.close()
            return
        self.resume_reading()
        if self.pipeline:
            self._start(self.pipeline.pop())
            return
        self.idle_since = self.loop.time()
        if self.keep_alive_timer is None:
            self.keep_alive_timer = self.loop.call_later(self.keep_alive_s, self._keep_alive)

    def _keep_alive(self) -> None:
        self.keep_alive_timer = None
        since = self.idle_since
        if since is None:  # a request is in flight; its response arms the timer again
            return
        idle = self.loop.time() - since
        if idle >= self.keep_alive_s:
            if not self.transport.is_closing():
                self.transport.close()
        else:
            self.keep_alive_timer = self.loop.call_later(self.keep_alive_s - idle, self._keep_alive)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close an idle connection, end a busy one after its
        response."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    # --- flow control ---------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self.drain_waiters = self.drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def drain(self) -> None:
        waiter = self.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter


class SluiceCycle:
    """One request and its response: the ASGI `receive` and `send`, and `respond_whole`."""

    __slots__ = (
        "body",
        "chunked",
        "delivered",
        "disconnected",
        "keep_alive",
        "left",
        "more_body",
        "proto",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiter",
        "waiting_for_100_continue",
    )

    def __init__(
        self, proto: SluiceHttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        self.proto = proto
        self.transport = proto.transport
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect
        self.body = bytearray()
        self.more_body = True
        self.delivered = False  # the body's last message has been received by the app
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked: bool | None = None
        self.left = 0  # bytes the Content-Length still owes
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.transport.close()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.transport.close()

    async def _send_500(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    # --- ASGI -----------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
        while not (self.disconnected or self.response_complete):
            if self.body or (not self.more_body and not self.delivered):
                break
            self.proto.resume_reading()
            waiter = self.waiter = self.proto.loop.create_future()
            await waiter
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        body = bytes(self.body)
        self.body = bytearray()
        self.proto.resume_reading()
        if not self.more_body:
            self.delivered = True
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        if self.proto.write_paused and not self.disconnected:
            await self.proto.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response completed.")

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        head = [STATUS_LINE[status]]
        closing = False
        for name, value in (*self.proto.server_state.default_headers, *headers):
            if HEADER_RE.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self.chunked is None:
                self.left = int(value.decode())
                self.chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.left = 0
                self.chunked = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                closing = True
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        if self.chunked is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head))

    def _body(self, body: bytes, more: bool) -> None:
        if self.scope["method"] == "HEAD":
            self.left = 0
        elif self.chunked:
            out = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more:
                out.append(b"0\r\n\r\n")
            if out:
                self.transport.write(b"".join(out))
        else:
            if len(body) > self.left:
                raise RuntimeError("Response content longer than Content-Length")
            self.left -= len(body)
            if body:
                self.transport.write(body)
        if not more:
            if self.left != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self._complete()

    def _complete(self) -> None:
        self.response_complete = True
        self.wake()
        self.proto.on_response_complete(self)

    def respond_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Send a whole answer with its Content-Length in one write, as `send` would for the
        two messages; False (nothing sent) when `send` must do it."""
        if (
            self.response_started
            or self.disconnected
            or self.proto.write_paused
            or status in (204, 304)
            or self.scope["method"] == "HEAD"
        ):
            return False
        parts = [STATUS_LINE[status]]
        for name, value in (*self.proto.server_state.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        names = b"".join(parts[1::4])
        if (
            b"!" in names.translate(_NAME_CHECK)
            or b"!" in b"\t".join(parts[3::4]).translate(_VALUE_CHECK)
            or b"content-length" in names  # framing and keep-alive: `send`'s to handle
            or b"transfer-encoding" in names
            or b"connection" in names
        ):
            return False  # `send` refuses, lower-cases or treats it specially
        parts.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.response_started = True
        self.waiting_for_100_continue = False
        self.transport.write(b"".join(parts))
        self._complete()
        return True
