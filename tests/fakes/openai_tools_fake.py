"""The fake OpenAI upstream, plus tool calling in OpenAI's wire format.

https://platform.openai.com/docs/guides/function-calling: with `tools` offered, tool_choice
not "none" and no `tool` message answering yet, it calls each offered tool (two at most,
one when parallel_tool_calls is false) instead of answering with text; streamed, each call's
arguments arrive as fragments under the call's `index`. Anything else is the plain fake's.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_fake import FakeOpenAI, _prompt_tokens, _usage


def _calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    answered = body["messages"][-1].get("role") == "tool"
    if not tools or choice == "none" or answered:
        return []
    if isinstance(choice, dict):
        tools = [t for t in tools if t["name"] == choice["function"]["name"]]
    if body.get("parallel_tool_calls") is False:
        tools = tools[:1]
    out = []
    for i, t in enumerate(tools[:2]):
        props = (t.get("parameters") or {}).get("properties") or {}
        args = orjson.dumps({name: f"{name}-1" for name in props}).decode()
        fn = {"name": t["name"], "arguments": args}
        out.append({"id": f"call_fake{i}", "type": "function", "function": fn})
    return out


class FakeOpenAIWithTools(FakeOpenAI):
    """FakeOpenAI whose chat endpoint also answers with tool calls."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())  # aiohttp caches the body for super()
        calls = _calls(body) if isinstance(body, dict) and "messages" in body else []
        if not calls:
            return await super().chat(request)
        await self.record(request)
        msg = {"role": "assistant", "content": None, "tool_calls": calls}
        usage = _usage(_prompt_tokens(body), 7 * len(calls))
        return await answer(request, body, msg, usage, "chatcmpl-tools1")


async def answer(
    request: web.Request, body: dict[str, Any], msg: dict[str, Any], usage: Any, cid: str
) -> web.StreamResponse:
    """An assistant message (tool calls and/or text) in OpenAI's format, streamed when asked:
    each call's arguments arrive as two fragments under the call's `index`."""
    finish = "tool_calls" if msg.get("tool_calls") else "stop"
    base = {"id": cid, "created": 1, "model": body["model"]}
    if not body.get("stream"):
        choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}
        obj = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return web.Response(body=orjson.dumps(obj), content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    base["object"] = "chat.completion.chunk"

    async def send(delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        await resp.write(b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n")

    await send({"role": "assistant", "content": None})
    for i, call in enumerate(msg.get("tool_calls") or ()):
        head = {**call, "index": i, "function": {**call["function"], "arguments": ""}}
        await send({"tool_calls": [head]})
        args = call["function"]["arguments"]
        for frag in (args[: len(args) // 2], args[len(args) // 2 :]):
            await send({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
    if msg.get("content"):
        await send({"content": msg["content"]})
    await send({}, finish)
    if (body.get("stream_options") or {}).get("include_usage"):
        tail = {**base, "choices": [], "usage": usage}
        await resp.write(b"data: " + orjson.dumps(tail) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
