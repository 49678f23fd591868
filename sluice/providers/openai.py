"""Kind `openai`: OpenAI, OpenRouter and any OpenAI-compatible server (vLLM, Ollama, Groq).

The canonical format *is* this wire format, so requests and responses pass through as bytes;
a request body is re-encoded only when the gateway must change it (an alias's upstream model,
our own `provider` field, or forcing `stream_options.include_usage` so metering cannot be
bypassed: https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice import sse
from sluice.providers.base import (
    Adapter,
    EnvProvider,
    StreamMeter,
    UpstreamCall,
    Usage,
    json_object,
)
from sluice.schema import ChatRequest, EmbeddingsRequest


def usage_from(obj: Any) -> Usage | None:
    """OpenAI's `usage` object → Usage (cached and reasoning details included)."""
    if not isinstance(obj, dict):
        return None
    prompt = obj.get("prompt_tokens") or obj.get("input_tokens") or 0
    completion = obj.get("completion_tokens") or obj.get("output_tokens") or 0
    pd = obj.get("prompt_tokens_details") or {}
    cd = obj.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cached_tokens=int(pd.get("cached_tokens") or 0) if isinstance(pd, dict) else 0,
        reasoning_tokens=int(cd.get("reasoning_tokens") or 0) if isinstance(cd, dict) else 0,
    )


def _body_for(
    body: dict[str, Any], raw: bytes, upstream_model: str, extra: dict[str, Any]
) -> bytes:
    """The raw bytes when nothing changes, else the body re-encoded once with the changes."""
    changed = body.get("model") != upstream_model or isinstance(body.get("provider"), str) or extra
    if not changed:
        return raw
    out = {k: v for k, v in body.items() if not (k == "provider" and isinstance(v, str))}
    out["model"] = upstream_model
    out.update(extra)
    return orjson.dumps(out)


class OpenAIAdapter(Adapter):
    kind = "openai"
    default_base_url = "https://api.openai.com/v1"
    env_providers = (
        EnvProvider("openai", ("OPENAI_API_KEY", "OPENAI_KEY"), "OPENAI_BASE_URL"),
        EnvProvider(
            "openrouter",
            ("OPENROUTER_API_KEY",),
            "OPENROUTER_BASE_URL",
            "https://openrouter.ai/api/v1",
        ),
    )
    default_routes = (
        ("gpt-*", "openai"),
        ("chatgpt-*", "openai"),
        ("o1*", "openai"),
        ("o3*", "openai"),
        ("o4*", "openai"),
        ("text-embedding-*", "openai"),
    )
    embeddings = True
    completions = True
    native_prefix = "openai"
    ai_gateway_slugs = {
        "https://api.openai.com/v1": "openai",
        "https://openrouter.ai/api/v1": "openrouter",
    }

    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        extra: dict[str, Any] = {}
        if chat.stream and not chat.client_wants_usage:
            opts = dict(chat.body.get("stream_options") or {})
            opts["include_usage"] = True
            extra["stream_options"] = opts
        path = "/completions" if chat.legacy else "/chat/completions"
        body = _body_for(chat.body, chat.raw, upstream_model, extra)
        return UpstreamCall("POST", path, self.headers(api_key), body, chat.stream)

    def chat_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        obj = json_object(data)
        return data, usage_from(obj.get("usage")) if obj is not None else None

    async def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        strip_usage = not chat.client_wants_usage
        async for group in sse.blocks(chunks):
            out: list[bytes] = []
            for block in group:
                meter.chunks += 1
                if block.startswith(sse.DONE[:12]) and b"[DONE]" in block:
                    meter.done = True
                    out.append(sse.DONE)
                    continue
                metered = b'"usage"' in block or b'"finish_reason":"' in block
                if metered and self._meter_chunk(block, meter) and strip_usage:
                    continue  # the usage-only chunk the client did not ask for
                out.append(block)
            if out:
                yield b"".join(out)

    @staticmethod
    def _meter_chunk(block: bytes, meter: StreamMeter) -> bool:
        """Read usage / finish reason from one chunk; True when it is a usage-only chunk."""
        ev = sse.parse_block(block)
        if ev is None:
            return False
        obj = json_object(ev.data)
        if obj is None:
            return False
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                meter.finish_reason = choice["finish_reason"]
        usage = usage_from(obj.get("usage"))
        if usage is not None:
            meter.usage = usage
            return not obj.get("choices")
        return False

    def embeddings_request(
        self, req: EmbeddingsRequest, upstream_model: str, api_key: str
    ) -> UpstreamCall:
        body = _body_for(req.body, req.raw, upstream_model, {})
        return UpstreamCall("POST", "/embeddings", self.headers(api_key), body)

    def embeddings_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        return self.chat_response(data, model)

    def native_usage(self, data: bytes) -> Usage | None:
        obj = json_object(data)
        return usage_from(obj.get("usage")) if obj is not None else None

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        # Usage arrives once, in the last chunk, when the caller asked for include_usage.
        if b'"usage"' in data:
            usage = self.native_usage(data)
            if usage is not None:
                for f in (
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "reasoning_tokens",
                ):
                    setattr(acc, f, getattr(usage, f))


ADAPTER = OpenAIAdapter
