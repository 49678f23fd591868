"""A provider's Set-Cookie (OpenAI's Cloudflare front sets `__cf_bm`) is never stored and
sent back: the upstream sessions are shared by every tenant, so a cookie kept from one
caller's answer would ride on another caller's request."""

from __future__ import annotations

import time

from aiohttp import web

from sluice.config import ProviderConfig
from sluice.providers import registry
from sluice.providers.base import UpstreamCall
from sluice.upstream import Upstream


async def test_upstream_cookies_are_not_kept() -> None:
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = web.json_response({"ok": True})
        resp.set_cookie("__cf_bm", "tenant-a-session", path="/")
        return resp

    app = web.Application()
    app.router.add_post("/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    up = Upstream()
    adapter = registry.adapter_for(
        ProviderConfig(
            kind="openai", api_key="k", base_url=f"http://localhost:{port}"
        )  # a name: cookies from IPs are refused anyway
    )
    call = UpstreamCall("POST", "/chat/completions", {}, b"{}", False, {})
    try:
        for _ in range(2):
            opened = await up.open("p", adapter, call, time.monotonic() + 10, ())
            assert await opened.read() == b'{"ok": true}'
    finally:
        await up.close()
        await runner.cleanup()
    assert seen == [None, None]
