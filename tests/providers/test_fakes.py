"""The fakes are faithful: each answers the official SDK (google-genai, cohere) directly, and
Workers AI / Jina answer their documented HTTP shapes."""

from __future__ import annotations

import cohere
import httpx
import pytest
from google import genai
from google.genai import types

from tests.fakes.cohere_fake import FakeCohere
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.jina_fake import FakeJina
from tests.fakes.workers_ai_fake import FakeWorkersAI


def _genai(fake: FakeGemini) -> genai.Client:
    return genai.Client(api_key="AIza-test", http_options=types.HttpOptions(base_url=fake.url))


def test_gemini_fake_answers_google_genai(fake_gemini: FakeGemini) -> None:
    client = _genai(fake_gemini)
    r = client.models.generate_content(model="gemini-2.0-flash", contents="Say hello")
    assert r.text == "Hello from the fake gemini."
    assert r.usage_metadata is not None and r.usage_metadata.prompt_token_count == 2
    streamed = "".join(
        c.text or ""
        for c in client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi")
    )
    assert streamed == "Hello from the fake gemini."
    emb = client.models.embed_content(model="text-embedding-004", contents=["a b", "c"])
    assert emb.embeddings is not None and len(emb.embeddings) == 2


def test_gemini_fake_function_calls_via_sdk(fake_gemini: FakeGemini) -> None:
    tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather",
                description="Weather for a city",
                parameters_json_schema={
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                },
            )
        ]
    )
    client = _genai(fake_gemini)  # kept: a collected client closes its HTTP session
    r = client.models.generate_content(
        model="gemini-2.0-flash",
        contents="Weather in Paris and Tokyo?",
        config=types.GenerateContentConfig(tools=[tool]),
    )
    calls = r.function_calls or []
    assert [(c.name, c.args) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]


def test_gemini_fake_errors_like_google(fake_gemini: FakeGemini) -> None:
    client = _genai(fake_gemini)
    with pytest.raises(genai.errors.ClientError) as err:
        client.models.generate_content(model="gemini-x-400", contents="hi")
    assert err.value.code == 400


def _cohere(fake: FakeCohere) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="co-test", base_url=fake.url)


def test_cohere_fake_answers_cohere_sdk(fake_cohere: FakeCohere) -> None:
    client = _cohere(fake_cohere)
    r = client.chat(model="command-r", messages=[{"role": "user", "content": "hi there"}])
    assert r.message.content is not None
    assert r.message.content[0].text == "Hello from the fake cohere."  # type: ignore[union-attr]
    assert r.finish_reason == "COMPLETE"
    assert r.usage is not None and r.usage.tokens is not None
    events = list(
        client.chat_stream(model="command-r", messages=[{"role": "user", "content": "hi"}])
    )
    text = "".join(
        e.delta.message.content.text  # type: ignore[union-attr]
        for e in events
        if e.type == "content-delta"
    )
    assert text == "Hello from the fake cohere."
    assert events[-1].type == "message-end"
    emb = client.embed(
        model="embed-english-v3.0",
        texts=["a b"],
        input_type="search_document",
        embedding_types=["float"],
    )
    assert emb.embeddings.float_ is not None and len(emb.embeddings.float_[0]) == 3


def test_cohere_fake_streams_tool_calls_via_sdk(fake_cohere: FakeCohere) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    events = list(
        _cohere(fake_cohere).chat_stream(
            model="command-r",
            messages=[{"role": "user", "content": "weather?"}],
            tools=tools,  # type: ignore[arg-type]
        )
    )
    kinds = [e.type for e in events]
    assert kinds.count("tool-call-start") == 2 and kinds.count("tool-call-delta") == 4
    with pytest.raises(cohere.BadRequestError):
        _cohere(fake_cohere).chat(model="command-400", messages=[{"role": "user", "content": "x"}])


def test_workers_ai_fake_speaks_the_v4_envelope(fake_workers_ai: FakeWorkersAI) -> None:
    model = "@cf/meta/llama-3.1-8b-instruct"
    url = f"{fake_workers_ai.url}/accounts/{fake_workers_ai.ACCOUNT}/ai/run/{model}"
    auth = {"Authorization": "Bearer cf-token"}
    r = httpx.post(url, json={"messages": [{"role": "user", "content": "hi"}]}, headers=auth)
    body = r.json()
    assert body["success"] is True and body["result"]["response"].startswith("Hello")
    assert body["result"]["usage"]["completion_tokens"] == 6
    with httpx.stream(
        "POST",
        url,
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=auth,
    ) as s:
        lines = [ln for ln in s.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and '"usage"' in lines[-2]
    bad = httpx.post(url, json={"messages": []})
    assert bad.status_code == 401 and bad.json()["errors"][0]["code"] == 10000


def test_jina_fake_speaks_openai_list_shape(fake_jina: FakeJina) -> None:
    r = httpx.post(
        fake_jina.url + "/embeddings",
        json={"model": "jina-embeddings-v3", "input": ["a b", "c"], "task": "retrieval.passage"},
        headers={"Authorization": "Bearer jina_x"},
    )
    body = r.json()
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["total_tokens"] == 3
