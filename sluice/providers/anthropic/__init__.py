"""Kind `anthropic`: Anthropic's Messages format, both directions, in this package.

- `request`: canonical (OpenAI chat) request → Messages request, for upstream calls;
- `response`: Messages response and event stream → canonical chat.completion(.chunk), usage;
- `inbound`: Anthropic callers on `/v1/messages` in front of any model (Messages request →
  canonical, canonical answer and SSE → Messages), and the untouched pass-through.

Wire format: https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/api/messages-streaming
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice.errors import GatewayError, validation
from sluice.providers.anthropic.request import messages_body
from sluice.providers.anthropic.response import (
    chunks_from,
    completion_from,
    fold_delta_usage,
    usage_from,
)
from sluice.providers.base import (
    Adapter,
    EnvProvider,
    StreamMeter,
    UpstreamCall,
    Usage,
    json_object,
)
from sluice.schema import ChatRequest

API_VERSION = "2023-06-01"  # https://docs.anthropic.com/en/api/versioning
PASSTHROUGH_HEADERS = ("anthropic-version", "anthropic-beta")  # from a /v1/messages caller


class AnthropicAdapter(Adapter):
    """Anthropic's Messages API as an upstream (and the target of `/v1/messages` pass-through)."""

    kind = "anthropic"
    default_base_url = "https://api.anthropic.com"
    env_providers = (EnvProvider("anthropic", ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL"),)
    default_routes = (("claude-*", "anthropic"),)
    native_prefix = "anthropic"
    # https://developers.cloudflare.com/ai-gateway/providers/anthropic/
    ai_gateway_slugs = {"https://api.anthropic.com": "anthropic"}

    def auth_headers(self, api_key: str) -> dict[str, str]:
        # https://docs.anthropic.com/en/api/overview#authentication
        return {"x-api-key": api_key, "anthropic-version": API_VERSION}

    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        if chat.legacy:
            raise validation("prompt", "legacy completions are not available for Anthropic")
        body = orjson.dumps(messages_body(chat, upstream_model))
        return UpstreamCall("POST", "/v1/messages", self.headers(api_key), body, chat.stream)

    def messages_call(
        self,
        raw: bytes,
        body: dict[str, Any],
        upstream_model: str,
        api_key: str,
        client_headers: dict[str, str],
    ) -> UpstreamCall:
        """A Messages request forwarded as received (re-encoded only to change the model).

        The caller's `anthropic-version` / `anthropic-beta` go along: the body is in their
        format (https://docs.anthropic.com/en/api/versioning, .../beta-headers).
        """
        if body.get("model") != upstream_model:
            raw = orjson.dumps({**body, "model": upstream_model})
        headers = self.headers(api_key)
        for name in PASSTHROUGH_HEADERS:
            if name in client_headers:
                headers[name] = client_headers[name]
        return UpstreamCall("POST", "/v1/messages", headers, raw, bool(body.get("stream")))

    def chat_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise GatewayError("NETWORK_ERROR", "upstream answered malformed JSON") from None
        out, usage = completion_from(obj, model)
        return orjson.dumps(out), usage

    def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        """Messages events → OpenAI chunks, each as it arrives (see `response.chunks_from`)."""
        return chunks_from(chunks, chat, model, meter)

    # --- native pass-through hooks ------------------------------------------------------
    def native_usage(self, data: bytes) -> Usage | None:
        obj = json_object(data)
        return usage_from(obj.get("usage")) if obj is not None else None

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        # message_start carries input (and cache) tokens; message_delta the cumulative output.
        # https://docs.anthropic.com/en/api/messages-streaming#event-types
        if b'"usage"' not in data:
            return
        obj = json_object(data)
        if obj is None:
            return
        if obj.get("type") == "message_start":
            u = usage_from((obj.get("message") or {}).get("usage"))
            if u is not None:
                acc.prompt_tokens, acc.cached_tokens = u.prompt_tokens, u.cached_tokens
                acc.completion_tokens = u.completion_tokens
        elif obj.get("type") == "message_delta":
            fold_delta_usage(obj.get("usage"), acc)

    def error_message(self, data: bytes) -> str:
        """`{"type": "error", "error": {"type", "message"}}` → the message.

        https://docs.anthropic.com/en/api/errors#error-shapes
        """
        err = (json_object(data) or {}).get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        return super().error_message(data)


ADAPTER = AnthropicAdapter
