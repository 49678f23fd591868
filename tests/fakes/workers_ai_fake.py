"""A fake Cloudflare Workers AI: `POST /client/v4/accounts/{account}/ai/run/{model}`.

Shapes per https://developers.cloudflare.com/api/resources/ai/methods/run/ (the v4 envelope
`{"result", "success", "errors", "messages"}`), streaming per
https://developers.cloudflare.com/workers-ai/features/streaming/ (SSE of `{"response": ...}`,
usage in the last event, then `data: [DONE]`), embeddings per the bge model pages
(`{"text": [...]}` → `{"shape", "data"}`), tool calls per
https://developers.cloudflare.com/workers-ai/features/function-calling/traditional/ .
A model ending in `-400` answers a 400 envelope; a missing Bearer token a 401 one.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeServer, texts, words

ANSWER = "Hello from the fake workers ai."


def envelope(
    result: Any, status: int = 200, errors: list[dict[str, Any]] | None = None
) -> web.Response:
    body = {"result": result, "success": not errors, "errors": errors or [], "messages": []}
    return FakeServer.json(body, status)


class FakeWorkersAI(FakeServer):
    """`.url` is the base URL (…/client/v4); `ACCOUNT` the account id it expects."""

    ACCOUNT = "acct0123"

    @property
    def url(self) -> str:
        return self.origin + "/client/v4"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/client/v4/accounts/{account}/ai/run/{model:.+}", self.run)

    async def run(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return envelope(None, 401, [{"code": 10000, "message": "Authentication error"}])
        if request.match_info["account"] != self.ACCOUNT:
            return envelope(None, 404, [{"code": 7003, "message": "No route for that URI"}])
        model = request.match_info["model"]
        if model.endswith("-400"):
            return envelope(
                None,
                400,
                [{"code": 5006, "message": "Error: required properties at '/' are 'messages'"}],
            )
        if "text" in body:
            vectors = [[0.5, 0.25, float(words(t))] for t in body["text"]]
            return envelope({"shape": [len(vectors), 3], "data": vectors, "pooling": "mean"})
        usage = {"prompt_tokens": words(texts(body.get("messages"))), "completion_tokens": 6}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        calls = self._calls(body)
        if body.get("stream"):
            return await self._stream(request, calls, usage)
        result: dict[str, Any] = {"response": "" if calls else ANSWER, "usage": usage}
        if calls:
            result["tool_calls"] = calls
        return envelope(result)

    @staticmethod
    def _calls(body: dict[str, Any]) -> list[dict[str, Any]]:
        tools = body.get("tools") or []
        last = (body.get("messages") or [{}])[-1]
        if not tools or last.get("role") == "tool":
            return []
        name = (tools[0].get("function") or tools[0])["name"]
        return [{"name": name, "arguments": {"city": c}} for c in ("Paris", "Tokyo")]

    async def _stream(
        self, request: web.Request, calls: list[dict[str, Any]], usage: dict[str, Any]
    ) -> web.StreamResponse:
        def ev(obj: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        if calls:
            events = [ev({"response": "", "tool_calls": calls, "p": "abc"})]
        else:
            pieces = ANSWER.split(" ")
            events = [
                ev({"response": w if i == 0 else " " + w, "p": "ab"}) for i, w in enumerate(pieces)
            ]
        events += [ev({"response": "", "usage": usage}), b"data: [DONE]\n\n"]
        return await self.sse(request, events)
