"""Budgets end to end: worst-case reservation, settlement, concurrency, streams, Redis."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from tests.conftest import Gateway
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import auth, burst, chat_body, drop_prefix, prefix, statuses

TOKEN = "tok-budget-a-00000000000001"
PER_TOKEN = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}  # $0.001 a token


def _config(fake: FakeOpenAI, usd: float, price: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"openai": {"kind": "openai", "api_key": "sk-up-1", "base_url": fake.url}},
        "models": [
            {"match": "gpt-*", "provider": "openai", "price": price},
            {"match": "free-*", "provider": "openai"},  # no price anywhere
        ],
        "auth": {"tokens": [TOKEN]},
        "budgets": [{"scope": "key", "usd": usd, "period": "day"}],
        **extra,
    }


def _spent(gw: Gateway) -> dict[str, Any]:
    r = httpx.get(gw.url + "/v1/route-check", params={"model": "gpt-4o-mini"}, headers=auth(TOKEN))
    assert r.status_code == 200
    [budget] = r.json()["budgets"]
    return dict(budget)


def _run_against_budget(gws: list[Gateway], budget: float) -> None:
    body = chat_body(text="hi", max_tokens=10)
    responses = burst([g.url for g in gws], 100, body, auth(TOKEN))
    counts = statuses(responses)
    assert set(counts) == {200, 429}, counts
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "BUDGET_EXCEEDED" for r in refused)
    assert all(int(r.headers["retry-after"]) <= 86_400 for r in refused)
    assert "resets at" in refused[0].json()["error"]["message"]
    reserve = 0.001 * ((len(orjson.dumps(body)) + 3) // 4 + 10)
    assert counts[200] >= math.floor(budget / reserve)  # the worst case always fit this many
    lines = [a for g in gws for a in g.wait_audit(100)]
    spent = [a["cost_usd"] for a in lines if a["status"] == 200]
    assert len(spent) == counts[200]
    assert sum(spent) <= budget  # never overspent
    seen = _spent(gws[0])
    assert seen["spent_usd"] == sum(math.ceil(c * 1e9) for c in spent) / 1e9  # settled exactly
    assert seen["remaining_usd"] == budget - seen["spent_usd"]


def test_hundred_concurrent_never_overspend(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(_config(fake_openai, 0.25, PER_TOKEN))
    _run_against_budget([gw], 0.25)


def test_two_instances_share_one_budget(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    pfx = prefix()
    try:
        cfg = _config(fake_openai, 0.25, PER_TOKEN, redis={"url": redis_url, "prefix": pfx})
        _run_against_budget([start_gateway(cfg), start_gateway(cfg)], 0.25)
    finally:
        drop_prefix(redis_url, pfx)


def test_unpriced_model_is_refused_under_a_budget(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(_config(fake_openai, 5, PER_TOKEN))
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat_body("free-x"), headers=auth(TOKEN))
    assert r.status_code == 403
    assert "no known price" in r.json()["error"]["message"]
    # Without a budget the same model is served and its cost recorded as unknown, not $0.
    open_gw = start_gateway({**_config(fake_openai, 5, PER_TOKEN), "budgets": []})
    r = httpx.post(
        open_gw.url + "/v1/chat/completions", json=chat_body("free-x"), headers=auth(TOKEN)
    )
    assert r.status_code == 200
    [line] = open_gw.wait_audit(1)
    assert line["cost_usd"] is None


def test_stream_that_exhausts_its_budget_ends_with_an_error_event(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    dollar = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 1_000_000.0}  # $1 a token
    gw = start_gateway(_config(fake_openai, 40, dollar))
    body = chat_body(text="hi", max_tokens=3, stream=True)
    fake_openai.chunks = 60  # an upstream that ignores max_tokens: 60 tokens, $60
    try:
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", json=body, headers=auth(TOKEN), timeout=30
        ) as r:
            assert r.status_code == 200
            text = r.read().decode()
    finally:
        fake_openai.chunks = 6
    assert "[DONE]" not in text
    last = [line for line in text.splitlines() if line.startswith("data: ")][-1]
    assert orjson.loads(last[6:])["error"]["code"] == "BUDGET_EXCEEDED"
    [line] = gw.wait_audit(1)
    assert line["status"] == 429 and line["error_code"] == "BUDGET_EXCEEDED"
    assert _spent(gw)["spent_usd"] == line["cost_usd"]
    again = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth(TOKEN))
    assert again.status_code == 429
    assert again.json()["error"]["code"] == "BUDGET_EXCEEDED"
    assert again.headers["x-sluice-budget-reset"].endswith("T00:00:00Z")
