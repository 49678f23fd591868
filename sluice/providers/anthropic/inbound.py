"""Anthropic's Messages format in front of every model: the `/v1/messages` caller's side.

Messages request → canonical (OpenAI chat) request, canonical answer → Messages response,
canonical SSE → Anthropic's event sequence, and the untouched pass-through (usage still
metered) for when the target is itself an `anthropic` provider. The upstream direction is in
`request` and `response`. https://docs.anthropic.com/en/api/messages
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta

from sluice import schema, sse
from sluice.errors import GatewayError, validation
from sluice.providers.anthropic.response import stream_error
from sluice.providers.base import Adapter, StreamMeter, Usage, require_object
from sluice.providers.openai import usage_from as openai_usage_from
from sluice.schema import ChatRequest

# chat.completion finish_reason → Messages stop_reason
# (https://docs.anthropic.com/en/api/messages#response-stop-reason)
STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_MAX_USER = 64  # the longest `user` sent upstream as is (see _user_id)


class _Turn(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class _Count(msgspec.Struct):
    """The fields /v1/messages/count_tokens takes."""

    model: schema.ModelName
    messages: Annotated[list[_Turn], Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class _Messages(_Count):
    """A Messages request: https://docs.anthropic.com/en/api/messages#body."""

    max_tokens: schema.PositiveInt = 0  # required: checked below to name it in the error
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: schema.Unit | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None


class MessagesRequest(msgspec.Struct):
    """A validated Messages request: the bytes to forward and its canonical translation."""

    body: dict[str, Any]
    raw: bytes
    stream: bool
    chat: ChatRequest


# --- Messages request → canonical -----------------------------------------------------------
def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    out = []
    for i, b in enumerate(content or ()):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise validation(f"{where}[{i}].type", "only text blocks are allowed here")
        out.append(str(b.get("text", "")))
    return "\n".join(out)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type')};base64,{src.get('data')}"
    elif src.get("type") == "url":
        url = str(src.get("url"))
    else:
        raise validation(f"{where}.source.type", "must be base64 or url")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A base64 document (PDF) → OpenAI's inline `file` part
    (https://platform.openai.com/docs/guides/pdf-files)."""
    src = block.get("source") or {}
    if src.get("type") != "base64":
        raise validation(f"{where}.source.type", "only base64 documents are supported here")
    url = f"data:{src.get('media_type')};base64,{src.get('data')}"
    return {"type": "file", "file": {"file_data": url}}


def _tool_result(block: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool_result's text, and its images and documents as user-message parts: OpenAI's
    tool messages hold text only, so those follow in the turn's user message (Claude Code's
    Read tool answers with an image block when it reads a picture)."""
    content = block.get("content") or ""
    texts, media = ([content] if isinstance(content, str) else []), []
    for j, c in enumerate(content if isinstance(content, list) else ()):
        kind, here = c.get("type") if isinstance(c, dict) else None, f"{where}.content[{j}]"
        if kind == "text":
            texts.append(str(c.get("text", "")))
        elif kind == "image":
            media.append(_image(c, here))
        elif kind == "document":
            media.append(_document(c, here))
        else:
            raise validation(f"{here}.type", "only text, image and document blocks are allowed")
    text = "\n".join(texts)
    if media and not text:
        text = "(the tool's output is attached to the next user message)"
    return (f"Error: {text}" if block.get("is_error") else text), media


def _user(turn: _Turn, where: str) -> list[dict[str, Any]]:
    """One user turn → tool messages (its tool_result blocks) then a user message."""
    if isinstance(turn.content, str):
        return [{"role": "user", "content": turn.content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, b in enumerate(turn.content):
        kind, here = b.get("type"), f"{where}.content[{i}]"
        if kind == "text":
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        elif kind == "image":
            parts.append(_image(b, here))
        elif kind == "document":
            parts.append(_document(b, here))
        elif kind == "tool_result":
            text, media = _tool_result(b, here)
            tools.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": text})
            parts.extend(media)
        else:
            raise validation(f"{here}.type", f"block type {kind!r} is not supported here")
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _assistant(turn: _Turn, where: str) -> dict[str, Any]:
    """Text blocks → content; tool_use blocks → tool_calls; thinking blocks are dropped."""
    if isinstance(turn.content, str):
        return {"role": "assistant", "content": turn.content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, b in enumerate(turn.content):
        kind = b.get("type")
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "tool_use":
            args = orjson.dumps(b.get("input") or {}).decode()
            fn = {"name": b.get("name"), "arguments": args}
            calls.append({"id": b.get("id"), "type": "function", "function": fn})
        elif kind not in ("thinking", "redacted_thinking"):
            raise validation(f"{where}.content[{i}].type", f"block type {kind!r} not supported")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def chat_messages(m: _Count) -> list[dict[str, Any]]:
    """The canonical `messages`: the system prompt first, then each turn."""
    out: list[dict[str, Any]] = []
    if m.system:
        out.append({"role": "system", "content": _text(m.system, "system")})
    for i, turn in enumerate(m.messages):
        if turn.role == "user":
            out.extend(_user(turn, f"messages[{i}]"))
        else:
            out.append(_assistant(turn, f"messages[{i}]"))
    return out


def _tool_fields(m: _Count) -> dict[str, Any]:
    """tools and tool_choice (https://docs.anthropic.com/en/docs/build-with-claude/tool-use)."""
    out: dict[str, Any] = {}
    tools = []
    for i, t in enumerate(m.tools or ()):
        if not isinstance(t.get("name"), str) or t.get("type") not in (None, "custom"):
            raise validation(f"tools[{i}]", "only client tools with a name are supported here")
        fn = {"name": t["name"], "parameters": t.get("input_schema") or {"type": "object"}}
        if t.get("description"):
            fn["description"] = t["description"]
        tools.append({"type": "function", "function": fn})
    if tools:
        out["tools"] = tools
    tc = m.tool_choice or {}
    kind = tc.get("type")
    if kind in ("auto", "none"):
        out["tool_choice"] = kind
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": tc.get("name")}}
    elif kind is not None:
        raise validation("tool_choice.type", "must be auto, any, tool or none")
    if tc.get("disable_parallel_tool_use") and tools:
        out["parallel_tool_calls"] = False
    return out


def _user_id(user_id: str) -> str:
    """metadata.user_id as OpenAI's `user`: Anthropic allows 256 characters, OpenAI-compatible
    upstreams fewer (OpenRouter 128, others 64), and Claude Code sends a ~150-character JSON
    object; a longer id goes as its SHA-256 hex digest (64 characters, just as stable)."""
    if len(user_id) <= _MAX_USER:
        return user_id
    return hashlib.sha256(user_id.encode()).hexdigest()


def _canonical(m: _Messages) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": m.model,
        "messages": chat_messages(m),
        "max_tokens": m.max_tokens,
    }
    for name in ("temperature", "top_p"):
        if getattr(m, name) is not None:
            body[name] = getattr(m, name)
    if m.stop_sequences:
        body["stop"] = m.stop_sequences
    body.update(_tool_fields(m))
    if m.metadata and isinstance(m.metadata.get("user_id"), str):
        body["user"] = _user_id(m.metadata["user_id"])
    if m.stream:
        # usage feeds message_delta, so it is always asked for
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse(raw: bytes) -> MessagesRequest:
    """Validate a /v1/messages body (the offending field named) and translate it."""
    m, body = schema.parse_typed(raw, _Messages)
    if not m.max_tokens:
        raise validation("max_tokens", "Field required")
    canonical = _canonical(m)
    chat = ChatRequest(
        body=canonical,
        raw=orjson.dumps(canonical),
        model=m.model,
        provider=None,
        stream=bool(m.stream),
        client_wants_usage=True,
        max_tokens=m.max_tokens,
    )
    return MessagesRequest(body, raw, bool(m.stream), chat)


def parse_count(raw: bytes) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """A count_tokens body → (model, canonical messages, tools)."""
    m, _ = schema.parse_typed(raw, _Count)
    return m.model, chat_messages(m), m.tools or []


# --- canonical answer → Messages response ---------------------------------------------------
def anthropic_usage(u: Usage | None) -> dict[str, Any]:
    """Usage → Anthropic's `usage`: input_tokens excludes cache reads there."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": u.prompt_tokens - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    try:
        args = orjson.loads(fn.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        args = {}  # a model's malformed arguments: Anthropic's input must be an object
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}


def message_from(data: bytes, usage: Usage | None) -> bytes:
    """A chat.completion body → a Messages response body."""
    try:
        obj = orjson.loads(data)
        choice = obj["choices"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise GatewayError("NETWORK_ERROR", "upstream answered an unreadable completion") from None
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    content.extend(_tool_use(c) for c in msg.get("tool_calls") or ())
    out = {
        "id": obj.get("id"),
        "type": "message",
        "role": "assistant",
        "model": obj.get("model"),
        "content": content,
        "stop_reason": STOP_REASON.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }
    return orjson.dumps(out)


# --- canonical SSE → Anthropic's event sequence ---------------------------------------------
def _start(obj: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {
        "id": obj.get("id"),
        "type": "message",
        "role": "assistant",
        "model": obj.get("model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return sse.encode({"type": "message_start", "message": message}, "message_start")


def _open(index: int, block: dict[str, Any]) -> bytes:
    ev = {"type": "content_block_start", "index": index, "content_block": block}
    return sse.encode(ev, "content_block_start")


def _close(index: int) -> bytes:
    return sse.encode({"type": "content_block_stop", "index": index}, "content_block_stop")


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    ev = {"type": "content_block_delta", "index": index, "delta": delta}
    return sse.encode(ev, "content_block_delta")


def _end(stop: str | None, usage: Usage | None) -> bytes:
    delta = {"stop_reason": stop or "end_turn", "stop_sequence": None}
    ev = {"type": "message_delta", "delta": delta, "usage": anthropic_usage(usage)}
    return sse.encode(ev, "message_delta") + sse.encode({"type": "message_stop"}, "message_stop")


async def messages_stream(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """OpenAI chunk SSE → message_start, content blocks, message_delta, message_stop.

    One piece out for each piece in: the adapter marks the stream done while it yields the
    piece that holds [DONE], and the pipeline ends the response after the piece it is given
    next, so that piece must carry the whole translated end (message_stop included)."""
    started = False
    block = -1  # the open content block's index, -1 when none is open
    text_open = False
    tools: dict[int, int] = {}  # OpenAI tool_calls index → content block index
    stop: str | None = None
    usage: Usage | None = None
    async for group in sse.blocks(pieces):
        out: list[bytes] = []
        for raw in group:
            ev = sse.parse_block(raw)
            if ev is None:
                continue
            if ev.data == b"[DONE]":
                out.append((_close(block) if block >= 0 else b"") + _end(stop, usage))
                yield b"".join(out)
                return
            obj = _chunk_obj(ev.data)
            if not started:
                started = True
                out.append(_start(obj))
            if obj.get("usage"):
                usage = openai_usage_from(obj["usage"])
            for choice in obj.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    if not text_open:
                        out.append(_close(block) if block >= 0 else b"")
                        block, text_open = block + 1, True
                        out.append(_open(block, {"type": "text", "text": ""}))
                    out.append(_delta(block, {"type": "text_delta", "text": delta["content"]}))
                for call in delta.get("tool_calls") or ():
                    i, fn = call.get("index", 0), call.get("function") or {}
                    if i not in tools:
                        out.append(_close(block) if block >= 0 else b"")
                        block, text_open, tools[i] = block + 1, False, block + 1
                        tool = {"type": "tool_use", "id": call.get("id"), "name": fn.get("name")}
                        out.append(_open(block, {**tool, "input": {}}))
                    if fn.get("arguments"):
                        frag = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                        out.append(_delta(tools[i], frag))
                if choice.get("finish_reason"):
                    stop = STOP_REASON.get(choice["finish_reason"], "end_turn")
        if out:
            yield b"".join(out)


def _chunk_obj(data: bytes) -> dict[str, Any]:
    """One canonical chunk; an in-stream OpenAI error object ends the stream as an error."""
    obj = require_object(data, "NETWORK_ERROR", "stream chunk")
    err = obj.get("error")
    if err is not None:
        msg = err.get("message") if isinstance(err, dict) else err
        raise GatewayError("EXTERNAL_SERVICE_ERROR", str(msg or "upstream stream error"))
    return obj


async def passthrough_stream(
    chunks: AsyncIterator[bytes], adapter: Adapter, meter: StreamMeter
) -> AsyncIterator[bytes]:
    """Anthropic's own stream, bytes untouched, with usage read from its events.

    An upstream `error` event is not forwarded: it is raised, so the client gets exactly one.
    """
    acc = Usage()
    meter.usage = acc
    async for group in sse.blocks(chunks):
        for n, block in enumerate(group):
            meter.chunks += 1
            ev = sse.parse_block(block)
            if ev is None:
                continue
            if ev.event in ("message_start", "message_delta"):
                adapter.native_stream_usage(ev.data, acc)
            elif ev.event == "message_stop":
                meter.done = True
            elif ev.event == "error":
                if n:
                    yield b"".join(group[:n])
                raise stream_error(ev.data)
        yield b"".join(group)
