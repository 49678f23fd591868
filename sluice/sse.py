"""Server-sent events: one incremental parser and one encoder for every provider.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Event:
    """One SSE event: its `event:` name (or None) and joined `data:` lines; `raw` as received."""

    data: bytes
    event: str | None
    raw: bytes


def _split(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete event blocks in `buf` (each with its terminator) and the unfinished rest."""
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    blocks: list[bytes] = []
    start = 0
    while True:
        end = buf.find(b"\n\n", start)
        if end < 0:
            return blocks, buf[start:]
        blocks.append(buf[start : end + 2])
        start = end + 2


def parse_block(block: bytes) -> Event | None:
    """One event block → Event (None for a comment-only or empty block)."""
    data: list[bytes] = []
    name: str | None = None
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data and name is None:
        return None
    return Event(b"\n".join(data), name, block)


async def blocks(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """Group arriving bytes into complete event blocks; yields each chunk's blocks at once."""
    rest = b""
    async for chunk in chunks:
        found, rest = _split(rest + chunk if rest else chunk)
        if found:
            yield found
    if rest.strip():
        yield [rest + b"\n\n"]


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """Parsed events from arriving bytes, each as soon as its block is complete."""
    async for group in blocks(chunks):
        for block in group:
            ev = parse_block(block)
            if ev is not None:
                yield ev


def encode(obj: object, event: str | None = None) -> bytes:
    """One SSE event carrying `obj` as JSON."""
    data = b"data: " + orjson.dumps(obj) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data
