"""End to end through a real gateway subprocess, with the official SDKs as clients:

- `openai` SDK → /v1/chat/completions → fake Anthropic (translated both ways);
- `anthropic` SDK → /v1/messages → fake OpenAI (translated) and → fake Anthropic (bytes
  passed through, usage still metered); errors on /v1/messages in Anthropic's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import Gateway, launch_gateway
from tests.fakes.anthropic_fake import KEY, FakeAnthropic
from tests.fakes.openai_tools_fake import FakeOpenAIWithTools

TOKEN = "gw-token-anthropic-e2e"
OPENAI_KEY = "sk-test-upstream-key-0001"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
A_WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
A_TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def fake_oai() -> Iterator[FakeOpenAIWithTools]:
    fake = FakeOpenAIWithTools().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory,
    fake_anthropic: FakeAnthropic,
    fake_oai: FakeOpenAIWithTools,
) -> Iterator[Gateway]:
    config = {
        "providers": {
            "openai": {"kind": "openai", "api_key": OPENAI_KEY, "base_url": fake_oai.url},
            "anthropic": {
                "kind": "anthropic",
                "api_key": KEY,
                "base_url": fake_anthropic.url,
                "max_retries": 0,
            },
        },
        "models": [
            {"match": "gpt-*", "provider": "openai"},
            {"match": "claude-*", "provider": "anthropic"},
            {"name": "smart", "targets": [{"provider": "anthropic", "model": "claude-real"}]},
        ],
        "auth": {"tokens": [TOKEN]},
    }
    g = launch_gateway(tmp_path_factory.mktemp("gw"), config)
    yield g
    g.stop()


@pytest.fixture
def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=TOKEN, base_url=gw.url + "/v1", max_retries=0)


@pytest.fixture
def claude(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=TOKEN, base_url=gw.url, max_retries=0)


def last_audit(gw: Gateway, request_id: str) -> dict[str, Any]:
    for _ in range(3):
        found = [a for a in gw.wait_audit(1) if a["request_id"] == request_id]
        if found:
            return found[-1]
        gw.wait_audit(10**6, timeout=0.5)
    raise AssertionError(f"no audit line for {request_id}")


# --- OpenAI clients, Anthropic upstream -------------------------------------------------------
def test_openai_sdk_to_anthropic(
    oai: openai.OpenAI, fake_anthropic: FakeAnthropic, gw: Gateway
) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        extra_headers={"X-Request-ID": "anth-e2e-1"},
    )
    r = raw.parse()
    assert raw.headers["x-sluice-provider"] == "anthropic"
    assert r.choices[0].message.content == "Hello from the fake Anthropic."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 6
    sent = fake_anthropic.requests[-1]
    assert sent["headers"]["x-api-key"] == KEY and "Authorization" not in sent["headers"]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"]["system"] == "Be brief." and sent["body"]["max_tokens"] == 4096
    rec = last_audit(gw, "anth-e2e-1")
    assert (rec["provider"], rec["completion_tokens"]) == ("anthropic", 6)
    assert rec["prompt_tokens"] == r.usage.prompt_tokens and not rec["tokens_estimated"]


def test_openai_sdk_stream_with_cache_usage(oai: openai.OpenAI, gw: Gateway) -> None:
    stream = oai.chat.completions.create(
        model="claude-haiku-cache",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Request-ID": "anth-e2e-2"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Anthropic."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens == 5 + 100 + 20 and usage.prompt_tokens_details.cached_tokens == 100
    rec = last_audit(gw, "anth-e2e-2")
    assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (125, 100, 6)


def test_openai_sdk_stream_without_usage_strips_nothing_extra(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="claude-haiku", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


def test_openai_sdk_parallel_tool_calls_round_trip(oai: openai.OpenAI) -> None:
    msgs: list[Any] = [{"role": "user", "content": "weather and time?"}]
    r = oai.chat.completions.create(model="claude-sonnet-4-5", messages=msgs, tools=[WEATHER, TIME])  # type: ignore[list-item]
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "city-1"}),
        ("get_time", {"tz": "tz-1"}),
    ]
    msgs.append(r.choices[0].message.model_dump(exclude_none=True))
    msgs += [{"role": "tool", "tool_call_id": c.id, "content": "fine"} for c in calls]
    # the fake insists every tool_use is answered by a tool_result in the next turn
    r2 = oai.chat.completions.create(
        model="claude-sonnet-4-5", messages=msgs, tools=[WEATHER, TIME]
    )  # type: ignore[list-item]
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content


def test_openai_sdk_streamed_tool_call_deltas(oai: openai.OpenAI) -> None:
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    for c in oai.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather and time?"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        stream=True,
    ):
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if tc.function and tc.function.name:
                names[tc.index] = tc.function.name
            args[tc.index] = args.get(tc.index, "") + (
                (tc.function and tc.function.arguments) or ""
            )
    assert names == {0: "get_weather", 1: "get_time"}
    assert {i: orjson.loads(a) for i, a in args.items()} == {
        0: {"city": "city-1"},
        1: {"tz": "tz-1"},
    }


def test_openai_sdk_anthropic_error_keeps_status_and_message(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Input should be a list") as info:
        oai.chat.completions.create(
            model="claude-x-400", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "EXTERNAL_SERVICE_ERROR"
    with pytest.raises(openai.APIStatusError) as info2:
        oai.chat.completions.create(
            model="claude-x-529", messages=[{"role": "user", "content": "hi"}]
        )
    assert info2.value.status_code == 529


def test_openai_stream_midstream_error_is_one_event(gw: Gateway) -> None:
    body = {
        "model": "claude-x-midstream",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    assert b"[DONE]" not in r.content
    errors = [b for b in blocks if '"error"' in b]
    assert len(errors) == 1 and "Overloaded" in errors[0] and blocks[-1] == errors[0]


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
