"""Anthropic Messages answers → canonical: the response body, the event stream, usage.

https://docs.anthropic.com/en/api/messages · https://docs.anthropic.com/en/api/messages-streaming
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice import sse
from sluice.errors import GatewayError
from sluice.providers.base import StreamMeter, Usage, json_object, require_object
from sluice.schema import ChatRequest

# https://docs.anthropic.com/en/api/messages#response-stop-reason
FINISH_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# An `error` event's type → the HTTP status it would have had
# (https://docs.anthropic.com/en/api/errors#http-errors).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def usage_from(obj: Any) -> Usage | None:
    """Anthropic's `usage` → Usage; prompt tokens include cache reads and cache writes.

    https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#tracking-cache-performance
    """
    if not isinstance(obj, dict):
        return None
    read = int(obj.get("cache_read_input_tokens") or 0)
    created = int(obj.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(obj.get("input_tokens") or 0) + read + created,
        completion_tokens=int(obj.get("output_tokens") or 0),
        cached_tokens=read,
    )


def openai_usage(u: Usage) -> dict[str, Any]:
    """Usage → OpenAI's `usage` object."""
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def completion_from(obj: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage | None]:
    """A Messages response object → an OpenAI chat.completion object and its usage."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in obj.get("content") or ():
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    usage = usage_from(obj.get("usage"))
    out = {
        "id": obj.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": obj.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASON.get(obj.get("stop_reason") or "", "stop"),
            }
        ],
    }
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out, usage


def stream_error(data: bytes) -> GatewayError:
    """An `error` event mid-stream → the GatewayError that ends the client's stream."""
    err = (json_object(data) or {}).get("error") or {}
    status = _ERROR_STATUS.get(str(err.get("type")), 502)
    message = str(err.get("message") or "upstream stream error")
    return GatewayError("EXTERNAL_SERVICE_ERROR", message, status=status)


async def chunks_from(
    chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
) -> AsyncIterator[bytes]:
    """Each Messages event → OpenAI chunks as it arrives (state in locals, per STYLE)."""
    prefix = b""  # the chunk's JSON up to the delta: id, created, model
    usage = Usage()
    tools: dict[int, int] = {}  # content block index → OpenAI tool_calls index
    async for ev in sse.events(chunks):
        meter.chunks += 1
        if ev.event == "ping":
            continue
        obj = _event(ev.data)
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = _block_delta(obj, tools, meter)
        elif kind == "content_block_start":
            delta = _block_start(obj, tools)
        elif kind == "message_start":
            prefix = _chunk_prefix(obj.get("message") or {}, model)
            usage = usage_from((obj.get("message") or {}).get("usage")) or usage
            meter.usage = usage  # from here on an aborted stream still counts its tokens
            delta = b'{"role":"assistant","content":""}'
        elif kind == "message_delta":
            fold_delta_usage(obj.get("usage"), usage)
            stop = (obj.get("delta") or {}).get("stop_reason") or ""
            meter.finish_reason = FINISH_REASON.get(stop, "stop")
            yield _chunk(prefix, b"{}", orjson.dumps(meter.finish_reason))
            continue
        elif kind == "message_stop":
            meter.done = True
            tail = _usage_chunk(prefix, usage) if chat.client_wants_usage else b""
            yield tail + sse.DONE
            continue
        elif kind == "error":
            raise stream_error(ev.data)
        else:
            continue
        if delta:
            yield _chunk(prefix, delta)


def _event(data: bytes) -> dict[str, Any]:
    return require_object(data, "NETWORK_ERROR", "stream event")


def _chunk_prefix(msg: dict[str, Any], model: str) -> bytes:
    head = {
        "id": msg.get("id"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": msg.get("model") or model,
    }
    return b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'


def _chunk(prefix: bytes, delta: bytes, finish: bytes = b"null") -> bytes:
    return b'%s%s,"logprobs":null,"finish_reason":%s}]}\n\n' % (prefix, delta, finish)


def _usage_chunk(prefix: bytes, usage: Usage) -> bytes:
    """OpenAI's final usage-only chunk (sent only when the client asked for include_usage)."""
    head = prefix[: prefix.index(b'"choices"')]
    return b'%s"choices":[],"usage":%s}\n\n' % (head, orjson.dumps(openai_usage(usage)))


def _block_start(obj: dict[str, Any], tools: dict[int, int]) -> bytes | None:
    """A tool_use block opens an OpenAI tool call with its id and name, arguments empty."""
    block = obj.get("content_block") or {}
    if block.get("type") == "tool_use":
        tools[obj["index"]] = len(tools)
        call = {
            "index": tools[obj["index"]],
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return b'{"tool_calls":[%s]}' % orjson.dumps(call)
    if block.get("type") == "text" and block.get("text"):
        return b'{"content":%s}' % orjson.dumps(block["text"])
    return None


def _block_delta(obj: dict[str, Any], tools: dict[int, int], meter: StreamMeter) -> bytes | None:
    """text_delta → content; input_json_delta → that tool call's argument fragment."""
    d = obj.get("delta") or {}
    if d.get("type") == "text_delta":
        meter.completion_chars += len(d["text"])
        return b'{"content":%s}' % orjson.dumps(d["text"])
    if d.get("type") == "input_json_delta":
        frag = d.get("partial_json") or ""
        if not frag:
            return None  # the API opens each tool's input with an empty fragment
        meter.completion_chars += len(frag)
        call = {"index": tools.get(obj.get("index", -1), 0), "function": {"arguments": frag}}
        return b'{"tool_calls":[%s]}' % orjson.dumps(call)
    return None  # thinking and signature deltas have no chat.completion counterpart


def fold_delta_usage(u: Any, acc: Usage) -> None:
    """message_delta usage is cumulative; newer API versions also repeat input counts there."""
    if not isinstance(u, dict):
        return
    if u.get("output_tokens") is not None:
        acc.completion_tokens = int(u["output_tokens"])
    if u.get("input_tokens") is not None:
        read = int(u.get("cache_read_input_tokens") or 0)
        created = int(u.get("cache_creation_input_tokens") or 0)
        acc.prompt_tokens = int(u["input_tokens"]) + read + created
        acc.cached_tokens = read
