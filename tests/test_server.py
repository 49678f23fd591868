"""sluice/server.py: a response head is joined to the write after it, and never held past
the loop's next turn (a stream's headers must not wait for its first event)."""

from __future__ import annotations

import asyncio

from sluice.server import _HeadHolding


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
