"""`anthropic` SDK → /v1/messages → a real gateway subprocess → fake OpenAI (translated) or
fake Anthropic (bytes passed through, usage still metered); errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import Gateway
from tests.e2e_anthropic.harness import (
    A_TIME,
    A_WEATHER,
    KEY,
    OPENAI_KEY,
    TOKEN,
    last_audit,
)
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_tools_fake import FakeOpenAIWithTools


# --- Anthropic clients, OpenAI upstream --------------------------------------------------------
def test_anthropic_sdk_to_openai(
    claude: anthropic.Anthropic, fake_oai: FakeOpenAIWithTools
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
    )
    m = raw.parse()
    assert raw.headers["x-sluice-provider"] == "openai"
    assert m.type == "message" and m.content[0].type == "text"
    assert m.content[0].text == "Hello from the fake upstream."
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 6
    sent = fake_oai.requests[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 64
    assert m.usage.input_tokens == (2 + 3) + (1 + 3)  # the fake: words + 3 per message


def test_anthropic_sdk_stream_from_openai(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds
    assert (
        final.content[0].type == "text" and final.content[0].text == "Hello from the fake upstream."
    )
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6 and final.usage.input_tokens == 4


def test_anthropic_sdk_tool_use_via_openai(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        tools=[A_WEATHER, A_TIME],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather and time?"}],
    )
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use"
    assert [(u.name, u.input) for u in uses] == [
        ("get_weather", {"city": "city-1"}),
        ("get_time", {"tz": "tz-1"}),
    ]
    with claude.messages.stream(
        model="gpt-4o-mini",
        max_tokens=64,
        tools=[A_WEATHER, A_TIME],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather and time?"}],
    ) as stream:
        final = stream.get_final_message()
    streamed = [(b.name, b.input, b.id) for b in final.content if b.type == "tool_use"]
    assert streamed == [
        ("get_weather", {"city": "city-1"}, "call_fake0"),
        ("get_time", {"tz": "tz-1"}, "call_fake1"),
    ]
    assert final.stop_reason == "tool_use"
    # the tool results go back as tool messages and the model answers in text
    m2 = claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        tools=[A_WEATHER, A_TIME],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather and time?"},
            {"role": "assistant", "content": final.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": u[2], "content": "ok"} for u in streamed
                ],
            },
        ],
    )
    assert m2.stop_reason == "end_turn" and m2.content[0].type == "text"


def test_count_tokens(claude: anthropic.Anthropic) -> None:
    r = claude.messages.count_tokens(
        model="gpt-4o-mini",
        system="Be brief.",
        messages=[{"role": "user", "content": "hello world"}],
    )
    assert r.input_tokens > 3


# --- Anthropic clients, Anthropic upstream: pass-through ----------------------------------------
def test_passthrough_bytes(gw: Gateway, fake_anthropic: FakeAnthropic) -> None:
    body = orjson.dumps(
        {
            "model": "claude-x-cache",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
            "top_k": 5,
        }
    )
    r = httpx.post(
        gw.url + "/v1/messages",
        content=body,
        headers={
            "x-api-key": TOKEN,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "x-test-beta",
            "X-Request-ID": "anth-e2e-pt",
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    sent = fake_anthropic.requests[-1]
    assert sent["body"] == orjson.loads(
        body
    )  # forwarded as received, fields it never parsed included
    assert sent["headers"]["x-api-key"] == KEY and TOKEN not in str(sent["headers"])
    assert sent["headers"]["anthropic-beta"] == "x-test-beta"
    m = r.json()
    assert m["id"] == "msg_fake01" and m["usage"]["cache_read_input_tokens"] == 100
    rec = last_audit(gw, "anth-e2e-pt")
    assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (
        4 + 120,
        100,
        6,
    )


def test_passthrough_alias_changes_only_the_model(
    claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    m = claude.messages.create(
        model="smart", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert (
        m.model == "claude-real" and fake_anthropic.requests[-1]["body"]["model"] == "claude-real"
    )


def test_passthrough_stream(claude: anthropic.Anthropic, gw: Gateway) -> None:
    with claude.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=50,
        tools=[A_WEATHER, A_TIME],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
        extra_headers={"X-Request-ID": "anth-e2e-pts"},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds.count("content_block_start") == 3 and kinds[-1] == "message_stop"
    assert [b.input for b in final.content if b.type == "tool_use"] == [
        {"city": "city-1"},
        {"tz": "tz-1"},
    ]
    rec = last_audit(gw, "anth-e2e-pts")
    assert rec["completion_tokens"] == 20 and rec["prompt_tokens"] == final.usage.input_tokens
    assert rec["stream"] and rec["status"] == 200


def test_passthrough_midstream_error(gw: Gateway) -> None:
    body = {
        "model": "claude-x-midstream",
        "max_tokens": 9,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": TOKEN}, timeout=30)
    assert r.text.count("event: error") == 1 and "message_stop" not in r.text
    assert r.text.rstrip().endswith("}") and "Overloaded" in r.text.split("event: error")[1]


# --- errors on /v1/messages in Anthropic's shape -------------------------------------------------
def test_messages_401(gw: Gateway) -> None:
    bad = anthropic.Anthropic(api_key="wrong-token", base_url=gw.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        (
            {
                "model": "gpt-4o",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            "messages[0].content[0].type",
        ),
        ({"model": "gpt-4o", "max_tokens": 5, "messages": "hi"}, "messages"),
    ],
    ids=["max_tokens", "block_type", "messages_type"],
)
def test_messages_validation_400(
    gw: Gateway, fake_oai: FakeOpenAIWithTools, body: dict[str, Any], field: str
) -> None:
    before = len(fake_oai.requests)
    r = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": TOKEN}, timeout=30)
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert err["error"]["message"].startswith(field)
    assert len(fake_oai.requests) == before  # reached no provider


@pytest.mark.parametrize("model", ["gpt-4o-400", "claude-x-400"], ids=["openai", "passthrough"])
def test_messages_upstream_4xx(claude: anthropic.Anthropic, model: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    err = info.value.body["error"]  # type: ignore[index]
    assert err["type"] == "invalid_request_error" and err["code"] == "EXTERNAL_SERVICE_ERROR"
    assert (
        ("foo" in err["message"])
        if model.startswith("gpt")
        else ("should be a list" in err["message"])
    )


def test_messages_never_leak_keys(gw: Gateway) -> None:
    logs = gw.stdout() + gw.stderr()
    assert gw.audit(), "the runs above wrote audit lines"
    assert KEY not in logs and OPENAI_KEY not in logs and TOKEN not in logs


def test_messages_stream_from_openai_breaking_midway(gw: Gateway) -> None:
    body = {
        "model": "gpt-4o-reset",
        "max_tokens": 9,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": TOKEN}, timeout=30)
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "error" and names.count("error") == 1
    assert "message_stop" not in names
    err = orjson.loads(r.text.split("event: error\ndata: ")[1])
    assert err["type"] == "error" and err["error"]["code"] == "NETWORK_ERROR"


def test_messages_refuses_upstream_choosing_header(gw: Gateway) -> None:
    body = {"model": "gpt-4o", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        gw.url + "/v1/messages",
        json=body,
        headers={"x-api-key": TOKEN, "X-Base-URL": "http://evil"},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
