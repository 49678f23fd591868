"""Sluice's HTTP/1.1 client for providers and the JWKS: keep-alive pools on the event loop,
responses parsed by httptools (llhttp, the parser uvicorn uses on the server side).

Why not a client library: every request Sluice serves makes one upstream call, and that call
was the largest part of a request's CPU. Measured 2026-12-02 on this machine (one core,
uvicorn proxying a fixed JSON from nginx at c=64, /tmp-style experiment kept as
bench/experiments/clients.py): rnet 91 µs of CPU a request, this client 45 µs; aiohttp
measured 81-95 µs and pyreqwest kept requests running after cancellation. rnet hands each
request to a tokio thread and back; here the request is one `transport.write` and the answer
one `data_received` on the loop that already serves the client.

What it does, and no more:
- HTTP/1.1 over TCP or TLS (certificates always checked: SSL_CERT_FILE when set, else
  certifi's Mozilla roots), one pool of idle keep-alive connections per origin;
- bodies framed by Content-Length, chunked encoding or the connection's close (llhttp);
- no redirects followed, no cookies kept, no proxy from the environment (SPEC §6: a provider
  key must never reach anything but the configured URL), no compression asked for;
- cancelling the task awaiting a request or a body aborts its connection, so the upstream
  sees the client leave (SPEC §6); a connection is pooled again only after a whole response;
- a request sent on a pooled connection that the server had closed meanwhile (no byte of an
  answer came back) is sent once more on a fresh connection, as browsers and urllib3 do;
- a stream's unread bytes are bounded: reading pauses above `_PAUSE_ABOVE` buffered bytes
  (not while `read()` gathers a whole body, which holds it all anyway).
Timeouts are the caller's (`sluice.deadlines.within` in sluice/upstream.py).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

import httptools

_IDLE_S = 30.0  # a pooled connection idle longer is closed rather than reused
_MAX_IDLE = 256  # idle connections kept per origin
_PAUSE_ABOVE = 1 << 20  # stop reading a stream while this many bytes wait to be consumed
_URLS_MAX = 4096  # parsed request URLs remembered


class HttpError(Exception):
    """A request that could not be made or an answer that broke."""


class ConnectError(HttpError):
    """The connection could not be opened."""


class BrokenResponse(HttpError):
    """The connection closed or sent something that is not HTTP before the answer ended."""


class UnsendableHeader(ValueError):
    """A header name or value HTTP cannot carry (CR, LF or NUL in it, or not Latin-1)."""


class Response:
    """An answer whose status and headers have arrived; its body is read with
    `read()` or `stream()`, or dropped with `close()`."""

    __slots__ = (
        "_conn",
        "_done",
        "_error",
        "_parts",
        "_size",
        "_waiter",
        "_whole",
        "headers",
        "status",
    )

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn
        self.status = 0
        # By lower-cased name; a repeated header's values joined by ", ".
        self.headers: dict[str, bytes] = {}
        self._parts: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._whole = False  # read() is gathering the whole body: reading never pauses

    # -- fed by the connection -------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        conn = self._conn
        if self._size > _PAUSE_ABOVE and not self._whole and conn is not None and not conn.paused:
            conn.pause_reading()
        self._wake()

    def _end(self, error: Exception | None) -> None:
        self._done = True
        self._error = error
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- read by the caller ----------------------------------------------------------------

    async def _more(self) -> None:
        """Wait for the next piece of the body (or its end); cancelling aborts the connection."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        except BaseException:
            self._abort()
            raise

    def _take(self) -> bytes:
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        self._whole = True
        conn = self._conn
        if conn is not None and conn.paused:  # paused before read() was called
            conn.resume()
        while not self._done:
            await self._more()
        if self._error is not None:
            raise self._error
        return self._take() if self._parts else b""

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives (what arrived since the last piece, joined)."""
        try:
            while True:
                if self._parts:
                    yield self._take()
                    continue
                if self._done:
                    if self._error is not None:
                        raise self._error
                    return
                await self._more()
        finally:
            if not self._done:
                self._abort()

    async def close(self) -> None:
        """Drop the rest of the body: the connection is closed unless the answer is whole."""
        if not self._done:
            self._abort()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None and not self._done:
            self._end(BrokenResponse("response closed before its end"))
            conn.abort()


class _Conn(asyncio.Protocol):
    """One connection to an origin; at most one request on it at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.resp: Response | None = None
        self.head: asyncio.Future[Response] | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.lost = False
        self.paused = False
        self.received = False  # a byte of the current answer arrived
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, head: asyncio.Future[Response]) -> None:
        self.resp = Response(self)
        self.head = head
        self.received = False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenResponse(f"malformed HTTP answer ({type(exc).__name__})"))
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        status = self.parser.get_status_code()
        if resp is None or status < 200:  # 1xx (e.g. 103 Early Hints): the answer follows
            self.raw_headers = []
            return
        resp.status = status
        headers = resp.headers
        for name, value in self.raw_headers:
            key = name.decode("latin-1").lower()
            seen = headers.get(key)
            headers[key] = value if seen is None else seen + b", " + value
        self.raw_headers = []
        head = self.head
        if head is not None:
            self.head = None
            if not head.done():
                head.set_result(resp)

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp._feed(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None or resp.status < 200:  # the end of a 1xx: the answer follows
            return
        self.resp = None
        keep = self.parser.should_keep_alive()
        resp._end(None)
        if keep and not self.lost:
            if self.paused:  # the whole answer arrived at once: what waits is in `resp`
                self.resume()
            self.pool.release(self)
        else:
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        resp = self.resp
        if resp is None:
            return
        self.resp = None
        framed = resp.headers.get("content-length") is not None or b"chunked" in (
            resp.headers.get("transfer-encoding") or b""
        )
        if resp.status >= 200 and self.head is None and not framed and exc is None:
            resp._end(None)  # a body delimited by the connection's close: whole
            return
        self._fail(BrokenResponse("connection closed before the answer ended"), resp)

    def _fail(self, error: Exception, resp: Response | None = None) -> None:
        head = self.head
        if head is not None:
            self.head = None
            if not head.done():
                head.set_exception(error)
        resp = resp or self.resp
        self.resp = None
        if resp is not None and not resp._done:
            resp._end(error)

    def pause_reading(self) -> None:
        self.paused = True
        self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if not self.lost:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.lost = True
        self.resp = None
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Idle keep-alive connections to one origin (scheme, host, port)."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.idle: list[_Conn] = []

    async def acquire(self) -> tuple[_Conn, bool]:
        """A connection and whether it was pooled (it may have been closed meanwhile)."""
        idle = self.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.lost or conn.transport.is_closing() or now - conn.idle_since > _IDLE_S:
                conn.abort()
                continue
            return conn, True
        return await self.connect(), False

    async def connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Conn(self),
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"could not connect ({type(exc).__name__})") from None
        return conn

    def release(self, conn: _Conn) -> None:
        if len(self.idle) >= _MAX_IDLE:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class Client:
    """Pools by origin; `request` returns once an answer's status and headers are in."""

    def __init__(self, user_agent: str, cafile: str | None = None) -> None:
        self.user_agent = user_agent
        self._cafile = cafile
        self._tls: ssl.SSLContext | None = None
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._urls: dict[str, tuple[_Pool, str, str]] = {}  # url → pool, target, host header

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self._cafile or trusted_cas())
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def _address(self, url: str) -> tuple[_Pool, str, str]:
        """The pool, request target and Host header for `url` (remembered: the same few
        provider URLs come back on every request)."""
        known = self._urls.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsendableHeader(f"not an http(s) URL: {parts.scheme or '?'}://…")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(parts.hostname, port, self._context() if tls else None)
        host = parts.netloc.rpartition("@")[2]  # never credentials in a Host header
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        known = (pool, target, host)
        if len(self._urls) < _URLS_MAX:
            self._urls[url] = known
        return known

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        query: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Send one request; raises HttpError (or UnsendableHeader) when it cannot be made."""
        pool, target, host = self._address(url)
        if query:
            target += ("&" if "?" in target else "?") + urlencode(query)
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\nuser-agent: {self.user_agent}\r\n"]
        if headers:
            lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        lines.append(f"accept-encoding: identity\r\ncontent-length: {len(body)}\r\n\r\n")
        head = "".join(lines)
        # Six fixed lines and one a header, each ending in CRLF: any other CR or LF (or a
        # NUL) came from a name or value and would break the request's framing.
        lines_expected = len(headers or ()) + 6
        if head.count("\n") != lines_expected or head.count("\r") != lines_expected or "\0" in head:
            raise UnsendableHeader("a header name or value contains CR, LF or NUL")
        try:
            data = head.encode("latin-1") + body
        except UnicodeEncodeError:
            raise UnsendableHeader("a header is not Latin-1") from None
        conn, pooled = await pool.acquire()
        try:
            return await self._exchange(conn, data)
        except BrokenResponse:
            if not pooled or conn.received:
                raise
        # The pooled connection had been closed by the server: once more on a new one.
        return await self._exchange(await pool.connect(), data)

    @staticmethod
    async def _exchange(conn: _Conn, data: bytes) -> Response:
        """Send one request on `conn` and wait for the answer's head."""
        head: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.send(data, head)
        try:
            return await head
        except BaseException:
            conn.abort()  # cancelled or failed before the headers: the connection goes
            raise

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._urls.clear()


def trusted_cas() -> str:
    """What servers' certificates are checked against: the bundle SSL_CERT_FILE names when
    set (a private CA for a self-hosted server goes there), else certifi's Mozilla roots.
    Checking is never off."""
    path = os.environ.get("SSL_CERT_FILE")
    if path and os.path.isfile(path):
        return path
    import certifi

    return str(certifi.where())
