"""A fake Cohere v2 API: `POST /v2/chat` (streamed and not) and `POST /v2/embed`.

Shapes per https://docs.cohere.com/reference/chat, https://docs.cohere.com/reference/chat-stream
(typed events, each sent as `event: <type>` plus `data: {...}`) and
https://docs.cohere.com/reference/embed. Declared tools and a user turn last → a tool plan
and two parallel tool calls whose arguments stream in pieces. A model ending in `-400`
answers `{"id", "message"}` with status 400.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeServer, texts, words

ANSWER = "Hello from the fake cohere."
PLAN = "I will look up the weather in both cities."


class FakeCohere(FakeServer):
    """`.url` is the base URL (what the cohere SDK calls base_url)."""

    @property
    def url(self) -> str:
        return self.origin

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/chat", self.chat)
        app.router.add_post("/v2/embed", self.embed)

    def _refuse(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return self.json({"id": "e1", "message": "no api key supplied"}, 401)
        if str(body.get("model", "")).endswith("-400"):
            return self.json({"id": "e2", "message": "invalid request: model not found"}, 400)
        return None

    @staticmethod
    def _calls(body: dict[str, Any]) -> list[dict[str, Any]]:
        tools = body.get("tools") or []
        if not tools or (body.get("messages") or [{}])[-1].get("role") == "tool":
            return []
        name = tools[0]["function"]["name"]
        return [
            {
                "id": f"{name}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps({"city": c}).decode()},
            }
            for i, c in enumerate(("Paris", "Tokyo"))
        ]

    @staticmethod
    def _usage(body: dict[str, Any], out: int) -> dict[str, Any]:
        prompt = words(texts(body.get("messages")))
        return {
            "billed_units": {"input_tokens": prompt, "output_tokens": out},
            "tokens": {"input_tokens": prompt + 60, "output_tokens": out},
            "cached_tokens": 3,
        }

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        refused = self._refuse(request, body)
        if refused is not None:
            return refused
        calls = self._calls(body)
        text = '{"answer": 42}' if body.get("response_format") else ANSWER
        if body.get("stream"):
            return await self.sse(request, self._events(body, calls, text))
        message: dict[str, Any] = {"role": "assistant"}
        if calls:
            message.update(tool_plan=PLAN, tool_calls=calls)
        else:
            message["content"] = [{"type": "text", "text": text}]
        return self.json(
            {
                "id": "fake-cohere-1",
                "finish_reason": "TOOL_CALL" if calls else "COMPLETE",
                "message": message,
                "usage": self._usage(body, words(text)),
            }
        )

    def _events(self, body: dict[str, Any], calls: list[dict[str, Any]], text: str) -> list[bytes]:
        def ev(obj: dict[str, Any]) -> bytes:
            return f"event: {obj['type']}\n".encode() + b"data: " + orjson.dumps(obj) + b"\n\n"

        start = {
            "role": "assistant",
            "content": [],
            "tool_plan": "",
            "tool_calls": [],
            "citations": [],
        }
        out = [ev({"id": "fake-cohere-1", "type": "message-start", "delta": {"message": start}})]
        if calls:
            out += [ev({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": PLAN}}})]
            for i, call in enumerate(calls):
                head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
                out.append(
                    ev(
                        {
                            "type": "tool-call-start",
                            "index": i,
                            "delta": {"message": {"tool_calls": head}},
                        }
                    )
                )
                args = call["function"]["arguments"]
                for piece in (args[:5], args[5:]):
                    delta = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
                    out.append(ev({"type": "tool-call-delta", "index": i, "delta": delta}))
                out.append(ev({"type": "tool-call-end", "index": i}))
        else:
            content = {"message": {"content": {"type": "text", "text": ""}}}
            out.append(ev({"type": "content-start", "index": 0, "delta": content}))
            for i, w in enumerate(text.split(" ")):
                piece = {"message": {"content": {"text": w if i == 0 else " " + w}}}
                out.append(ev({"type": "content-delta", "index": 0, "delta": piece}))
            out.append(ev({"type": "content-end", "index": 0}))
        end = {
            "finish_reason": "TOOL_CALL" if calls else "COMPLETE",
            "usage": self._usage(body, words(text)),
        }
        out.append(ev({"type": "message-end", "delta": end}))
        return out

    async def embed(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        refused = self._refuse(request, body)
        if refused is not None:
            return refused
        if not body.get("input_type"):
            return self.json(
                {"id": "e3", "message": "input_type is required for embed v3 models"}, 400
            )
        dims = int(body.get("output_dimension") or 3)
        vectors = [[0.2 * (j + 1) + words(t) for j in range(dims)] for t in body["texts"]]
        tokens = sum(words(t) for t in body["texts"])
        return self.json(
            {
                "id": "fake-embed-1",
                "embeddings": {"float": vectors},
                "texts": body["texts"],
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
                "response_type": "embeddings_by_type",
            }
        )
