"""The floor Sluice is measured against: issue 2's "bare 40-line ASGI proxy" (uvicorn +
httptools + uvloop, an aiohttp client, orjson), with no auth, limits, usage or validation.

    python -m bench.bare_proxy --port P --json http://127.0.0.1:J --sse http://127.0.0.1:S
    (bench.run starts it as the system `bare-proxy`: --systems nginx-hop,bare-proxy,sluice)

It parses the body (to read `stream`), forwards it to the same path of the JSON or the
streaming upstream on one keep-alive session, and relays the answer: whole, or chunk by
chunk for a stream. What Sluice
costs beyond it is what Sluice's own features cost.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import orjson
import uvicorn

UPSTREAMS = {False: "", True: ""}  # by `stream`
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Forward one request to the upstream and relay its answer."""
    global _session
    if scope["type"] == "lifespan":
        while (msg := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    stream = bool(orjson.loads(body).get("stream")) if body else False
    if CLIENT[0] == "rnet":
        await _via_rnet(scope["path"], body, stream, send)
        return
    if _session is None:
        _session = aiohttp.ClientSession()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}
    url = UPSTREAMS[stream] + scope["path"]
    async with _session.post(url, data=body, headers=headers) as resp:
        ctype = resp.headers.get("content-type", "application/json").encode()
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", ctype)]})  # fmt: skip
        if not stream:
            await send({"type": "http.response.body", "body": await resp.read()})
            return
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


CLIENT = ["aiohttp"]  # --client; rnet is Sluice's client (bench.experiments.floors measures it)
_rnet: Any = None


async def _via_rnet(path: str, body: bytes, stream: bool, send: Any) -> None:
    global _rnet
    import rnet

    if _rnet is None:
        _rnet = rnet.Client(allow_redirects=False, cookie_store=False, no_proxy=True)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}
    resp = await _rnet.post(UPSTREAMS[stream] + path, body=body, headers=headers)
    ctype = resp.headers.get("content-type") or b"application/json"
    await send({"type": "http.response.start", "status": resp.status,
                "headers": [(b"content-type", ctype)]})  # fmt: skip
    if not stream:
        await send({"type": "http.response.body", "body": await resp.bytes()})
        return
    async for chunk in resp.stream():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    """Serve the bare proxy."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--client", choices=("aiohttp", "rnet"), default="aiohttp")
    ap.add_argument("--json", required=True, help="non-streamed upstream, http://host:port")
    ap.add_argument("--sse", required=True, help="streaming upstream, http://host:port")
    args = ap.parse_args()
    UPSTREAMS[False], UPSTREAMS[True] = args.json.rstrip("/"), args.sse.rstrip("/")
    CLIENT[0] = args.client
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning")  # fmt: skip


if __name__ == "__main__":
    main()
