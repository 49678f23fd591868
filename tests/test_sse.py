"""The SSE parser: events split across chunks, CRLF, comments, multi-line data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sluice import sse


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def _collect(*parts: bytes) -> list[sse.Event]:
    return [e async for e in sse.events(_chunks(*parts))]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((b"data: a\n\ndata: b\n\n",), [(None, b"a"), (None, b"b")]),
        ((b"data: a", b"bc\n", b"\ndata: d\n\n"), [(None, b"abc"), (None, b"d")]),
        ((b"event: ping\r\ndata: {}\r\n\r\n",), [("ping", b"{}")]),
        ((b": comment\n\ndata: x\n\n",), [(None, b"x")]),
        ((b"data: 1\ndata: 2\n\n",), [(None, b"1\n2")]),
        ((b"data: tail-without-terminator",), [(None, b"tail-without-terminator")]),
    ],
    ids=[
        "two-events",
        "split-across-chunks",
        "crlf-and-name",
        "comment",
        "multiline",
        "unterminated",
    ],
)
async def test_events(parts: tuple[bytes, ...], expected: list[tuple[str | None, bytes]]) -> None:
    assert [(e.event, e.data) for e in await _collect(*parts)] == expected


def test_encode() -> None:
    assert sse.encode({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse.encode({"a": 1}, "x") == b'event: x\ndata: {"a":1}\n\n'
