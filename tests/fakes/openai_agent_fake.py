"""A fake OpenAI upstream that plays one agent turn, for driving a real coding agent.

With a tool named `tool_name` offered and no `tool` message yet, it calls that tool with
`arguments` (a JSON object the agent can actually run, unlike openai_tools_fake's
placeholders); once a tool message answers, it replies `Tool said: <the last one>`, so the
caller can see a tool result travel agent → gateway → upstream and back. Anything else gets
the plain fake's answer. Streaming and non-streaming, in OpenAI's chunk format.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_fake import FakeOpenAI, _prompt_tokens, _usage


class FakeOpenAIAgent(FakeOpenAI):
    """Set `.tool_name` and `.arguments` before the agent runs."""

    def __init__(self) -> None:
        super().__init__()
        self.tool_name = "Read"
        self.arguments: dict[str, Any] = {}

    def _turn(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The scripted message for this request, or None for the plain fake's answer."""
        answers = [m for m in body.get("messages") or () if m.get("role") == "tool"]
        if answers:
            return {"role": "assistant", "content": f"Tool said: {answers[-1].get('content')}"}
        names = [(t.get("function") or {}).get("name") for t in body.get("tools") or []]
        if self.tool_name not in names or body.get("tool_choice") == "none":
            return None
        fn = {"name": self.tool_name, "arguments": orjson.dumps(self.arguments).decode()}
        call = {"id": "call_agent0", "type": "function", "function": fn}
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())  # aiohttp caches the body for super()
        msg = self._turn(body) if isinstance(body, dict) else None
        if msg is None:
            return await super().chat(request)
        await self.record(request)
        finish = "tool_calls" if msg.get("tool_calls") else "stop"
        usage = _usage(_prompt_tokens(body), 9)
        base = {"id": "chatcmpl-agent1", "created": 1, "model": body["model"]}
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
            args = call["function"]["arguments"]
            head = {**call, "index": i, "function": {**call["function"], "arguments": ""}}
            await send({"tool_calls": [head]})
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
