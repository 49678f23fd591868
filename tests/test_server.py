"""sluice/server.py, Sluice's HTTP/1.1 protocol under uvicorn's Server: driven over real
sockets (keep-alive, pipelining, 100-continue, chunked bodies both ways, HEAD, a request that
is not HTTP, a client that leaves, the keep-alive timeout, an app that fails), and its
one-write path for whole answers checked byte for byte against `send`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from sluice.server import SluiceCycle, SluiceHttpProtocol

EVENTS: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/echo answers the body; /stream streams two pieces; /hang waits for the client to
    leave; /fail raises; /whole uses the one-write path."""
    if scope["type"] == "lifespan":
        while (msg := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if path == "/fail":
        raise ValueError("boom")
    if path == "/hang":
        EVENTS.append((await receive())["type"])
        return
    if path == "/whole":
        assert send.__self__.respond_whole(200, [(b"content-type", b"text/plain")], b"whole")
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": False})
        return
    answer = b"%s %s %s" % (scope["method"].encode(), scope["raw_path"], body)
    headers = [(b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=SluiceHttpProtocol,
        lifespan="on",
        log_level="critical",
        timeout_keep_alive=1,
        server_header=False,
        date_header=False,
    )
    srv = uvicorn.Server(config)
    task = asyncio.ensure_future(srv.serve(sockets=[sock]))
    while not srv.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    srv.should_exit = True
    await asyncio.wait_for(task, 10)


async def exchange(port: int, data: bytes, until: bytes, timeout: float = 5) -> bytes:
    """Send `data`, read until `until` has been seen (or the connection closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(timeout):
            while until not in got:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        writer.close()
    return got


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (
        path,
        len(body),
        extra,
        body,
    )


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(server: int) -> None:
    two = post(b"/echo?a=1", b"first") + post(b"/echo", b"second")
    got = await exchange(server, two, b"POST /echo second")
    assert got.count(b"HTTP/1.1 200 OK") == 2
    assert got.index(b"POST /echo first") < got.index(b"POST /echo second")


async def test_expect_continue_and_a_chunked_request_body(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 16" in head
    assert await reader.readexactly(16) == b"POST /echo abcde"
    writer.close()


async def test_streams_are_chunked_and_head_gets_no_body(server: int) -> None:
    got = await exchange(server, post(b"/stream", b""), b"0\r\n\r\n")
    assert b"transfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n" in got
    got = await exchange(server, b"HEAD /echo HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n")


async def test_the_one_write_answer_and_a_failing_app(server: int) -> None:
    got = await exchange(server, post(b"/whole", b""), b"whole")
    assert got.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n")
    assert got.endswith(b"content-length: 5\r\n\r\nwhole")
    got = await exchange(server, post(b"/fail", b""), b"Internal Server Error")
    assert got.startswith(b"HTTP/1.1 500 Internal Server Error") and b"connection: close" in got


async def test_a_request_that_is_not_http_gets_a_400(server: int) -> None:
    got = await exchange(server, b"NOT HTTP AT ALL\r\n\r\n", b"received.")
    assert got.startswith(b"HTTP/1.1 400 Bad Request") and b"connection: close" in got


async def test_a_client_that_leaves_is_told_and_idle_connections_time_out(server: int) -> None:
    EVENTS.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(post(b"/hang", b"x"))
    await asyncio.sleep(0.1)
    writer.close()
    for _ in range(100):
        if EVENTS:
            break
        await asyncio.sleep(0.02)
    assert EVENTS == ["http.disconnect"]
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(post(b"/echo", b"k"))
    await asyncio.wait_for(reader.readuntil(b"POST /echo k"), 5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    assert 0.8 < loop.time() - t0 < 2.5  # timeout_keep_alive=1, checked by one timer
    writer.close()


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _State:
    default_headers: list[tuple[bytes, bytes]] = []
    total_requests = 0


class _Proto:
    """What a cycle uses of its protocol."""

    def __init__(self, rec: Recorder) -> None:
        self.transport = rec
        self.server_state = _State()
        self.write_paused = False
        self.done: list[bool] = []

    def on_response_complete(self, cycle: SluiceCycle) -> None:
        self.done.append(True)
        if not cycle.keep_alive:
            self.transport.close()


def _cycle(rec: Recorder, method: str = "POST", keep_alive: bool = True) -> SluiceCycle:
    proto = _Proto(rec)
    return SluiceCycle(proto, {"method": method, "type": "http"}, keep_alive, False)  # type: ignore[arg-type]


HEADERS = [(b"content-type", b"application/json"), (b"x-ratelimit-reset-requests", b"6m0s")]


async def test_respond_whole_writes_what_send_writes() -> None:
    """The one-call path for whole answers is byte for byte the two messages' output, ends
    the cycle the same way, and closes a connection that is not kept alive."""
    for keep_alive in (True, False):
        ours, theirs = Recorder(), Recorder()
        a, b = _cycle(ours, keep_alive=keep_alive), _cycle(theirs, keep_alive=keep_alive)
        assert a.respond_whole(200, HEADERS, b'{"ok":1}')
        sized = [*HEADERS, (b"content-length", b"8")]  # what Request.respond sends otherwise
        await b.send({"type": "http.response.start", "status": 200, "headers": sized})
        await b.send({"type": "http.response.body", "body": b'{"ok":1}'})
        assert b"".join(ours.writes) == b"".join(theirs.writes)
        assert len(ours.writes) == 1
        assert ours.writes[0].startswith(b"HTTP/1.1 200 OK\r\ncontent-type: application/json")
        assert a.response_complete and a.proto.done == [True]  # type: ignore[attr-defined]
        assert ours.closed is (not keep_alive)


async def test_respond_whole_leaves_the_unusual_to_send() -> None:
    """A value `send` would refuse, a framing header, upper case, HEAD, 204: nothing is
    written and the caller falls back to `send`."""
    for status, method, headers in [
        (200, "POST", [(b"x-bad", b"a\r\nset-cookie: x")]),
        (200, "POST", [(b"connection", b"close")]),
        (200, "POST", [(b"X-Upper", b"1")]),
        (200, "HEAD", HEADERS),
        (204, "POST", HEADERS),
    ]:
        rec = Recorder()
        cycle = _cycle(rec, method)
        assert not cycle.respond_whole(status, headers, b"")
        assert rec.writes == [] and not cycle.response_started


def test_the_serving_factory_tunes_the_collector(tmp_path: object) -> None:
    """`sluice serve`'s app factory freezes what start-up built and raises the young
    generation's threshold (sluice.app.tune_gc); run in a child so this process's collector
    stays as it was."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sluice.app import GC_YOUNG_THRESHOLD

    config = Path(str(tmp_path)) / "sluice.yaml"
    config.write_text(f'storage: {{url: "sqlite:///{tmp_path}/s.db"}}\n')
    code = (
        "import gc; from sluice.app import factory; "
        "before = gc.get_threshold()[0]; factory(); "
        "print(before, gc.get_threshold()[0], gc.get_freeze_count())"
    )
    env = {**os.environ, "SLUICE_CONFIG": str(config)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, frozen = (int(x) for x in out.stdout.split())
    assert before == 700 and after == GC_YOUNG_THRESHOLD
    assert frozen > 10_000  # modules, config and the gateway's parts


def test_the_header_checks_refuse_exactly_what_uvicorn_refuses() -> None:
    """Every byte, in a name and in a value: respond_whole's tables agree with uvicorn's
    patterns (a name's upper case goes to uvicorn, which lower-cases it)."""
    from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

    from sluice.server import _NAME_CHECK, _VALUE_CHECK

    for b in range(256):
        one = bytes([b])
        name_ok = b"!" not in (b"x-" + one).translate(_NAME_CHECK)
        assert name_ok == (not HEADER_RE.search(b"x-" + one) and not one.isupper()), b
        value_ok = b"!" not in (b"v" + one).translate(_VALUE_CHECK)
        assert value_ok == (not HEADER_VALUE_RE.search(b"v" + one)), b
