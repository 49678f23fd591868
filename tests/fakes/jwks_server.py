"""A real JWKS HTTP server for JWT tests: serves whatever key set the test holds, counts
fetches, and can be told to fail (500) to exercise the fallback key."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeServer


class JwksServer(FakeServer):
    """`.start()` runs it on a loopback port in a thread; `.url` is the JWKS address."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.failing = False

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/jwks.json", self._jwks)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.failing:
            return web.Response(status=500, text="down")
        return web.Response(body=orjson.dumps({"keys": self.keys}), content_type="application/json")
