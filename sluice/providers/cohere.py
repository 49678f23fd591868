"""Kind `cohere`: Cohere's v2 Chat and Embed APIs.

Chat: https://docs.cohere.com/reference/chat — messages are OpenAI-like, but the answer's
`message.content` is a list of parts, sampling uses `p`, and stop words are `stop_sequences`.
Streaming: https://docs.cohere.com/reference/chat-stream — typed SSE events
(`message-start`, `content-delta`, `tool-call-start`, `tool-call-delta`, `message-end`);
`message-end` carries the finish reason and usage, and is the normal end of a stream
unless it carries an `error` (finish reason ERROR).
Embed: https://docs.cohere.com/reference/embed
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice import sse
from sluice.errors import GatewayError
from sluice.providers import canonical as c
from sluice.providers.base import (
    Adapter,
    EnvProvider,
    StreamMeter,
    UpstreamCall,
    Usage,
    json_object,
)
from sluice.schema import ChatRequest, EmbeddingsRequest

# https://docs.cohere.com/reference/chat#response.body.finish_reason
_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "stop",
    "TIMEOUT": "length",
}
_SAME = ("temperature", "seed", "frequency_penalty", "presence_penalty", "tools")


def _message(m: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI message → Cohere v2 (content parts keep OpenAI's `image_url` shape)."""
    role = "system" if m.get("role") == "developer" else m.get("role")
    out: dict[str, Any] = {"role": role}
    content = m.get("content")
    if isinstance(content, list) and role == "user":
        out["content"] = [
            p for p in content if isinstance(p, dict) and p.get("type") in ("text", "image_url")
        ]
    elif content is not None:
        out["content"] = c.text_of(content)
    if m.get("tool_calls"):
        out["tool_calls"] = m["tool_calls"]
    if role == "tool":
        out["tool_call_id"] = m.get("tool_call_id")
    return out


def _tool_choice(body: dict[str, Any], out: dict[str, Any]) -> None:
    """`required`/`none` map to Cohere's; one named function = REQUIRED with only that tool."""
    choice = body.get("tool_choice")
    if choice == "required":
        out["tool_choice"] = "REQUIRED"
    elif choice == "none":
        out["tool_choice"] = "NONE"
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        out["tool_choice"] = "REQUIRED"
        out["tools"] = [
            t for t in out.get("tools") or () if (t.get("function") or {}).get("name") == name
        ]


def request_body(chat: ChatRequest, model: str) -> dict[str, Any]:
    """Canonical chat → a Cohere v2 chat request."""
    body = chat.body
    out: dict[str, Any] = {"model": model, "messages": [_message(m) for m in c.messages_of(chat)]}
    out.update({k: body[k] for k in _SAME if body.get(k) is not None})
    if body.get("top_p") is not None:
        out["p"] = body["top_p"]
    if c.max_tokens(body):
        out["max_tokens"] = c.max_tokens(body)
    if c.stop_list(body):
        out["stop_sequences"] = c.stop_list(body)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        schema = (fmt.get("json_schema") or {}).get("schema")
        out["response_format"] = {
            "type": "json_object",
            **({"json_schema": schema} if schema else {}),
        }
    _tool_choice(body, out)
    if chat.stream:
        out["stream"] = True
    return out


def usage_of(obj: Any) -> Usage | None:
    """Cohere's usage (`tokens`, else `billed_units`; `cached_tokens`) → Usage."""
    if not isinstance(obj, dict):
        return None
    tokens = obj.get("tokens") or obj.get("billed_units") or {}
    return Usage(
        prompt_tokens=int(tokens.get("input_tokens") or 0),
        completion_tokens=int(tokens.get("output_tokens") or 0),
        cached_tokens=int(obj.get("cached_tokens") or 0),
    )


class CohereAdapter(Adapter):
    kind = "cohere"
    default_base_url = "https://api.cohere.com"
    env_providers = (EnvProvider("cohere", ("COHERE_API_KEY",), "COHERE_BASE_URL"),)
    default_routes = (("command*", "cohere"), ("embed-*", "cohere"))
    embeddings = True
    native_prefix = "cohere"
    ai_gateway_slugs = {"https://api.cohere.com": "cohere", "https://api.cohere.ai": "cohere"}

    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        c.one_choice("cohere", chat.body)
        body = orjson.dumps(request_body(chat, upstream_model))
        return UpstreamCall("POST", "/v2/chat", self.headers(api_key), body, chat.stream)

    def chat_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        obj = c.loads(data)
        msg = obj.get("message") or {}
        calls = [
            c.tool_call(
                t.get("id", ""), t["function"].get("name", ""), t["function"].get("arguments")
            )
            for t in msg.get("tool_calls") or ()
        ]
        text = c.text_of(msg.get("content"))
        finish = _FINISH.get(str(obj.get("finish_reason")), "stop")
        usage = usage_of(obj.get("usage"))
        return c.completion(
            model, [(c.assistant(text, calls), finish)], usage, obj.get("id")
        ), usage

    async def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        out = c.Chunks(chat, model)
        ours: dict[int, int] = {}  # Cohere's tool-call index → ours (0, 1, ... in order)
        async for ev in sse.events(chunks):
            if ev.data == b"[DONE]":
                continue
            obj = orjson.loads(ev.data)
            meter.chunks += 1
            kind, delta = obj.get("type"), obj.get("delta") or {}
            message = delta.get("message") or {}
            if kind == "message-start":
                yield out.delta({"role": "assistant", "content": ""})
            elif kind == "content-delta":
                text = str((message.get("content") or {}).get("text") or "")
                meter.completion_chars += len(text)
                yield out.delta({"content": text})
            elif kind == "tool-call-start":
                call = message.get("tool_calls") or {}
                fn = call.get("function") or {}
                ours[int(obj.get("index") or 0)] = idx = len(ours)
                yield out.tool_delta(
                    idx, call.get("id", ""), fn.get("name"), fn.get("arguments") or ""
                )
            elif kind == "tool-call-delta":
                args = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
                idx = ours.get(int(obj.get("index") or 0), 0)
                yield out.tool_delta(idx, None, None, str(args or ""))
            elif kind == "message-end":
                meter.usage = usage_of(delta.get("usage"))
                if delta.get("error") or delta.get("finish_reason") == "ERROR":
                    # An in-band failure is not a normal end: no [DONE] (SPEC §6).
                    message = str(delta.get("error") or "the upstream generation failed")
                    raise GatewayError("EXTERNAL_SERVICE_ERROR", message)
                meter.finish_reason = _FINISH.get(str(delta.get("finish_reason")), "stop")
                meter.done = True
                yield out.delta({}, meter.finish_reason) + out.end(meter.usage)

    def embeddings_request(
        self, req: EmbeddingsRequest, upstream_model: str, api_key: str
    ) -> UpstreamCall:
        # v3+ embed models require input_type; OpenAI has no such field, so a caller may add
        # Cohere's own `input_type` and we default to documents.
        body: dict[str, Any] = {
            "model": upstream_model,
            "texts": c.text_inputs(req.inputs),
            "input_type": req.body.get("input_type") or "search_document",
            "embedding_types": ["float"],
        }
        if req.body.get("dimensions"):
            body["output_dimension"] = req.body["dimensions"]
        return UpstreamCall("POST", "/v2/embed", self.headers(api_key), orjson.dumps(body))

    def embeddings_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        obj = c.loads(data)
        emb = obj.get("embeddings")
        vectors = emb.get("float") or [] if isinstance(emb, dict) else emb or []
        usage = usage_of(obj.get("meta") or {})
        return c.embeddings(list(vectors), model, usage), usage

    def native_usage(self, data: bytes) -> Usage | None:
        obj = json_object(data)
        if obj is None:
            return None
        return usage_of(obj.get("usage") or obj.get("meta"))

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        if b'"message-end"' in data:
            usage = usage_of((orjson.loads(data).get("delta") or {}).get("usage"))
            if usage is not None:
                acc.prompt_tokens, acc.completion_tokens = (
                    usage.prompt_tokens,
                    usage.completion_tokens,
                )
                acc.cached_tokens = usage.cached_tokens


ADAPTER = CohereAdapter
