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
from tests.fakes.openai_tools_fake import answer


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
        return await answer(request, body, msg, _usage(_prompt_tokens(body), 9), "chatcmpl-agent1")
