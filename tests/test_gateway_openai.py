"""End to end: the official `openai` SDK → the running gateway → the fake OpenAI upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import Gateway, launch_gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = openai_config(
        fake_openai,
        models=[
            {"match": "gpt-*", "provider": "openai"},
            {"match": "text-embedding-*", "provider": "openai"},
            {
                "name": "smart",
                "targets": [
                    {"provider": "openai", "model": "gpt-4o-500"},
                    {"provider": "openai", "model": "gpt-4o"},
                ],
            },
            {
                "name": "priced",
                "provider": "openai",
                "model": "gpt-4o",
                "context_window": 128000,
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            },
        ],
        default_model="gpt-4o-mini",
    )
    config["providers"]["openai"]["max_retries"] = 0
    g = launch_gateway(tmp_path_factory.mktemp("gw"), config)
    yield g
    g.stop()


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_chat_sync(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG)  # type: ignore[arg-type]
    r = raw.parse()
    assert r.choices[0].message.content == "Hello from the fake upstream."
    assert r.usage is not None and r.usage.total_tokens > 0
    assert raw.headers["x-sluice-provider"] == "openai"
    assert float(raw.headers["x-sluice-overhead-ms"]) >= 0
    assert raw.headers["x-request-id"].startswith("req_")
    sent = fake_openai.requests[-1]
    assert sent["headers"]["Authorization"] == "Bearer sk-test-upstream-key-0001"


async def test_chat_async_and_stream(gw: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    r = await client.chat.completions.create(model="gpt-4o", messages=MSG)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)  # type: ignore[arg-type]
    chunks = [c async for c in stream]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "Hello from the fake upstream."
    )
    # Usage was asked of the upstream but the client did not ask: no usage-only chunk reaches it.
    assert all(c.choices for c in chunks)
    await client.close()


def test_stream_asks_upstream_for_usage_and_strips_it(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True))  # type: ignore[arg-type]
    assert fake_openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)


def test_stream_keeps_usage_when_client_asks(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MSG,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_stream_is_not_buffered(gw: Gateway) -> None:
    """Each upstream event reaches the client when the upstream sends it (0.2 s apart here),
    not gathered into one body at the end."""
    arrivals: list[float] = []
    body = {"model": "gpt-4o-slowstream", "messages": MSG, "stream": True}
    t0 = time.monotonic()
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        for piece in r.iter_raw():
            if b'"content":"' in piece:
                arrivals.append(time.monotonic() - t0)
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] > 0.5  # spread over the upstream's pacing


def test_alias_falls_back_and_default_model(
    client: openai.OpenAI, gw: Gateway, fake_openai: FakeOpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=MSG)  # type: ignore[arg-type]
    assert raw.parse().model == "gpt-4o"
    assert [r["body"]["model"] for r in fake_openai.requests[-2:]] == ["gpt-4o-500", "gpt-4o"]
    r = httpx.post(gw.url + "/v1/chat/completions", json={"messages": MSG}, timeout=10)
    assert r.status_code == 200 and fake_openai.requests[-1]["body"]["model"] == "gpt-4o-mini"


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say")
    assert c.choices[0].text == "Hello from the fake upstream."
    e = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert [d.index for d in e.data] == [0, 1] and e.usage.prompt_tokens == 3


def test_models_and_model_options(client: openai.OpenAI, gw: Gateway) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smart", "priced", "gpt-4o-mini"} <= ids
    opts = httpx.get(gw.url + "/v1/model-options").json()["models"]
    priced = next(m for m in opts if m["id"] == "priced")
    assert priced == {
        "id": "priced",
        "provider": "openai",
        "available": True,
        "context_window": 128000,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    }


def test_route_check_calls_no_upstream(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    r = httpx.get(gw.url + "/v1/route-check", params={"model": "smart"}).json()
    assert (
        r["model"] == "smart" and r["provider"] == "openai" and r["upstream_model"] == "gpt-4o-500"
    )
    assert r["rule"].startswith("models[2]") and r["available"] is True
    assert r["fallbacks"] == [{"provider": "openai", "model": "gpt-4o", "available": True}]
    assert len(fake_openai.requests) == before


def test_tokenize_exact_and_estimate(gw: Gateway) -> None:
    exact = httpx.post(
        gw.url + "/v1/tokenize", json={"input": "hello world", "model": "gpt-4"}
    ).json()
    assert exact == {"model": "gpt-4", "tokens": 2, "method": "exact"}
    est = httpx.post(
        gw.url + "/v1/tokenize", json={"input": "x" * 40, "model": "@cf/meta/llama"}
    ).json()
    assert est == {"model": "@cf/meta/llama", "tokens": 10, "method": "estimate"}
    msgs = httpx.post(gw.url + "/v1/tokenize", json={"messages": MSG, "model": "gpt-4"}).json()
    assert msgs["tokens"] > 1 and msgs["method"] == "exact"


def test_health(gw: Gateway) -> None:
    for path in ("/health", "/api/health"):
        h = httpx.get(gw.url + path).json()
        assert h["status"] == "ok" and h["version"]
        assert h["providers"]["openai"] == {"kind": "openai", "configured": True, "available": True}


def test_request_id_echoed(gw: Gateway) -> None:
    r = httpx.get(gw.url + "/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.get(gw.url + "/health", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")
