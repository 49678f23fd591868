"""The response cache end to end: tenants, streams replayed to the openai SDK, controls,
what is never stored, and the Redis backend shared by two instances."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import WORDS, FakeOpenAI
from tests.traffic_util import auth, chat_body, drop_prefix, prefix

TOKEN_A, TOKEN_B = "tok-cache-a-0000000000001", "tok-cache-b-0000000000002"
ANSWER = "".join(WORDS)


def _config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return openai_config(
        fake, auth={"tokens": [TOKEN_A, TOKEN_B]}, cache={"enabled": True, "ttl_s": 60}, **extra
    )


def _upstream_calls(fake: FakeOpenAI, marker: str) -> int:
    return sum(
        marker in str(r["body"].get("messages") or r["body"].get("input")) for r in fake.requests
    )


def _ask(gw: Gateway, body: dict[str, Any], token: str = TOKEN_A, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={**auth(token), **headers}, timeout=30
    )


@pytest.fixture
def gw(fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(_config(fake_openai))


def test_hit_miss_and_tenant_isolation(fake_openai: FakeOpenAI, gw: Gateway) -> None:
    marker = uuid.uuid4().hex
    body = chat_body(text=marker)
    first = _ask(gw, body)
    assert first.headers["x-sluice-cache"] == "MISS"
    second = _ask(gw, body)
    assert second.headers["x-sluice-cache"] == "HIT"
    assert second.json() == first.json()
    assert second.headers["x-sluice-provider"] == "openai"
    assert _upstream_calls(fake_openai, marker) == 1
    # Another tenant never sees A's answer: its own miss, its own upstream call.
    other = _ask(gw, body, TOKEN_B)
    assert other.headers["x-sluice-cache"] == "MISS"
    assert _upstream_calls(fake_openai, marker) == 2
    # A different body (or model) is a different entry.
    assert _ask(gw, {**body, "temperature": 0.5}).headers["x-sluice-cache"] == "MISS"
    audit = gw.wait_audit(4)
    hit = [a for a in audit if a["cache_hit"]]
    assert len(hit) == 1 and hit[0]["cost_usd"] == 0.0 and hit[0]["completion_tokens"] == 6


def test_stream_is_cached_and_replayed_to_the_sdk(fake_openai: FakeOpenAI, gw: Gateway) -> None:
    marker = uuid.uuid4().hex
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=TOKEN_A, max_retries=0)
    messages: Any = [{"role": "user", "content": marker}]

    def stream(**kw: Any) -> tuple[str, str | None, Any, str]:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=messages, stream=True, **kw
        ) as resp:
            chunks = list(resp.parse())
            state = resp.headers["x-sluice-cache"]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = next(
            (
                c.choices[0].finish_reason
                for c in chunks
                if c.choices and c.choices[0].finish_reason
            ),
            None,
        )
        return text, finish, chunks[-1].usage, state

    assert stream() == (ANSWER, "stop", None, "MISS")
    assert stream() == (ANSWER, "stop", None, "HIT")
    text, _, usage, state = stream(stream_options={"include_usage": True})
    assert (text, state) == (ANSWER, "HIT")
    assert usage.completion_tokens == 6 and usage.prompt_tokens == 4
    # The same request unstreamed shares the entry.
    plain = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert plain.headers["x-sluice-cache"] == "HIT"
    assert plain.parse().choices[0].message.content == ANSWER
    assert _upstream_calls(fake_openai, marker) == 1
    # Raw bytes: a complete SSE stream ending with [DONE].
    raw = _ask(gw, chat_body(text=marker, stream=True))
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")


def test_cache_control_and_ttl(fake_openai: FakeOpenAI, gw: Gateway) -> None:
    marker = uuid.uuid4().hex
    body = chat_body(text=marker)
    # no-store: neither looked up nor stored.
    assert _ask(gw, body, **{"Cache-Control": "no-store"}).headers["x-sluice-cache"] == "MISS"
    assert _upstream_calls(fake_openai, marker) == 1
    # no-cache: skips the lookup but stores the fresh answer.
    assert _ask(gw, body, **{"Cache-Control": "no-cache"}).headers["x-sluice-cache"] == "MISS"
    assert _ask(gw, body).headers["x-sluice-cache"] == "HIT"
    assert _ask(gw, body, **{"Cache-Control": "no-cache"}).headers["x-sluice-cache"] == "MISS"
    assert _upstream_calls(fake_openai, marker) == 3
    # A shorter TTL from the request.
    short = chat_body(text=marker + " short")
    assert _ask(gw, short, **{"X-Sluice-Cache-TTL": "1"}).headers["x-sluice-cache"] == "MISS"
    assert _ask(gw, short).headers["x-sluice-cache"] == "HIT"
    time.sleep(1.2)
    assert _ask(gw, short).headers["x-sluice-cache"] == "MISS"
    bad = _ask(gw, short, **{"X-Sluice-Cache-TTL": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Sluice-Cache-TTL"


@pytest.mark.parametrize(
    ("model", "stream"),
    [("gpt-x-400", False), ("gpt-x-truncate", True), ("gpt-x-reset", True)],
    ids=["error", "truncated", "reset"],
)
def test_failures_are_never_cached(
    fake_openai: FakeOpenAI, gw: Gateway, model: str, stream: bool
) -> None:
    marker = uuid.uuid4().hex
    body = chat_body(model, text=marker, stream=stream)
    for _ in range(2):
        r = _ask(gw, body)
        assert r.headers.get("x-sluice-cache") in ("MISS", None)
    assert _upstream_calls(fake_openai, marker) == 2  # the second went upstream again


def test_embeddings_are_cached(fake_openai: FakeOpenAI, gw: Gateway) -> None:
    marker = uuid.uuid4().hex
    body = {"model": "gpt-embed-x", "input": [marker]}
    url = gw.url + "/v1/embeddings"
    first = httpx.post(url, json=body, headers=auth(TOKEN_A))
    assert first.status_code == 200, first.text
    second = httpx.post(url, json=body, headers=auth(TOKEN_A))
    assert (first.headers["x-sluice-cache"], second.headers["x-sluice-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()
    assert _upstream_calls(fake_openai, marker) == 1


def test_redis_cache_is_shared_by_instances_of_one_tenant(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    pfx = prefix()
    try:
        cfg = _config(fake_openai, redis={"url": redis_url, "prefix": pfx})
        a, b = start_gateway(cfg), start_gateway(cfg)
        marker = uuid.uuid4().hex
        body = chat_body(text=marker, stream=True)
        assert _ask(a, body).headers["x-sluice-cache"] == "MISS"
        hit = _ask(b, body)
        assert hit.headers["x-sluice-cache"] == "HIT"
        assert hit.text.endswith("data: [DONE]\n\n") and "fake" in hit.text
        assert _ask(b, body, TOKEN_B).headers["x-sluice-cache"] == "MISS"
        assert _upstream_calls(fake_openai, marker) == 2
    finally:
        drop_prefix(redis_url, pfx)


def test_messages_route_never_shares_openai_entries(fake_openai: FakeOpenAI, gw: Gateway) -> None:
    """/v1/messages answers in Anthropic's shape, so it must not hit a chat entry."""
    marker = uuid.uuid4().hex
    for _ in range(2):
        assert _ask(gw, chat_body(text=marker, max_tokens=20)).status_code == 200
    msg = httpx.post(
        gw.url + "/v1/messages",
        json={
            "model": "gpt-4o-mini",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": marker}],
        },
        headers=auth(TOKEN_A),
        timeout=30,
    )
    assert msg.status_code == 200, msg.text
    assert msg.json()["type"] == "message" and "x-sluice-cache" not in msg.headers
    assert _upstream_calls(fake_openai, marker) == 2


def test_a_client_hanging_up_on_done_still_gets_its_stream_cached_and_counted(
    fake_openai: FakeOpenAI, gw: Gateway
) -> None:
    """The SDK closes the connection as soon as it reads [DONE], often before the upstream
    has closed its own response. The answer is whole by then: it is stored, and its usage
    row says 200, not a client disconnect. (Racy before: ~1 in 25 lost the entry.)"""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=TOKEN_A, max_retries=0)
    firsts, seconds = [], []
    for _ in range(30):
        messages: Any = [{"role": "user", "content": uuid.uuid4().hex}]
        for ids in (firsts, seconds):
            with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=messages, stream=True
            ) as resp:
                assert "".join(c.choices[0].delta.content or "" for c in resp.parse()) == ANSWER
                ids.append((resp.headers["x-request-id"], resp.headers["x-sluice-cache"]))
    assert {state for _, state in firsts} == {"MISS"}
    assert {state for _, state in seconds} == {"HIT"}
    rows = {a["request_id"]: a for a in gw.wait_audit(60)}
    assert {(rows[rid]["status"], rows[rid]["error_code"]) for rid, _ in firsts} == {(200, None)}
