"""sluice.httpclient against a scripted loopback server: keep-alive reuse, a pooled connection
the server closed, bodies framed three ways, a stream read as it arrives, 1xx answers,
broken and malformed answers, and what a request refuses to send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sluice.httpclient import BrokenResponse, Client, ConnectError, UnsendableHeader

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Scripted:
    """A TCP server that runs `script(reader, writer, n)` for its n-th connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def whole(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_keep_alive_reuses_one_connection_and_sends_what_was_asked() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            req = await srv.read_request(r)
            w.write(whole(b"answer %d" % len(srv.requests), b"x-twice: a\r\nX-Twice: b\r\n"))
            assert req

    client = Client("sluice-test")
    async with Scripted(script) as srv:
        for i in (1, 2, 3):
            resp = await client.request(
                "POST",
                srv.url + "/v1/chat?x=1",
                {"authorization": "Bearer k"},
                b"{}",
                [("y", "2 3")],
            )
            assert resp.status == 200 and await resp.read() == b"answer %d" % i
            assert resp.headers.get("x-twice") == b"a, b"
        client.close()
    assert srv.connections == 1
    first = srv.requests[0]
    assert first.startswith(b"POST /v1/chat?x=1&y=2+3 HTTP/1.1\r\n")
    for line in (b"host: 127.0.0.1:", b"user-agent: sluice-test", b"authorization: Bearer k"):
        assert line in first
    assert first.endswith(b"content-length: 2\r\n\r\n{}")


async def test_a_pooled_connection_the_server_closed_is_replaced_once() -> None:
    """The server answers, then closes the connection while it idles in the pool: the next
    request goes out again on a fresh connection, and succeeds."""

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(whole(b"from %d" % n))
        await w.drain()
        w.close()

    client = Client("t")
    async with Scripted(script) as srv:
        assert await (await client.request("GET", srv.url)).read() == b"from 1"
        await asyncio.sleep(0.05)  # the close reaches the pooled connection (or not: both work)
        assert await (await client.request("GET", srv.url)).read() == b"from 2"
        client.close()
    assert srv.connections == 2


async def test_bodies_framed_by_chunks_or_by_the_close_are_read_whole() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        if n == 1:
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            w.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")

    client = Client("t")
    async with Scripted(script) as srv:
        assert await (await client.request("GET", srv.url)).read() == b"hello world"
        client.close()  # a fresh connection for the second framing
        assert await (await client.request("GET", srv.url)).read() == b"until the end"
    assert srv.connections == 2


async def test_a_whole_body_larger_than_the_pause_mark_is_read() -> None:
    """read() gathers everything: reading is never paused under it (a large embeddings
    answer), even when the body had started arriving before read() was called."""
    big = b"x" * (3 << 20)

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big))
        for i in range(0, len(big), 65536):
            w.write(big[i : i + 65536])
            await w.drain()

    client = Client("t")
    async with Scripted(script) as srv:
        resp = await client.request("GET", srv.url)
        await asyncio.sleep(0.2)  # more than the pause mark arrives before read()
        assert await asyncio.wait_for(resp.read(), 10) == big
        client.close()


async def test_a_stream_is_read_as_it_arrives() -> None:
    """The second event is sent only after the client has read the first."""
    first_read = asyncio.Event()

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        w.write(b"transfer-encoding: chunked\r\n\r\n")
        w.write(b"b\r\ndata: one\n\n\r\n")
        await asyncio.wait_for(first_read.wait(), 5)
        w.write(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")

    client = Client("t")
    async with Scripted(script) as srv:
        resp = await client.request("GET", srv.url)
        assert resp.headers.get("content-type") == b"text/event-stream"
        got: list[bytes] = []
        pieces: AsyncIterator[bytes] = resp.stream()
        async for piece in pieces:
            got.append(piece)
            first_read.set()
        client.close()
    assert got == [b"data: one\n\n", b"data: two\n\n"]


async def test_an_early_hint_is_not_the_answer() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + whole(b"real"))

    client = Client("t")
    async with Scripted(script) as srv:
        resp = await client.request("GET", srv.url)
        assert resp.status == 200 and resp.headers.get("link") is None
        assert await resp.read() == b"real"
        client.close()


@pytest.mark.parametrize(
    "answer", [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", b"NOT HTTP\r\n\r\n"]
)
async def test_a_cut_or_malformed_answer_is_broken(answer: bytes) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await srv.read_request(r)
        w.write(answer)
        await w.drain()

    client = Client("t")
    async with Scripted(script) as srv:
        with pytest.raises(BrokenResponse):
            resp = await client.request("GET", srv.url)
            await resp.read()
        client.close()
    assert srv.connections == 1  # a broken answer on a fresh connection is not re-sent


async def test_what_cannot_be_sent_is_refused_before_connecting() -> None:
    client = Client("t")
    for headers in ({"x-a": "v\r\nx-injected: 1"}, {"x-a": "v\n"}, {"x-a\r": "v"}, {"x-a": "\0"}):
        with pytest.raises(UnsendableHeader):
            await client.request("GET", "http://127.0.0.1:9/", headers)
    with pytest.raises(UnsendableHeader):
        await client.request("GET", "http://127.0.0.1:9/", {"x-a": "snowman ☃"})
    with pytest.raises(UnsendableHeader):
        await client.request("GET", "ftp://127.0.0.1/")
    with pytest.raises(ConnectError):
        await client.request("GET", "http://127.0.0.1:9/")  # the discard port: refused
