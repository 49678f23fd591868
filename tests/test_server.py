"""sluice/server.py: a response head is joined to the write after it, and never held past
the loop's next turn (a stream's headers must not wait for its first event)."""

from __future__ import annotations

import asyncio

from sluice.server import SluiceCycle, _HeadHolding


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

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


async def test_a_whole_answer_leaves_in_one_write() -> None:
    rec = Recorder()
    t = _HeadHolding(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    assert rec.writes == []  # held for the body
    t.write(b"hello")
    assert rec.writes == [HEAD + b"hello"]
    await asyncio.sleep(0)
    assert rec.writes == [HEAD + b"hello"]  # the release finds nothing left to send


async def test_a_head_alone_goes_out_on_the_next_turn() -> None:
    rec = Recorder()
    t = _HeadHolding(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    await asyncio.sleep(0)
    assert rec.writes == [HEAD]  # a stream's headers do not wait for its first event
    t.write(b"data: 1\n\n")
    assert rec.writes == [HEAD, b"data: 1\n\n"]


async def test_close_sends_a_held_head_first_and_the_rest_is_delegated() -> None:
    rec = Recorder()
    t = _HeadHolding(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
    t.close()
    assert rec.writes == [b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"]
    assert rec.closed
    assert t.get_extra_info("peername") == "info:peername"


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


class _Flow:
    write_paused = False


def _cycle(rec: Recorder, method: str = "POST", keep_alive: bool = True) -> SluiceCycle:
    import logging

    done: list[bool] = []
    cycle = SluiceCycle(
        scope={"method": method, "type": "http"},  # type: ignore[typeddict-item]
        transport=rec,  # type: ignore[arg-type]
        flow=_Flow(),  # type: ignore[arg-type]
        logger=logging.getLogger("t"),
        access_logger=logging.getLogger("t"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append(True),
    )
    cycle.done = done  # type: ignore[attr-defined]
    return cycle


HEADERS = [(b"content-type", b"application/json"), (b"x-ratelimit-reset-requests", b"6m0s")]


async def test_respond_whole_writes_what_uvicorns_send_writes() -> None:
    """The one-call path for whole answers is byte for byte uvicorn's two messages, ends
    the cycle the same way, and closes a connection that is not kept alive."""
    for keep_alive in (True, False):
        ours, theirs = Recorder(), Recorder()
        a, b = _cycle(ours, keep_alive=keep_alive), _cycle(theirs, keep_alive=keep_alive)
        assert a.respond_whole(200, HEADERS, b'{"ok":1}')
        sized = [*HEADERS, (b"content-length", b"8")]  # what Request.respond sends otherwise
        await b.send({"type": "http.response.start", "status": 200, "headers": sized})
        await b.send({"type": "http.response.body", "body": b'{"ok":1}'})
        assert b"".join(ours.writes) == b"".join(theirs.writes)
        assert ours.writes[0].startswith(b"HTTP/1.1 200 OK\r\ncontent-type: application/json")
        assert a.response_complete and a.done == [True]  # type: ignore[attr-defined]
        assert ours.closed is (not keep_alive)


async def test_respond_whole_leaves_the_unusual_to_uvicorn() -> None:
    """A value uvicorn would refuse, a framing header, upper case, HEAD, 204: nothing is
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
