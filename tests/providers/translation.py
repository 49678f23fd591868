"""Table-driven translation checks: literal fixtures in tests/fixtures/<kind>/*.json, no network.

Each fixture file is a list of cases `{"id", "feature", ...}`; `feature` names the matrix row
in docs/providers.md (tests/providers_matrix.py). Case shapes, by file:
- chat_request:  {"openai": body, "legacy"?: bool, "upstream": body, "path"?: str, "query"?: {}}
                 or {"openai": body, "error": message} for a clear 400
- chat_response: {"upstream": body, "openai": {"choices": [...], "usage": {...}}, "legacy"?: bool}
- chat_stream:   {"request"?: body, "sse": [event text, ...], "chunks": [choices or usage, ...],
                  "done": bool}  (`chunks` lists each emitted event's `choices`, or
                  {"usage": ...} for a usage chunk, "[DONE]" for the terminator, and
                  {"error": message} last when the translator ends the stream with an error)
- embeddings:    {"openai": body, "upstream": body, "response": body, "expected": body}
- errors:        {"body": provider error body, "message": str}
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from sluice import schema
from sluice.config import ProviderConfig
from sluice.errors import GatewayError
from sluice.providers import canonical, registry
from sluice.providers.base import Adapter, StreamMeter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KINDS_FILES = ("chat_request", "chat_response", "chat_stream", "embeddings", "errors")


def cases(kind: str, name: str) -> list[dict[str, Any]]:
    """The cases of one fixture file (an empty list when the kind has none)."""
    path = FIXTURES / kind / f"{name}.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()))


def case_id(case: dict[str, Any]) -> str:
    """The pytest id of a case."""
    return str(case["id"])


def adapter(kind: str) -> Adapter:
    """An adapter for `kind` with test credentials."""
    config = ProviderConfig(kind=kind, api_key="test-key", account_id="acct0123")
    return registry.adapter_for(config)


def chat(body: dict[str, Any], legacy: bool = False) -> schema.ChatRequest:
    """A validated ChatRequest, exactly as the gateway's routes build one."""
    raw = orjson.dumps(body)
    return schema.parse_completion(raw) if legacy else schema.parse_chat(raw)


def check_request(kind: str, case: dict[str, Any]) -> None:
    """Canonical request → the provider's request body, path and query."""
    req = chat(case["openai"], case.get("legacy", False))
    if "error" in case:  # a feature the provider lacks: a clear 400, never a silent drop
        try:
            adapter(kind).chat_request(req, case["openai"]["model"], "test-key")
        except GatewayError as exc:
            assert (exc.status, exc.message) == (400, case["error"])
            return
        raise AssertionError("expected a 400")
    call = adapter(kind).chat_request(req, case["openai"]["model"], "test-key")
    assert call.body is not None
    assert orjson.loads(call.body) == case["upstream"]
    if "path" in case:
        assert call.path == case["path"]
    assert call.query == case.get("query", {})


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("id", "created")}


def check_response(kind: str, case: dict[str, Any]) -> None:
    """The provider's answer → OpenAI choices and usage (text_completion when legacy)."""
    a = adapter(kind)
    body = orjson.dumps(case["upstream"])
    req = (
        chat({"model": "m", "prompt": "p"}, True)
        if case.get("legacy")
        else chat({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    )
    out, usage = canonical.answer(a, req, body, "m")
    got = _strip(orjson.loads(out))
    want = case["openai"]
    assert got["object"] == ("text_completion" if case.get("legacy") else "chat.completion")
    assert got["choices"] == want["choices"]
    assert got.get("usage") == want.get("usage")
    if want.get("usage"):
        assert usage is not None and usage.prompt_tokens == want["usage"]["prompt_tokens"]


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    """Upstream bytes in small pieces, so events straddle reads as they do on a socket."""
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def run_stream(kind: str, case: dict[str, Any]) -> tuple[list[Any], StreamMeter]:
    """Feed a literal SSE stream through the adapter; its events' choices and the meter."""
    body: dict[str, Any] = {"model": "m", "stream": True}
    if not case.get("legacy"):
        body["messages"] = [{"role": "user", "content": "x"}]
    body.update(case.get("request", {}))
    req = chat(body, case.get("legacy", False))
    meter = StreamMeter()

    error: str | None = None
    parts: list[bytes] = []

    async def collect_until_error() -> None:
        nonlocal error
        src = _pieces("".join(case["sse"]).encode(), 7)
        try:
            async for piece in adapter(kind).chat_stream(src, req, "m", meter):
                parts.append(piece)
        except GatewayError as exc:
            error = exc.message

    asyncio.run(collect_until_error())
    raw = b"".join(parts)
    events: list[Any] = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block
        data = block[6:]
        if data == b"[DONE]":
            events.append("[DONE]")
            continue
        obj = orjson.loads(data)
        assert obj["model"] == "m"
        events.append({"usage": obj["usage"]} if "usage" in obj else obj["choices"])
    if error is not None:  # the translator raised: the pipeline then sends one error event
        events.append({"error": error})
    return events, meter


def check_stream(kind: str, case: dict[str, Any]) -> None:
    """Every emitted event, in order, and whether the stream counted as finished."""
    events, meter = run_stream(kind, case)
    assert events == case["chunks"]
    assert meter.done is case["done"]
    if "usage" in case:
        assert meter.usage is not None
        assert meter.usage.prompt_tokens == case["usage"]["prompt_tokens"]
        assert meter.usage.completion_tokens == case["usage"]["completion_tokens"]


def check_embeddings(kind: str, case: dict[str, Any]) -> None:
    """Canonical embeddings request → provider request; its answer → OpenAI's list."""
    a = adapter(kind)
    req = schema.parse_embeddings(orjson.dumps(case["openai"]))
    call = a.embeddings_request(req, case["openai"]["model"], "test-key")
    assert call.body is not None and orjson.loads(call.body) == case["upstream"]
    if "path" in case:
        assert call.path == case["path"]
    out, _ = a.embeddings_response(orjson.dumps(case["response"]), case["openai"]["model"])
    assert orjson.loads(out) == case["expected"]


def check_error(kind: str, case: dict[str, Any]) -> None:
    """The human message inside the provider's error body is kept."""
    assert adapter(kind).error_message(orjson.dumps(case["body"])) == case["message"]
