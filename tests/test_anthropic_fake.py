"""The fake Anthropic upstream is faithful: the official `anthropic` SDK talks to it directly."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.fakes.anthropic_fake import KEY, FakeAnthropic

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    f = FakeAnthropic().start()
    yield f
    f.stop()


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=0)


def test_create(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="claude-fake",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from the fake Anthropic."
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 2 + 2 + 3 and msg.usage.output_tokens == 6


def test_max_tokens_cut(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="claude-fake", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 2


def test_stream_text(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-fake-cache", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake Anthropic."
    assert final.usage.output_tokens == 6
    assert final.usage.cache_read_input_tokens == 100
    assert final.usage.cache_creation_input_tokens == 20


def test_stream_parallel_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-fake",
        max_tokens=100,
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather and time in Paris?"}],
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [
        ("get_weather", {"city": "city-1"}),
        ("get_time", {"tz": "tz-1"}),
    ]


def test_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model="claude-fake",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
    )
    use = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.create(
        model="claude-fake",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_missing_tool_result_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="tool_result"):
        client.messages.create(
            model="claude-fake",
            max_tokens=100,
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_x", "name": "w", "input": {}}],
                },
                {"role": "user", "content": "well?"},
            ],
        )


@pytest.mark.parametrize(
    ("model", "exc", "kind"),
    [
        ("claude-x-429", anthropic.RateLimitError, "rate_limit_error"),
        ("claude-x-529", anthropic.InternalServerError, "overloaded_error"),
        ("claude-x-400", anthropic.BadRequestError, "invalid_request_error"),
    ],
    ids=["429", "529", "400"],
)
def test_errors(client: anthropic.Anthropic, model: str, exc: type[Exception], kind: str) -> None:
    with pytest.raises(exc) as info:
        client.messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert isinstance(info.value, anthropic.APIStatusError)
    assert info.value.body["error"]["type"] == kind  # type: ignore[index]


def test_wrong_key(fake: FakeAnthropic) -> None:
    bad = anthropic.Anthropic(api_key="sk-ant-wrong", base_url=fake.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(
            model="claude-fake", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


def test_midstream_error_event(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):  # noqa: SIM117
        with client.messages.stream(
            model="claude-fake-midstream",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            for _ in stream:
                pass
