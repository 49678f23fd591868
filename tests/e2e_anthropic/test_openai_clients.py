"""`openai` SDK → /v1/chat/completions → a real gateway subprocess → fake Anthropic."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import Gateway
from tests.e2e_anthropic.harness import (
    KEY,
    TIME,
    TOKEN,
    WEATHER,
    last_audit,
)
from tests.fakes.anthropic_fake import FakeAnthropic


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
