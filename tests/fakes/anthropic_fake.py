"""A fake Anthropic upstream: a real HTTP server speaking the Messages API's wire format.

https://docs.anthropic.com/en/api/messages · .../messages-streaming · .../errors
Requests need the key (== `.key`, in `x-api-key` or as a Bearer token) and
`anthropic-version`; `max_tokens` is required and tool_result blocks must answer the previous
turn's tool_use ids, as the real API insists.
Answers: with tools offered (tool_choice not none) and no tool results in the last turn,
a short text plus one tool_use per offered tool (parallel; one with
disable_parallel_tool_use); otherwise a text reply, cut at max_tokens words.
Fault modes by the model name's suffix: -429 (retry-after 1) -500 -529 (overloaded) -400
-midstream (an `error` event after the first delta) -cache (cache read/creation usage).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeServer, Headers

WORDS = ["Hello", " from", " the", " fake", " Anthropic", "."]
KEY = "sk-ant-test-upstream-0001"


def error_body(kind: str, message: str) -> bytes:
    """Anthropic's error shape (https://docs.anthropic.com/en/api/errors#error-shapes)."""
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for b in value if isinstance(b, dict) for t in _texts(b.get("text", ""))]
    return []


def _input_tokens(body: dict[str, Any]) -> int:
    words = sum(len(t.split()) for t in _texts(body.get("system")))
    for m in body.get("messages", []):
        words += sum(len(t.split()) for t in _texts(m.get("content"))) + 3
    return words


def _sample_input(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        out[name] = {"number": 1.5, "integer": 1, "boolean": True}.get(str(kind), f"{name}-1")
    return out


def _check_tool_results(messages: list[dict[str, Any]]) -> str | None:
    """The real API's rule: each tool_use is answered by a tool_result in the next turn."""
    for i, m in enumerate(messages):
        content = m.get("content")
        if m.get("role") != "assistant" or not isinstance(content, list):
            continue
        ids = {b["id"] for b in content if b.get("type") == "tool_use"}
        if not ids:
            continue
        nxt = messages[i + 1].get("content") if i + 1 < len(messages) else None
        got = {b.get("tool_use_id") for b in nxt or [] if isinstance(b, dict)}
        if not ids <= got:
            return (
                f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(ids - got))}"
            )
    return None


class FakeAnthropic(FakeServer):
    """Start with `.start()` (a background thread); `.url` is the base URL (no /v1)."""

    def __init__(self) -> None:
        super().__init__()
        self.key = KEY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)

    @staticmethod
    def _error(
        status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=error_body(kind, message),
            content_type="application/json",
            headers=headers,
        )

    def _refuse(self, request: web.Request, body: Any) -> web.Response | None:
        """Authentication, validation and fault modes, in the real API's order."""
        # `x-api-key` is the documented header; SDK 2.x sends the key as a Bearer token.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.key not in (request.headers.get("x-api-key"), bearer):
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if not isinstance(body, dict):
            return self._error(400, "invalid_request_error", "body: must be an object")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self._error(400, "invalid_request_error", f"{name}: Field required")
        problem = _check_tool_results(body["messages"])
        if problem:
            return self._error(400, "invalid_request_error", problem)
        model = str(body["model"])
        faults = {
            "-429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit"),
            "-500": (500, "api_error", "Internal server error"),
            "-529": (529, "overloaded_error", "Overloaded"),
            "-400": (400, "invalid_request_error", "messages.0.content: Input should be a list"),
        }
        for suffix, (status, kind, message) in faults.items():
            if model.endswith(suffix):
                headers = {"retry-after": "1"} if status == 429 else None
                return self._error(status, kind, message, headers)
        return None

    async def messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._error(400, "invalid_request_error", "body: invalid JSON")
        self.requests.append(
            {"path": request.path, "headers": Headers(request.headers), "body": body}
        )
        refused = self._refuse(request, body)
        if refused is not None:
            return refused
        message = self._answer(body)
        if body.get("stream"):
            return await self._stream(request, message)
        return web.Response(body=orjson.dumps(message), content_type="application/json")

    def _tool_blocks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """tool_use blocks for this turn, or none (tools not offered, or results given)."""
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        last = body["messages"][-1].get("content")
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        if not tools or choice.get("type") == "none" or answered:
            return []
        if choice.get("type") == "tool":
            tools = [t for t in tools if t["name"] == choice.get("name")]
        if choice.get("disable_parallel_tool_use"):
            tools = tools[:1]
        return [
            {
                "type": "tool_use",
                "id": f"toolu_fake{i}",
                "name": t["name"],
                "input": _sample_input(t.get("input_schema") or {}),
            }
            for i, t in enumerate(tools[:2])
        ]

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        calls = self._tool_blocks(body)
        if calls:
            content = [{"type": "text", "text": "Let me check."}, *calls]
            stop, out_tokens = "tool_use", 10 * len(calls)
        else:
            words = WORDS[: max(1, min(len(WORDS), int(body["max_tokens"])))]
            content = [{"type": "text", "text": "".join(words)}]
            stop = "end_turn" if len(words) == len(WORDS) else "max_tokens"
            out_tokens = len(words)
        usage = {"input_tokens": _input_tokens(body), "output_tokens": out_tokens}
        cached = str(body["model"]).endswith("-cache")
        usage["cache_creation_input_tokens"] = 20 if cached else 0
        usage["cache_read_input_tokens"] = 100 if cached else 0
        return {
            "id": "msg_fake01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    async def _stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        """The documented event sequence: https://docs.anthropic.com/en/api/messages-streaming."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        midstream = str(message["model"]).endswith("-midstream")

        async def send(name: str, obj: dict[str, Any]) -> None:
            await resp.write(b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(obj)))

        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {**message["usage"], "output_tokens": 1}
        await send("message_start", {"type": "message_start", "message": start})
        await send("ping", {"type": "ping"})
        for i, block in enumerate(message["content"]):
            for name, ev in _block_events(i, block):
                await send(name, ev)
                if midstream and name == "content_block_delta":
                    err = {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    }
                    await send("error", err)
                    await resp.write_eof()
                    return resp
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        usage = {"output_tokens": message["usage"]["output_tokens"]}
        await send("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


def _block_events(i: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One content block as start, deltas (text word by word, JSON in pieces), stop."""
    if block["type"] == "text":
        first = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": w} for w in _words(block["text"])]
    else:
        first = {**block, "input": {}}
        js = orjson.dumps(block["input"]).decode()
        cut = [0, len(js) // 3, 2 * len(js) // 3, len(js)]
        # the first input_json_delta is empty, as the real API sends it
        pieces = ["", *(js[a:b] for a, b in itertools.pairwise(cut))]
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    return [
        (
            "content_block_start",
            {"type": "content_block_start", "index": i, "content_block": first},
        ),
        *(
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            for d in deltas
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": i}),
    ]


def _words(text: str) -> list[str]:
    out: list[str] = []
    for w in text.split(" "):
        out.append(w if not out else " " + w)
    return out
