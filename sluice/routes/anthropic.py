"""Anthropic's Messages API in front of every routed model: `/v1/messages` and count_tokens.

A request is translated to the canonical form and run through the pipeline; the canonical
answer (or stream) is reshaped back into Messages format. When the routed target is itself
an `anthropic` provider, the request bytes go upstream and the answer comes back untouched
(usage still metered). Errors use Anthropic's shape (the Route's `shape`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from sluice import errors, tokenizer
from sluice.errors import GatewayError
from sluice.pipeline import Operation
from sluice.providers.anthropic import AnthropicAdapter
from sluice.providers.anthropic import inbound as am
from sluice.providers.base import Adapter, StreamMeter, UpstreamCall, Usage
from sluice.routes import Route
from sluice.schema import ChatRequest

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request


def stream_error(err: GatewayError) -> bytes:
    """The one `error` event that ends a failed Messages stream.

    https://docs.anthropic.com/en/api/messages-streaming#error-events
    """
    return b"event: error\ndata: " + errors.anthropic_body(err) + b"\n\n"


def messages_operation(m: am.MessagesRequest, client_headers: dict[str, str]) -> Operation:
    """A Messages request as an Operation; pass-through when the target speaks Messages."""

    def build(a: Adapter, model: str, key: str) -> UpstreamCall:
        if isinstance(a, AnthropicAdapter):
            return a.messages_call(m.raw, m.body, model, key, client_headers)
        return a.chat_request(m.chat, model, key)

    def answer(a: Adapter, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        if isinstance(a, AnthropicAdapter):
            return data, a.native_usage(data)
        body, usage = a.chat_response(data, model)
        return am.message_from(body, usage), usage

    def relay(
        a: Adapter, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        if isinstance(a, AnthropicAdapter):
            return am.passthrough_stream(chunks, a, meter)
        return am.messages_stream(a.chat_stream(chunks, chat, model, meter))

    return Operation(
        m.chat.model,
        None,
        m.stream,
        build=build,
        answer=answer,
        chat=m.chat,
        prompt_chars=len(m.raw),
        relay=relay,
        stream_error=stream_error,
    )


async def messages(gw: Gateway, req: Request) -> None:
    """POST /v1/messages: Anthropic's Messages API, any routed model, streaming included."""
    m = am.parse(await req.body(gw.settings.server.max_request_bytes))
    await gw.pipeline.run(req, messages_operation(m, req.headers))


async def count_tokens(gw: Gateway, req: Request) -> None:
    """POST /v1/messages/count_tokens → {"input_tokens": N} (exact or a documented estimate)."""
    await gw.auth.authenticate(req)
    model, messages, tools = am.parse_count(await req.body(gw.settings.server.max_request_bytes))
    n, _ = tokenizer.count_messages(messages, model)
    if tools:
        n += tokenizer.count(orjson.dumps(tools).decode(), model)[0]
    await req.json(200, {"input_tokens": n})


ROUTES = [
    Route(("POST",), "/v1/messages", messages, shape="anthropic", routed=True),
    Route(("POST",), "/v1/messages/count_tokens", count_tokens, shape="anthropic"),
]
