"""End to end: the `openai` SDK → the gateway subprocess → each fake provider (real HTTP)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import cohere_fake, gemini_fake, workers_ai_fake
from tests.fakes.cohere_fake import FakeCohere
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.openai_fake import WORDS
from tests.providers.conftest import KEYS

CHAT = [
    ("gemini", "gemini-2.0-flash", gemini_fake.ANSWER),
    ("cloudflare", "@cf/meta/llama-3.1-8b-instruct", workers_ai_fake.ANSWER),
    ("cohere", "command-r", cohere_fake.ANSWER),
    ("openai", "gpt-4o-mini", "".join(WORDS)),
]
TOOL_CHAT = [c for c in CHAT if c[0] != "openai"]
EMBED = [
    ("gemini", "gemini-embedding-001"),
    ("cloudflare", "@cf/baai/bge-base-en-v1.5"),
    ("cohere", "embed-english-v3.0"),
    ("jina", "jina-embeddings-v3"),
    ("openai", "text-embedding-3-small"),
]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
USER: list[Any] = [{"role": "user", "content": "Say hello to the gateway"}]


def _client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize(("provider", "model", "answer"), CHAT, ids=[c[0] for c in CHAT])
def test_chat(gateway: Gateway, provider: str, model: str, answer: str) -> None:
    raw = _client(gateway).chat.completions.with_raw_response.create(model=model, messages=USER)
    r = raw.parse()
    assert raw.headers["x-sluice-provider"] == provider
    assert r.choices[0].message.content == answer and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


@pytest.mark.parametrize(("provider", "model", "answer"), CHAT, ids=[c[0] for c in CHAT])
def test_chat_streamed(gateway: Gateway, provider: str, model: str, answer: str) -> None:
    chunks = list(
        _client(gateway).chat.completions.create(
            model=model, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(("provider", "model", "answer"), TOOL_CHAT, ids=[c[0] for c in TOOL_CHAT])
def test_parallel_tool_calls_streamed(
    gateway: Gateway, provider: str, model: str, answer: str
) -> None:
    calls: dict[int, dict[str, str]] = {}
    stream = _client(gateway).chat.completions.create(
        model=model, messages=USER, tools=TOOLS, stream=True
    )
    finish = None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
            slot["id"] += tc.id or ""
            slot["name"] += (tc.function.name or "") if tc.function else ""
            slot["args"] += (tc.function.arguments or "") if tc.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    assert [json.loads(calls[i]["args"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert all(c["name"] == "get_weather" and c["id"] for c in calls.values())


@pytest.mark.parametrize(("provider", "model", "answer"), TOOL_CHAT, ids=[c[0] for c in TOOL_CHAT])
def test_tool_round_trip(gateway: Gateway, provider: str, model: str, answer: str) -> None:
    client = _client(gateway)
    first = client.chat.completions.create(model=model, messages=USER, tools=TOOLS)
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and msg.tool_calls
    results: list[Any] = [
        {"role": "tool", "tool_call_id": tc.id, "content": '{"temp": 18}'} for tc in msg.tool_calls
    ]
    second = client.chat.completions.create(
        model=model, messages=[*USER, msg.model_dump(exclude_none=True), *results], tools=TOOLS
    )
    assert second.choices[0].message.content == answer


@pytest.mark.parametrize(("provider", "model"), EMBED, ids=[e[0] for e in EMBED])
def test_embeddings(gateway: Gateway, provider: str, model: str) -> None:
    raw = _client(gateway).embeddings.with_raw_response.create(
        model=model, input=["hello world", "bye"]
    )
    assert raw.headers["x-sluice-provider"] == provider
    r = raw.parse()
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) >= 3 for d in r.data)


@pytest.mark.parametrize(("provider", "model"), EMBED[:4], ids=[e[0] for e in EMBED[:4]])
def test_embeddings_base64_when_asked(gateway: Gateway, provider: str, model: str) -> None:
    body = {"model": model, "input": ["hello world"], "encoding_format": "base64"}
    b64 = httpx.post(gateway.url + "/v1/embeddings", json=body).json()["data"][0]["embedding"]
    floats = httpx.post(
        gateway.url + "/v1/embeddings", json={**body, "encoding_format": "float"}
    ).json()["data"][0]["embedding"]
    raw = base64.b64decode(b64)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats, rel=1e-6)


@pytest.mark.parametrize(("provider", "model", "answer"), TOOL_CHAT, ids=[c[0] for c in TOOL_CHAT])
def test_legacy_completions_through_chat(
    gateway: Gateway, provider: str, model: str, answer: str
) -> None:
    client = _client(gateway)
    r = client.completions.create(model=model, prompt="Once upon a time")
    assert r.object == "text_completion" and r.choices[0].text == answer
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model=model, prompt="x", stream=True)
        if c.choices
    )
    assert streamed == answer


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("gemini-x-400", "Invalid JSON payload received."),
        ("command-400", "invalid request: model not found"),
        ("@cf/meta/x-400", "Error: required properties at '/' are 'messages'"),
    ],
    ids=["gemini", "cohere", "cloudflare"],
)
def test_provider_errors_keep_status_and_message(
    gateway: Gateway, model: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _client(gateway).chat.completions.create(model=model, messages=USER)
    assert err.value.status_code == 400 and message in str(err.value)


def test_keys_in_the_right_header_and_never_in_the_audit(
    gateway: Gateway, fake_gemini: FakeGemini, fake_cohere: FakeCohere
) -> None:
    _client(gateway).chat.completions.create(model="gemini-2.0-flash", messages=USER)
    _client(gateway).chat.completions.create(model="command-r", messages=USER)
    g, c = fake_gemini.requests[-1]["headers"], fake_cohere.requests[-1]["headers"]
    assert g["x-goog-api-key"] == KEYS["gemini"] and "Authorization" not in g
    assert c["Authorization"] == f"Bearer {KEYS['cohere']}"
    lines = gateway.wait_audit(2)
    assert {line["provider"] for line in lines} >= {"gemini", "cohere"}
    assert all(line["prompt_tokens"] > 0 for line in lines if line["status"] == 200)
    out = gateway.stdout() + gateway.stderr()
    assert not any(key in out for key in KEYS.values())
