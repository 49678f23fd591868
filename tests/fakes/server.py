"""A base for fake providers: a real aiohttp server on a loopback port in a background thread.

Subclasses add routes in `routes(app)`; every request is recorded (method, path, query,
headers, body) in `.requests` for assertions.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import web


class Headers(dict[str, str]):
    """A request's headers by lower-cased name, looked up ignoring case as HTTP does (the
    gateway's client title-cases names on HTTP/1.1); still a plain dict for JSON."""

    def __init__(self, raw: Any) -> None:
        super().__init__((k.lower(), v) for k, v in raw.items())

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class FakeServer:
    """Start with `.start()`; `.origin` is http://127.0.0.1:PORT."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        """Add this fake's endpoints."""
        raise NotImplementedError

    def app(self) -> web.Application:
        """The aiohttp application (also for running a fake standalone)."""
        app = web.Application()
        self.routes(app)
        return app

    async def record(self, request: web.Request) -> dict[str, Any]:
        """Read and remember a request; returns its JSON body ({} when empty)."""
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": Headers(request.headers),
                "body": body,
            }
        )
        return body

    @staticmethod
    def json(obj: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")

    @staticmethod
    async def sse(
        request: web.Request, events: list[bytes], delay: float = 0.0
    ) -> web.StreamResponse:
        """Send pre-encoded SSE events one write at a time, as a real server would."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for ev in events:
            await resp.write(ev)
            await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def words(text: str) -> int:
    """A crude token count the fakes report as usage."""
    return len(text.split())


def texts(value: Any) -> str:
    """All strings inside a JSON value, joined (to count prompt 'tokens')."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(
            texts(v)
            for k, v in value.items()
            if k in ("text", "content", "parts", "contents", "messages", "systemInstruction")
        )
    if isinstance(value, list):
        return " ".join(texts(v) for v in value)
    return ""
