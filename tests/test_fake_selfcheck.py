"""The fake OpenAI upstream is faithful: the official SDK, pointed straight at it, works."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakes.openai_agent_fake import FakeOpenAIAgent
from tests.fakes.openai_fake import FakeOpenAI


def test_sdk_against_fake_sync_and_stream(fake_openai: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=fake_openai.url, api_key="sk-fake", max_retries=0)
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from the fake upstream."
    assert r.usage is not None and r.usage.completion_tokens == 6
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the fake")
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    e = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(e.data) == 2 and e.usage.prompt_tokens == 2
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say")
    assert c.choices[0].text


def test_sdk_sees_fake_faults(fake_openai: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=fake_openai.url, api_key="sk-fake", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-429", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-500", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIConnectionError):
        list(
            client.chat.completions.create(
                model="gpt-reset", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )


def test_sdk_against_agent_fake() -> None:
    """The scripted agent fake (tests/test_claude_code.py) calls its tool, then quotes the
    tool's answer, streamed or not, in a shape the official SDK reads."""
    fake = FakeOpenAIAgent().start()
    try:
        fake.arguments = {"file_path": "/tmp/x"}
        client = openai.OpenAI(base_url=fake.url, api_key="sk-fake", max_retries=0)
        read = {"type": "function", "function": {"name": "Read", "parameters": {}}}
        ask: list[Any] = [{"role": "user", "content": "read"}]
        r = client.chat.completions.create(model="m", messages=ask, tools=[read])
        call = (r.choices[0].message.tool_calls or [])[0]
        assert r.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "Read"
        assert call.function.arguments == '{"file_path":"/tmp/x"}'
        stream = client.chat.completions.create(
            model="m",
            messages=ask,
            tools=[read],
            stream=True,
        )
        args = "".join(
            tc.function.arguments or ""
            for c in stream
            for tc in c.choices[0].delta.tool_calls or ()
            if tc.function is not None
        )
        assert args == '{"file_path":"/tmp/x"}'
        answered = [
            *ask,
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ]
        r = client.chat.completions.create(model="m", messages=answered, tools=[read])
        assert r.choices[0].message.content == "Tool said: 42"
    finally:
        fake.stop()
