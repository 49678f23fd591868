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
