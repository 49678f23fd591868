"""Anthropic translation, both directions, table-driven from literal wire-format fixtures.

Fixtures (tests/fixtures/anthropic/) follow https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/api/messages-streaming; no network is involved.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice import sse
from sluice.config import ProviderConfig
from sluice.errors import GatewayError
from sluice.providers import registry
from sluice.providers.anthropic import AnthropicAdapter
from sluice.providers.anthropic import inbound as am
from sluice.providers.anthropic.request import messages_body
from sluice.providers.base import StreamMeter, Usage
from sluice.schema import parse_chat

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"


def cases(name: str) -> list[Any]:
    data = orjson.loads((FIX / name).read_bytes())
    return [pytest.param(c, id=c["id"]) for c in data]


def adapter() -> AnthropicAdapter:
    a = registry.adapter_for(ProviderConfig(kind="anthropic", api_key="sk-ant-unit"))
    assert isinstance(a, AnthropicAdapter)
    return a


async def pieces(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    """Bytes in small arbitrary pieces, so events straddle reads as on a real socket."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def collect(gen: AsyncIterator[bytes]) -> tuple[list[sse.Event], GatewayError | None]:
    async def run() -> tuple[bytes, GatewayError | None]:
        out = b""
        try:
            async for p in gen:
                out += p
        except GatewayError as exc:
            return out, exc
        return out, None

    out, err = asyncio.run(run())

    async def parse() -> list[sse.Event]:
        return [e async for e in sse.events(pieces(out, 1 << 20))]

    return asyncio.run(parse()), err


# --- canonical → Messages --------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("chat_to_messages.json"))
def test_request_translation(case: dict[str, Any]) -> None:
    chat = parse_chat(orjson.dumps(case["openai"]))
    assert messages_body(chat, case["openai"]["model"]) == case["anthropic"]


def test_request_call_shape() -> None:
    chat = parse_chat(b'{"model":"claude-x","messages":[{"role":"user","content":"hi"}]}')
    call = adapter().chat_request(chat, "claude-sonnet-4-5", "sk-ant-unit")
    assert (call.method, call.path, call.stream) == ("POST", "/v1/messages", False)
    assert call.headers["x-api-key"] == "sk-ant-unit"
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in call.headers
    assert orjson.loads(call.body or b"")["model"] == "claude-sonnet-4-5"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        (
            {
                "tool_choice": "sometimes",
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "tool_choice",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png,xyz"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
    ids=["n", "tool_choice", "part_type", "data_url", "tool_arguments"],
)
def test_request_rejections_name_the_field(body: dict[str, Any], param: str) -> None:
    full = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(GatewayError) as info:
        messages_body(parse_chat(orjson.dumps(full)), "claude-x")
    assert info.value.code == "VALIDATION_ERROR" and info.value.param == param


# --- Messages → canonical answers ------------------------------------------------------------
@pytest.mark.parametrize("case", cases("messages_to_chat.json"))
def test_response_translation(case: dict[str, Any]) -> None:
    body, usage = adapter().chat_response(orjson.dumps(case["anthropic"]), "claude-alias")
    got = orjson.loads(body)
    assert isinstance(got.pop("created"), int)
    assert got == case["openai"]
    assert usage is not None and usage.prompt_tokens == case["openai"]["usage"]["prompt_tokens"]
    # the native pass-through hook reads the same usage from the untouched body
    assert adapter().native_usage(orjson.dumps(case["anthropic"])) == usage


@pytest.mark.parametrize("case", cases("stream_cases.json"))
def test_stream_translation(case: dict[str, Any]) -> None:
    raw = (FIX / case["sse"]).read_bytes()
    body: dict[str, Any] = {"model": "claude-alias", "messages": [{"role": "user", "content": "x"}]}
    body.update(stream=True, stream_options={"include_usage": case["include_usage"]})
    meter = StreamMeter()
    events, err = collect(
        adapter().chat_stream(pieces(raw), parse_chat(orjson.dumps(body)), "m", meter)
    )
    done = [e for e in events if e.data == b"[DONE]"]
    chunks = [orjson.loads(e.data) for e in events if e.data != b"[DONE]"]
    got = [c["choices"][0] if c["choices"] else {"usage": c["usage"]} for c in chunks]
    for c in got:
        c.pop("index", None)
        c.pop("logprobs", None)
    assert got == case["chunks"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert meter.done is case["done"] and bool(done) is case["done"]
    want = case["usage"]
    assert (meter.usage is None) if want is None else meter.usage == Usage(**want)
    if "error" in case:
        assert err is not None and err.status == case["error"]["status"]
        assert err.message == case["error"]["message"]
    else:
        assert err is None


@pytest.mark.parametrize("case", [c for c in cases("stream_cases.json") if c.values[0]["done"]])
def test_native_stream_usage_matches(case: dict[str, Any]) -> None:
    c = case
    raw = (FIX / c["sse"]).read_bytes()

    async def fold() -> Usage:
        acc = Usage()
        async for ev in sse.events(pieces(raw)):
            adapter().native_stream_usage(ev.data, acc)
        return acc

    assert asyncio.run(fold()) == Usage(**c["usage"])


def test_error_message_shape() -> None:
    body = b'{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}'
    assert adapter().error_message(body) == "model: claude-9"
    assert adapter().error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_declared_facts() -> None:
    cls = registry.get("anthropic")
    assert cls.default_base_url == "https://api.anthropic.com"
    assert ("claude-*", "anthropic") in registry.default_routes()
    env = registry.providers_from_env({"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://x"})
    assert env["anthropic"] == {"kind": "anthropic", "api_key": "k", "base_url": "http://x"}


# --- Messages callers in front of any model --------------------------------------------------
@pytest.mark.parametrize("case", cases("inbound_requests.json"))
def test_inbound_request_translation(case: dict[str, Any]) -> None:
    m = am.parse(orjson.dumps(case["anthropic"]))
    assert m.chat.body == case["openai"]
    assert orjson.loads(m.chat.raw) == case["openai"]
    assert m.stream is bool(case["anthropic"].get("stream"))
    assert m.chat.client_wants_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}
                ]
            },
            "messages[0].content[0].source.type",
        ),
        ({"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
        ({"base_url": "http://evil"}, "base_url"),
    ],
    ids=[
        "no_max_tokens",
        "zero_max_tokens",
        "temperature",
        "empty",
        "role",
        "block",
        "image_source",
        "tool_choice",
        "upstream_field",
    ],
)
def test_inbound_rejections_name_the_field(body: dict[str, Any], param: str) -> None:
    full = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    full.update(body)
    full = {k: v for k, v in full.items() if v is not None}
    with pytest.raises(GatewayError) as info:
        am.parse(orjson.dumps(full))
    assert info.value.code == "VALIDATION_ERROR"
    assert info.value.param == param


def test_inbound_tool_result_images_follow_as_user_parts() -> None:
    """OpenAI's tool messages hold text only: a tool_result's image (Claude Code's Read on a
    picture) goes in the user message after the tool message; its text stays with the tool."""
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    call = {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/a.png"}}
    body = {
        "model": "gpt-4o",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [call]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [img]},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "is_error": True,
                        "content": [{"type": "text", "text": "no"}, img],
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }
    msgs = am.parse(orjson.dumps(body)).chat.body["messages"][2:]
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    assert msgs == [
        {
            "role": "tool",
            "tool_call_id": "t1",
            "content": "(the tool's output is attached to the next user message)",
        },
        {"role": "tool", "tool_call_id": "t2", "content": "Error: no"},
        {"role": "user", "content": [part, part, {"type": "text", "text": "and?"}]},
    ]
    body["messages"][2]["content"][0]["content"] = [{"type": "video"}]
    with pytest.raises(GatewayError) as info:
        am.parse(orjson.dumps(body))
    assert info.value.param == "messages[2].content[0].content[0].type"


def test_inbound_long_user_id_goes_as_a_digest() -> None:
    """metadata.user_id → `user`, as is up to 64 characters; Claude Code's ~150-character
    JSON id as its SHA-256 (OpenAI-compatible upstreams cap `user`: OpenRouter at 128)."""
    base = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    short = am.parse(orjson.dumps({**base, "metadata": {"user_id": "u" * 64}}))
    assert short.chat.body["user"] == "u" * 64
    long_id = '{"device_id":"' + "a" * 64 + '","account_uuid":"","session_id":"s"}'
    m = am.parse(orjson.dumps({**base, "metadata": {"user_id": long_id}}))
    assert m.chat.body["user"] == hashlib.sha256(long_id.encode()).hexdigest()
    assert orjson.loads(m.chat.raw)["user"] == m.chat.body["user"]


@pytest.mark.parametrize("case", cases("inbound_responses.json"))
def test_inbound_response_translation(case: dict[str, Any]) -> None:
    data = orjson.dumps(case["openai"])
    u = case["openai"]["usage"]
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    usage = Usage(u["prompt_tokens"], u["completion_tokens"], cached)
    assert orjson.loads(am.message_from(data, usage)) == case["anthropic"]


@pytest.mark.parametrize("case", cases("inbound_streams.json"))
def test_inbound_stream_translation(case: dict[str, Any]) -> None:
    raw = (FIX / case["sse"]).read_bytes()
    events, err = collect(am.messages_stream(pieces(raw)))
    assert err is None
    assert [[e.event, orjson.loads(e.data)] for e in events] == case["events"]


def test_inbound_stream_gives_one_piece_for_each_piece_in() -> None:
    """A whole upstream stream in one read (a fast upstream): the pipeline ends the response
    after the piece that follows the meter's `done`, so the one piece out must hold every
    event, message_stop last."""
    raw = (FIX / "openai_text.sse").read_bytes()

    async def run() -> list[bytes]:
        return [p async for p in am.messages_stream(pieces(raw, len(raw)))]

    out = asyncio.run(run())
    assert len(out) == 1
    kinds = [b.split(b"\n", 1)[0] for b in out[0].split(b"\n\n") if b]
    assert kinds[0] == b"event: message_start" and kinds[-1] == b"event: message_stop"


def test_passthrough_stream_is_untouched_and_metered() -> None:
    raw = (FIX / "stream_parallel_tools.sse").read_bytes()
    meter = StreamMeter()

    async def run() -> bytes:
        return b"".join([p async for p in am.passthrough_stream(pieces(raw), adapter(), meter)])

    assert asyncio.run(run()) == raw
    assert meter.done and meter.usage == Usage(472, 89, 0)


def test_passthrough_stream_raises_upstream_error_once() -> None:
    raw = (FIX / "stream_error.sse").read_bytes()
    meter = StreamMeter()
    events, err = collect(am.passthrough_stream(pieces(raw, 1 << 20), adapter(), meter))
    assert err is not None and err.status == 529
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert not meter.done and meter.usage == Usage(12, 1, 0)


def test_env_only_mode_routes_claude_to_anthropic() -> None:
    from sluice.config import from_env
    from sluice.routing import Router

    s = from_env({"ANTHROPIC_API_KEY": "sk-ant-env", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    assert s.providers["anthropic"].kind == "anthropic"
    assert s.providers["anthropic"].base_url == "http://127.0.0.1:9"
    plan = Router(s, {"anthropic"}).plan("claude-opus-4-1")
    assert [(t.provider, t.model) for t in plan.targets] == [("anthropic", "claude-opus-4-1")]


def test_inbound_stream_in_band_error_ends_with_error() -> None:
    first = (FIX / "openai_text.sse").read_bytes().split(b"\n\n")[0] + b"\n\n"
    raw = (
        first
        + b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    )
    events, err = collect(am.messages_stream(pieces(raw)))
    assert [e.event for e in events] == ["message_start"]
    assert err is not None and err.code == "EXTERNAL_SERVICE_ERROR"
    assert err.message == "The server had an error"
