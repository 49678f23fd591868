"""The HTTP server protocol: uvicorn's httptools protocol, with one change that matters on
the hot path.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body with the next message: two `write` syscalls and two
TCP segments for every whole answer, so the client is woken twice. Here the head is held
until the next write (the body follows in the same task step) or, when nothing follows in
this loop iteration (a stream waiting for its first event, a 204), until the loop's next
turn. A whole answer leaves in one write; nothing is ever held longer than one iteration.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

    def close(self) -> None:
        self._release()
        self._t.close()

    def abort(self) -> None:
        self._held = None
        self._t.abort()

    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, is_closing, ...
        return getattr(self._t, name)


class SluiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a head-holding transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        held = _HeadHolding(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(held)  # type: ignore[arg-type]
