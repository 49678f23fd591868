"""The canonical (OpenAI) shapes that translating adapters read and build.

Adapters whose provider speaks another wire format use these helpers to read an OpenAI chat
request (including a legacy `/v1/completions` prompt, served through chat) and to build
`chat.completion` / `text_completion` answers, stream chunks and embedding lists, so that
every adapter emits byte-for-byte the same OpenAI shapes.
https://platform.openai.com/docs/api-reference/chat/object
https://platform.openai.com/docs/api-reference/completions/object
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

import orjson

from sluice import sse
from sluice.errors import GatewayError, validation
from sluice.providers.base import Adapter, Usage, require_object
from sluice.schema import ChatRequest, EmbeddingsRequest


def new_id(prefix: str = "chatcmpl") -> str:
    """A fresh response id in OpenAI's style."""
    return f"{prefix}-{os.urandom(12).hex()}"


def messages_of(chat: ChatRequest) -> list[dict[str, Any]]:
    """The chat's messages; a legacy prompt becomes one user message."""
    if not chat.legacy:
        return [m for m in chat.body.get("messages") or () if isinstance(m, dict)]
    prompt = chat.body.get("prompt")
    if isinstance(prompt, list):
        if not all(isinstance(p, str) for p in prompt):
            raise validation("prompt", "token-id prompts need an upstream with /completions")
        prompt = "".join(prompt)
    return [{"role": "user", "content": str(prompt or "")}]


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def split_system(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """System/developer messages joined into one instruction, and the other messages."""
    system = [
        text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    ]
    rest = [m for m in messages if m.get("role") not in ("system", "developer")]
    return ("\n\n".join(system) if system else None), rest


def data_url(url: str) -> tuple[str, str] | None:
    """`data:<mime>;base64,<data>` → (mime, base64 data); None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    mime, _, enc = head.partition(";")
    if enc != "base64":
        data = base64.b64encode(data.encode()).decode()
    return mime or "application/octet-stream", data


def tool_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """tool_call_id → function name, from the assistant turns (tool results name no function)."""
    out: dict[str, str] = {}
    for m in messages:
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            out[str(call.get("id"))] = str(fn.get("name", ""))
    return out


def stop_list(body: dict[str, Any]) -> list[str] | None:
    """`stop` as a list (OpenAI allows a string or a list)."""
    stop = body.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def max_tokens(body: dict[str, Any]) -> int | None:
    """The output limit from either of OpenAI's names for it."""
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if value else None


def tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """One OpenAI tool call; arguments become a JSON string whatever the provider sent."""
    args = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def usage_dict(usage: Usage) -> dict[str, Any]:
    """Usage → OpenAI's `usage` object, cached and reasoning details included."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion(
    model: str,
    choices: Sequence[tuple[dict[str, Any], str | None]],
    usage: Usage | None,
    response_id: str | None = None,
) -> bytes:
    """(message, finish_reason) pairs → chat.completion bytes."""
    obj: dict[str, Any] = {
        "id": response_id or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": msg, "logprobs": None, "finish_reason": fr}
            for i, (msg, fr) in enumerate(choices)
        ],
    }
    if usage is not None:
        obj["usage"] = usage_dict(usage)
    return orjson.dumps(obj)


def text_completion(data: bytes) -> bytes:
    """A chat.completion → the legacy text_completion shape (for /v1/completions callers)."""
    obj = loads(data)
    obj["object"] = "text_completion"
    obj["choices"] = [
        {
            "text": text_of((ch.get("message") or {}).get("content")),
            "index": ch.get("index", i),
            "logprobs": None,
            "finish_reason": ch.get("finish_reason"),
        }
        for i, ch in enumerate(obj.get("choices") or ())
    ]
    return orjson.dumps(obj)


def answer(
    adapter: Adapter, chat: ChatRequest, data: bytes, model: str
) -> tuple[bytes, Usage | None]:
    """An adapter's chat answer, in text_completion shape when a legacy request was served
    through chat (an adapter with `completions` set speaks the legacy endpoint itself)."""
    body, usage = adapter.chat_response(data, model)
    if chat.legacy and not adapter.completions:
        body = text_completion(body)
    return body, usage


def assistant(text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant message in OpenAI's shape."""
    msg: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


class Chunks:
    """Builds the SSE chunks of one streamed answer (immutable per stream: id, model, created)."""

    def __init__(self, chat: ChatRequest, model: str, response_id: str | None = None) -> None:
        self.legacy = chat.legacy
        self.wants_usage = chat.client_wants_usage
        self.id = response_id or new_id("cmpl" if chat.legacy else "chatcmpl")
        self.model = model
        self.created = int(time.time())

    def _event(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion" if self.legacy else "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            obj["usage"] = usage_dict(usage)
        return sse.encode(obj)

    def delta(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        """One chunk carrying `delta` (a legacy stream keeps only the text)."""
        if self.legacy:
            if not delta.get("content") and finish is None:
                return b""
            choice = {"text": delta.get("content") or "", "index": index, "finish_reason": finish}
            return self._event([{**choice, "logprobs": None}])
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._event([choice])

    def tool_delta(
        self, index: int, call_id: str | None, name: str | None, args: str, choice: int = 0
    ) -> bytes:
        """A tool-call delta: the first one of a call carries id and name, later ones only
        argument text (https://platform.openai.com/docs/guides/function-calling#streaming)."""
        call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
        if call_id is not None:
            call.update(id=call_id, type="function")
            call["function"]["name"] = name
        return b"" if self.legacy else self.delta({"tool_calls": [call]}, index=choice)

    def end(self, usage: Usage | None) -> bytes:
        """The usage chunk (when the client asked for it) and `[DONE]`."""
        out = self._event([], usage) if self.wants_usage and usage is not None else b""
        return out + sse.DONE


def embeddings(vectors: list[Any], model: str, usage: Usage | None) -> bytes:
    """Vectors → OpenAI's embeddings list."""
    u = usage or Usage()
    obj = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens},
    }
    return orjson.dumps(obj)


def embeddings_answer(
    adapter: Adapter, req: EmbeddingsRequest, data: bytes, model: str
) -> tuple[bytes, Usage | None]:
    """An adapter's embeddings answer, with vectors as base64 float32 when the caller asked
    (the openai SDKs ask by default:
    https://platform.openai.com/docs/api-reference/embeddings/create#embeddings-create-encoding_format)."""
    body, usage = adapter.embeddings_response(data, model)
    if req.body.get("encoding_format") != "base64" or b'"embedding":[' not in body:
        return body, usage  # floats not asked for as base64, or already encoded upstream
    obj = loads(body)
    for item in obj.get("data") or ():
        vector = item.get("embedding")
        if isinstance(vector, list):
            packed = struct.pack(f"<{len(vector)}f", *vector)
            item["embedding"] = base64.b64encode(packed).decode()
    return orjson.dumps(obj), usage


def text_inputs(inputs: list[Any]) -> list[str]:
    """Embedding inputs as strings (token-id inputs need an OpenAI upstream)."""
    if not all(isinstance(x, str) for x in inputs):
        raise validation("input", "token-id inputs are only supported by OpenAI upstreams")
    return [str(x) for x in inputs]


def one_choice(provider_kind: str, body: dict[str, Any]) -> None:
    """A 400 for `n` > 1 where the provider returns a single choice (better than silently
    answering fewer choices than asked)."""
    if (body.get("n") or 1) > 1:
        raise unsupported(provider_kind, "n > 1 (several choices)", "n")


def unsupported(provider_kind: str, what: str, param: str | None = None) -> GatewayError:
    """A 400 for a feature this provider's API does not offer."""
    return GatewayError(
        "VALIDATION_ERROR", f"{provider_kind} upstreams do not support {what}", param=param
    )


def loads(data: bytes) -> dict[str, Any]:
    """A provider's JSON object body; a 502 when it is not one."""
    return require_object(data, "EXTERNAL_SERVICE_ERROR", "JSON body")
