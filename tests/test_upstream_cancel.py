"""SPEC §6: cancelling the task that waits on an upstream (client gone, drain) drops the
upstream request at once — before its headers as well as mid-stream — so a provider stops
generating (and billing) an answer nobody will read."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from sluice.config import ProviderConfig
from sluice.providers import registry
from sluice.providers.base import UpstreamCall
from sluice.upstream import Upstream


async def _server(gone: list[float]) -> tuple[web.AppRunner, int]:
    async def hang(request: web.Request) -> web.StreamResponse:
        try:
            if request.query.get("mode") == "stream":
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                for _ in range(100):
                    await resp.write(b'data: {"x": 1}\n\n')
                    await asyncio.sleep(0.05)
                return resp
            await asyncio.sleep(10)
            return web.json_response({})
        except asyncio.CancelledError:
            gone.append(time.monotonic())
            raise

    app = web.Application()
    app.router.add_post("/chat/completions", hang)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


@pytest.mark.parametrize("mode", ["headers", "stream"])
async def test_cancelling_the_task_drops_the_upstream_request(mode: str) -> None:
    gone: list[float] = []
    runner, port = await _server(gone)
    up = Upstream()
    adapter = registry.adapter_for(
        ProviderConfig(kind="openai", api_key="k", base_url=f"http://127.0.0.1:{port}")
    )
    stream = mode == "stream"
    call = UpstreamCall("POST", "/chat/completions", {}, b"{}", stream, {"mode": mode})

    async def use() -> None:
        opened = await up.open("p", adapter, call, time.monotonic() + 30, ())
        async for _ in opened.chunks():
            pass

    try:
        task = asyncio.create_task(use())
        await asyncio.sleep(0.3)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(20):
            if gone:
                break
            await asyncio.sleep(0.05)
        assert gone, "the upstream never saw the request dropped"
        assert gone[0] - cancelled_at < 0.5
    finally:
        await up.close()
        await runner.cleanup()
