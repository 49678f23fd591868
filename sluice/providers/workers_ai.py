"""Kind `workers_ai`: Cloudflare Workers AI, `POST /accounts/{account_id}/ai/run/{model}`.

Wire format: https://developers.cloudflare.com/api/resources/ai/methods/run/ — every answer
is wrapped in the v4 envelope `{"result": ..., "success": bool, "errors": [...]}`; a text
generation result is `{"response", "tool_calls", "usage"}`. Streams are SSE of
`{"response": "<text>"}` events, usage in the last one, then `data: [DONE]`
(https://developers.cloudflare.com/workers-ai/features/streaming/).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from sluice import sse
from sluice.providers import canonical as c
from sluice.providers.base import (
    Adapter,
    EnvProvider,
    StreamMeter,
    UpstreamCall,
    Usage,
    json_object,
)
from sluice.providers.openai import usage_from
from sluice.schema import ChatRequest, EmbeddingsRequest

if TYPE_CHECKING:
    from sluice.config import ProviderConfig

# Options the text-generation models take under the same names as OpenAI's:
# https://developers.cloudflare.com/workers-ai/models/llama-3.1-8b-instruct/#parameters
_SAME = (
    "temperature",
    "top_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "tools",
)


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages, with the function `name` Workers AI expects on tool results
    (https://developers.cloudflare.com/workers-ai/features/function-calling/traditional/)."""
    names = c.tool_names(messages)
    out = []
    for m in messages:
        if m.get("role") == "tool" and "name" not in m:
            m = {**m, "name": names.get(str(m.get("tool_call_id")), "")}
        out.append(m)
    return out


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's response_format → JSON mode, whose `json_schema` is the bare schema
    (https://developers.cloudflare.com/workers-ai/json-mode/)."""
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"type": "json_schema", "json_schema": schema}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def request_body(chat: ChatRequest) -> dict[str, Any]:
    """Canonical chat → a Workers AI text-generation input."""
    out: dict[str, Any] = {"messages": _messages(c.messages_of(chat))}
    out.update({k: chat.body[k] for k in _SAME if chat.body.get(k) is not None})
    if c.max_tokens(chat.body):
        out["max_tokens"] = c.max_tokens(chat.body)
    fmt = _response_format(chat.body.get("response_format") or {})
    if fmt:
        out["response_format"] = fmt
    if chat.stream:
        out["stream"] = True
    return out


def _calls(raw: Any, first: int) -> list[dict[str, Any]]:
    """Workers AI tool calls (`{name, arguments}` or OpenAI-shaped) → OpenAI's."""
    out = []
    for i, call in enumerate(raw or ()):
        fn = call.get("function") or call
        call_id = call.get("id") or f"call_{first + i}"
        out.append(c.tool_call(call_id, fn.get("name", ""), fn.get("arguments")))
    return out


def _text(value: Any) -> str:
    """`response` is a string, or an object when JSON mode produced one."""
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class WorkersAIAdapter(Adapter):
    kind = "workers_ai"
    default_base_url = "https://api.cloudflare.com/client/v4"
    env_providers = (
        EnvProvider(
            "cloudflare",
            ("CLOUDFLARE_API_TOKEN",),
            "CLOUDFLARE_BASE_URL",
            extra_vars={"account_id": "CLOUDFLARE_ACCOUNT_ID"},
        ),
    )
    default_routes = (("@cf/*", "cloudflare"),)
    embeddings = True
    native_prefix = "workers-ai"
    ai_gateway_slugs = {"https://api.cloudflare.com/client/v4": "workers-ai"}

    @classmethod
    def credentials_complete(cls, config: ProviderConfig) -> bool:
        return bool(config.account_id)

    def _run(self, model: str) -> str:
        return f"/accounts/{self.config.account_id}/ai/run/{model}"

    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        c.one_choice("workers_ai", chat.body)
        body = orjson.dumps(request_body(chat))
        return UpstreamCall(
            "POST", self._run(upstream_model), self.headers(api_key), body, chat.stream
        )

    def chat_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        result = c.loads(data).get("result") or {}
        calls = _calls(result.get("tool_calls"), 0)
        usage = usage_from(result.get("usage"))
        message = c.assistant(_text(result.get("response")), calls)
        finish = "tool_calls" if calls else str(result.get("finish_reason") or "stop")
        return c.completion(model, [(message, finish)], usage), usage

    async def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        out = c.Chunks(chat, model)
        calls = 0
        yield out.delta({"role": "assistant", "content": ""})
        async for ev in sse.events(chunks):
            meter.chunks += 1
            if ev.data == b"[DONE]":
                meter.finish_reason = "tool_calls" if calls else (meter.finish_reason or "stop")
                meter.done = True
                yield out.delta({}, meter.finish_reason) + out.end(meter.usage)
                return
            obj = orjson.loads(ev.data)
            meter.usage = usage_from(obj.get("usage")) or meter.usage
            if obj.get("finish_reason"):
                meter.finish_reason = str(obj["finish_reason"])
            piece = b""
            text = _text(obj.get("response"))
            if text:
                meter.completion_chars += len(text)
                piece += out.delta({"content": text})
            for call in _calls(obj.get("tool_calls"), calls):
                fn = call["function"]
                piece += out.tool_delta(calls, call["id"], fn["name"], fn["arguments"])
                calls += 1
            if piece:
                yield piece

    def embeddings_request(
        self, req: EmbeddingsRequest, upstream_model: str, api_key: str
    ) -> UpstreamCall:
        # https://developers.cloudflare.com/workers-ai/models/bge-base-en-v1.5/#parameters
        body = orjson.dumps({"text": c.text_inputs(req.inputs)})
        return UpstreamCall("POST", self._run(upstream_model), self.headers(api_key), body)

    def embeddings_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        result = c.loads(data).get("result") or {}
        return c.embeddings(list(result.get("data") or ()), model, None), None

    def native_path(self, rest: str) -> str:
        """`/workers-ai/{model}` (seed 003) → the account's run URL for that model."""
        return self._run(rest.lstrip("/"))

    def ai_gateway_path(self, path: str) -> str | None:
        # https://developers.cloudflare.com/ai-gateway/usage/providers/workersai/
        prefix = f"/accounts/{self.config.account_id}/ai/run/"
        if self.base_url not in self.ai_gateway_slugs or not path.startswith(prefix):
            return None
        return "/workers-ai/" + path[len(prefix) :]

    def native_usage(self, data: bytes) -> Usage | None:
        obj = json_object(data)
        if obj is None:
            return None
        result = obj.get("result")
        return usage_from((result if isinstance(result, dict) else obj).get("usage"))

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        if b'"usage"' in data:
            usage = self.native_usage(data)
            if usage is not None:
                acc.prompt_tokens, acc.completion_tokens = (
                    usage.prompt_tokens,
                    usage.completion_tokens,
                )

    def error_message(self, data: bytes) -> str:
        """The v4 envelope's `errors[0].message` (https://developers.cloudflare.com/fundamentals/api/)."""
        obj = json_object(data)
        errs = obj.get("errors") if obj is not None else None
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            return str(errs[0].get("message") or "upstream error")
        return super().error_message(data)


ADAPTER = WorkersAIAdapter
