"""The bare proxy of bench/bare_proxy.py as a granian RSGI app, with aiohttp, pyreqwest or
rnet as its client (`FLOOR_CLIENT`); used by bench.experiments.floors only, never by Sluice.

    FLOOR_CLIENT=pyreqwest FLOOR_JSON=http://h:p FLOOR_SSE=http://h:p \
        granian --interface rsgi bench.experiments.rsgi_proxy:app
"""

from __future__ import annotations

import os
from typing import Any

import orjson

CLIENT = os.environ.get("FLOOR_CLIENT", "aiohttp")
UPSTREAMS = {False: os.environ.get("FLOOR_JSON", ""), True: os.environ.get("FLOOR_SSE", "")}
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}
_client: Any = None


async def app(scope: Any, proto: Any) -> None:
    """Forward one request to the upstream and relay its answer (streams chunk by chunk)."""
    global _client
    body = await proto()
    stream = bool(orjson.loads(body).get("stream")) if body else False
    url = UPSTREAMS[stream] + scope.path
    if CLIENT == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        if _client is None:
            _client = await ClientBuilder().http1_only().build().__aenter__()
        resp = await _client.post(url).headers(HEADERS).body_bytes(body).build().send()
        ctype = resp.headers.get("content-type", "application/json")
        proto.response_bytes(resp.status, [("content-type", ctype)], await resp.bytes())
        return
    if CLIENT == "rnet":
        import rnet

        if _client is None:
            _client = rnet.Client(allow_redirects=False, cookie_store=False, no_proxy=True)
        resp = await _client.post(url, body=body, headers=HEADERS)
        raw = resp.headers.get("content-type")
        ctype = raw.decode() if raw is not None else "application/json"
        if not stream:
            proto.response_bytes(resp.status, [("content-type", ctype)], await resp.bytes())
            return
        tx = proto.response_stream(resp.status, [("content-type", ctype)])
        async for chunk in resp.stream():
            await tx.send_bytes(chunk)
        return
    import aiohttp

    if _client is None:
        _client = aiohttp.ClientSession()
    async with _client.post(url, data=body, headers=HEADERS) as r:
        ctype = r.headers.get("content-type", "application/json")
        if not stream:
            proto.response_bytes(r.status, [("content-type", ctype)], await r.read())
            return
        tx = proto.response_stream(r.status, [("content-type", ctype)])
        async for chunk in r.content.iter_any():
            await tx.send_bytes(chunk)
