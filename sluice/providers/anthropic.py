"""Kind `anthropic`: Anthropic's Messages API behind the OpenAI-shaped canonical form.

Canonical chat → Messages request, Messages response → chat.completion, and the Messages
event stream → chat.completion.chunk SSE, usage included. The other direction (Anthropic
callers on `/v1/messages` in front of any model) lives in `sluice.providers.anthropic_messages`.

Wire format: https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/api/messages-streaming
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice import sse
from sluice.errors import GatewayError, validation
from sluice.providers.base import Adapter, EnvProvider, StreamMeter, UpstreamCall, Usage
from sluice.schema import ChatRequest

API_VERSION = "2023-06-01"  # https://docs.anthropic.com/en/api/versioning
PASSTHROUGH_HEADERS = ("anthropic-version", "anthropic-beta")  # from a /v1/messages caller
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI callers may omit it

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

# `response_format` has no Messages counterpart; the documented approximation is an
# instruction in the system prompt (https://docs.anthropic.com/en/docs/test-and-evaluate/
# strengthen-guardrails/increase-consistency#specify-the-desired-output-format).
_JSON_INSTRUCTION = "Respond only with a single valid JSON object and no other text."


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


# --- canonical → Messages request ---------------------------------------------------------
def _text_of(content: Any, where: str) -> str:
    """The text of a system/developer/tool message (a string or text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, p in enumerate(content):
        if p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise validation(f"{where}.content[{i}]", "only text parts are allowed here")
        parts.append(p["text"])
    return "\n".join(parts)


def _image(url: str, where: str) -> dict[str, Any]:
    """An OpenAI image URL → an image block: data URLs become base64 sources.

    https://docs.anthropic.com/en/docs/build-with-claude/vision#base64-encoded-image-example
    """
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media, _, enc = head[5:].partition(";")
        if not sep or enc != "base64" or not media:
            raise validation(where, "a data URL must be data:<media type>;base64,<data>")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for i, p in enumerate(content or ()):
        kind = p.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(p.get("text", ""))})
        elif kind == "image_url":
            img = p.get("image_url")
            url = img.get("url") if isinstance(img, dict) else img
            if not isinstance(url, str):
                raise validation(f"{where}.content[{i}].image_url.url", "must be a string")
            blocks.append(_image(url, f"{where}.content[{i}].image_url.url"))
        else:
            raise validation(f"{where}.content[{i}].type", f"unsupported part type {kind!r}")
    return blocks


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Assistant text plus `tool_calls` → text and tool_use blocks."""
    text = _text_of(m.get("content"), where)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, call in enumerate(m.get("tool_calls") or ()):
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise validation(f"{where}.tool_calls[{i}].function.arguments", "not JSON") from None
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}
        )
    return blocks


def _messages(chat_messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and Messages turns; tool results join one user turn (consecutive merged).

    https://docs.anthropic.com/en/docs/build-with-claude/tool-use#handling-tool-use-and-tool-result-content-blocks
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(chat_messages):
        role, where = m["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content"), where))
            continue
        if role in ("tool", "function"):
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id") or m.get("name"),
                "content": _text_of(m.get("content"), where),
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if role == "assistant":
            out.append({"role": "assistant", "content": _assistant_blocks(m, where)})
            continue
        content = _user_blocks(m.get("content"), where)
        last = out[-1] if out else None
        if last and last["role"] == "user" and isinstance(last["content"], list):
            # a user message right after tool results shares their turn
            more = [{"type": "text", "text": content}] if isinstance(content, str) else content
            last["content"].extend(more)
        else:
            out.append({"role": "user", "content": content})
    return system, out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI tool_choice → Anthropic's (https://docs.anthropic.com/en/docs/build-with-claude/tool-use#forcing-tool-use)."""
    if choice is None and parallel is not False:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise validation("tool_choice", "must be auto, none, required or a named function")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function")
        if t.get("type") != "function" or not isinstance(fn, dict) or "name" not in fn:
            raise validation(f"tools[{i}]", "only function tools with a name are supported")
        tool = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def messages_body(chat: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The canonical request as a Messages request body."""
    b = chat.body
    if (b.get("n") or 1) > 1:
        raise validation("n", "Anthropic returns one choice; n must be 1")
    system, turns = _messages(b["messages"])
    fmt = b.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        schema = (fmt.get("json_schema") or {}).get("schema")
        hint = f" It must match this JSON schema: {orjson.dumps(schema).decode()}" if schema else ""
        system.append(_JSON_INSTRUCTION + hint)
    out: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": chat.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    if b.get("temperature") is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1: clamp rather than fail the request.
        out["temperature"] = min(float(b["temperature"]), 1.0)
    if b.get("top_p") is not None:
        out["top_p"] = b["top_p"]
    stop = b.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if b.get("tools"):
        out["tools"] = _tools(b["tools"])
    choice = _tool_choice(b.get("tool_choice"), b.get("parallel_tool_calls"))
    if choice is not None and b.get("tools"):
        out["tool_choice"] = choice
    if isinstance(b.get("user"), str):
        out["metadata"] = {"user_id": b["user"]}
    if chat.stream:
        out["stream"] = True  # Anthropic streams always carry usage: nothing to force
    return out


# --- Messages response → chat.completion ----------------------------------------------------
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
    try:
        err = orjson.loads(data).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        err = {}
    status = _ERROR_STATUS.get(str(err.get("type")), 502)
    message = str(err.get("message") or "upstream stream error")
    return GatewayError("EXTERNAL_SERVICE_ERROR", message, status=status)


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    default_base_url = "https://api.anthropic.com"
    env_providers = (EnvProvider("anthropic", ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL"),)
    default_routes = (("claude-*", "anthropic"),)

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

    async def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
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
                _fold_delta_usage(obj.get("usage"), usage)
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

    # --- native pass-through hooks ------------------------------------------------------
    def native_usage(self, data: bytes) -> Usage | None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return usage_from(obj.get("usage")) if isinstance(obj, dict) else None

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        # message_start carries input (and cache) tokens; message_delta the cumulative output.
        # https://docs.anthropic.com/en/api/messages-streaming#event-types
        if b'"usage"' not in data:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        if obj.get("type") == "message_start":
            u = usage_from((obj.get("message") or {}).get("usage"))
            if u is not None:
                acc.prompt_tokens, acc.cached_tokens = u.prompt_tokens, u.cached_tokens
                acc.completion_tokens = u.completion_tokens
        elif obj.get("type") == "message_delta":
            _fold_delta_usage(obj.get("usage"), acc)

    def error_message(self, data: bytes) -> str:
        """`{"type": "error", "error": {"type", "message"}}` → the message.

        https://docs.anthropic.com/en/api/errors#error-shapes
        """
        try:
            err = orjson.loads(data).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            err = None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        return super().error_message(data)


def _event(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise GatewayError("NETWORK_ERROR", "upstream sent a malformed stream event") from None
    if not isinstance(obj, dict):
        raise GatewayError("NETWORK_ERROR", "upstream sent a malformed stream event")
    return obj


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


def _fold_delta_usage(u: Any, acc: Usage) -> None:
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


ADAPTER = AnthropicAdapter
