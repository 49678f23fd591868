"""Request bodies: parse once, validate every field, name the offending one (SPEC §6).

msgspec validates the typed view (fast, with JSON paths in its errors); the untyped dict is
kept for forwarding and translation, so unknown fields still reach the provider.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from sluice.errors import GatewayError, validation

Unit = Annotated[float, Meta(ge=0, le=1)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]
ModelName = Annotated[str, Meta(min_length=1, max_length=256)]


class _Message(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Chat(msgspec.Struct):
    messages: Annotated[list[_Message], Meta(min_length=1)]
    model: ModelName | None = None
    provider: str | dict[str, Any] | None = None  # a string is ours; an object is OpenRouter's
    temperature: Temperature | None = None
    top_p: Unit | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    parallel_tool_calls: bool | None = None


class _Completion(msgspec.Struct):
    prompt: str | Annotated[list[str | int | list[int]], Meta(min_length=1)]
    model: ModelName | None = None
    provider: str | dict[str, Any] | None = None  # a string is ours; an object is OpenRouter's
    temperature: Temperature | None = None
    top_p: Unit | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    max_tokens: PositiveInt | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    suffix: str | None = None
    echo: bool | None = None
    seed: int | None = None
    user: str | None = None


class _Embeddings(msgspec.Struct):
    input: str | list[str | int | list[int]]
    model: ModelName | None = None
    provider: str | dict[str, Any] | None = None  # a string is ours; an object is OpenRouter's
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None
    user: str | None = None


class ChatRequest(msgspec.Struct):
    """A validated chat (or legacy completion) request: typed facts plus the body to forward."""

    body: dict[str, Any]
    raw: bytes
    model: str | None
    provider: str | None
    stream: bool
    client_wants_usage: bool  # the client asked for the usage chunk itself
    max_tokens: int | None
    legacy: bool = False  # arrived on /v1/completions


class EmbeddingsRequest(msgspec.Struct):
    """A validated embeddings request."""

    body: dict[str, Any]
    raw: bytes
    model: str | None
    provider: str | None
    inputs: list[Any]


# Fields that would let a request choose the upstream (SPEC §6), compared without - and _.
_UPSTREAM_FIELDS = {
    "apibase",
    "baseurl",
    "customhost",
    "apihost",
    "apiurl",
    "apiendpoint",
    "azureendpoint",
    "upstreamurl",
    "proxyurl",
    "targeturl",
    "endpointurl",
}
_SUSPECT = re.compile(
    rb"(?i)\"(api[_-]?base|base[_-]?url|custom[_-]?host|api[_-]?host|api[_-]?url|api[_-]?endpoint"
    rb"|azure[_-]?endpoint|upstream[_-]?url|proxy[_-]?url|target[_-]?url|endpoint[_-]?url)\"|\\u"
)


def _find_upstream_field(value: Any, path: str) -> str | None:
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if str(k).lower().replace("_", "").replace("-", "") in _UPSTREAM_FIELDS:
                return here
            found = _find_upstream_field(v, here)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_upstream_field(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _decode(raw: bytes, kind: type[Any]) -> tuple[Any, dict[str, Any]]:
    """Typed and untyped views of one JSON body, or a 400 naming the field."""
    if not raw:
        raise validation("body", "a JSON body is required")
    try:
        body = msgspec.json.decode(raw)
    except UnicodeDecodeError:
        raise validation("body", "invalid UTF-8") from None
    except RecursionError:
        raise validation("body", "JSON nested too deeply") from None
    except msgspec.DecodeError as exc:
        text = str(exc)
        if "UTF-8" in text or "utf-8" in text:
            raise validation("body", "invalid UTF-8") from None
        if "depth" in text.lower():
            raise validation("body", "JSON nested too deeply") from None
        raise validation("body", f"malformed JSON ({text})") from None
    if not isinstance(body, dict):
        raise validation("body", "must be a JSON object")
    if _SUSPECT.search(raw):
        where = _find_upstream_field(body, "")
        if where:
            raise validation(where, "the upstream is chosen by configuration, not by the request")
    try:
        typed = msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise _field_error(str(exc)) from None
    except RecursionError:
        raise validation("body", "JSON nested too deeply") from None
    return typed, body


_MISSING = re.compile(r"missing required field `([^`]+)`")


def _field_error(text: str) -> GatewayError:
    """msgspec's "… - at `$.a[0].b`" → a 400 whose param is `a[0].b`."""
    msg, sep, where = text.rpartition(" - at `")
    if not sep:
        msg, where = text, ""
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    missing = _MISSING.search(msg)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        msg = "required"
    return validation(path or "body", msg)


def parse_chat(raw: bytes) -> ChatRequest:
    """Validate a /v1/chat/completions body."""
    c, body = _decode(raw, _Chat)
    stream = bool(c.stream)
    if c.stream_options is not None and not stream:
        raise validation("stream_options", "only allowed when stream is true")
    wants_usage = bool(c.stream_options and c.stream_options.include_usage)
    return ChatRequest(
        body=body,
        raw=raw,
        model=c.model,
        provider=c.provider if isinstance(c.provider, str) else None,
        stream=stream,
        client_wants_usage=wants_usage,
        max_tokens=c.max_completion_tokens or c.max_tokens,
    )


def parse_completion(raw: bytes) -> ChatRequest:
    """Validate a legacy /v1/completions body."""
    c, body = _decode(raw, _Completion)
    stream = bool(c.stream)
    wants_usage = bool(c.stream_options and c.stream_options.include_usage)
    return ChatRequest(
        body=body,
        raw=raw,
        model=c.model,
        provider=c.provider if isinstance(c.provider, str) else None,
        stream=stream,
        client_wants_usage=wants_usage,
        max_tokens=c.max_tokens,
        legacy=True,
    )


def parse_embeddings(raw: bytes) -> EmbeddingsRequest:
    """Validate a /v1/embeddings body."""
    e, body = _decode(raw, _Embeddings)
    inputs = e.input if isinstance(e.input, list) else [e.input]
    if not inputs:
        raise validation("input", "must not be empty")
    return EmbeddingsRequest(
        body=body,
        raw=raw,
        model=e.model,
        provider=e.provider if isinstance(e.provider, str) else None,
        inputs=inputs,
    )


def refuse_upstream_fields(raw: bytes) -> None:
    """400 when a JSON body names an upstream address at any depth (SPEC §6); for bodies
    that are otherwise forwarded untouched (native pass-through)."""
    if not _SUSPECT.search(raw):
        return
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return  # not JSON: the provider answers it
    where = _find_upstream_field(body, "")
    if where:
        raise validation(where, "the upstream is chosen by configuration, not by the request")


def parse_object(raw: bytes) -> dict[str, Any]:
    """Any JSON-object body, for endpoints with their own small shapes."""
    _, body = _decode(raw, dict)
    return body


def parse_typed(raw: bytes, kind: type[Any]) -> tuple[Any, dict[str, Any]]:
    """Any body against a msgspec Struct of its own: (typed view, untyped dict)."""
    return _decode(raw, kind)


def ensure(cond: bool, code: str, message: str, status: int | None = None) -> None:
    """Raise a GatewayError unless `cond` holds."""
    if not cond:
        raise GatewayError(code, message, status=status)
