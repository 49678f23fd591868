"""Rate limits end to end: rpm/tpm/concurrent against a real gateway, in-process and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import (
    auth,
    burst,
    chat_body,
    drop_prefix,
    fresh_window,
    prefix,
    statuses,
)

TOKEN_A, TOKEN_B = "tok-limits-a-000000000001", "tok-limits-b-000000000002"


def _config(fake: FakeOpenAI, limits: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return openai_config(fake, auth={"tokens": [TOKEN_A, TOKEN_B]}, limits=limits, **extra)


def _check_rpm(gw: Gateway | list[Gateway], n: int, k: int) -> None:
    fresh_window()
    urls = [g.url for g in gw] if isinstance(gw, list) else gw.url
    responses = burst(urls, n, chat_body(), auth(TOKEN_A))
    assert statuses(responses) == {200: k, 429: n - k}
    for r in responses:
        assert r.headers["x-ratelimit-limit-requests"] == str(k)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "RATE_LIMITED"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200
    )
    assert remaining == list(range(k))  # each admitted request saw its own slot go


def test_rpm_exact_in_process(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(_config(fake_openai, [{"scope": "key", "rpm": 7}]))
    _check_rpm(gw, 30, 7)
    # Another key has its own counter.
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat_body(), headers=auth(TOKEN_B))
    assert r.status_code == 200
    assert r.headers["x-ratelimit-remaining-requests"] == "6"


def test_rpm_exact_redis(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    pfx = prefix()
    try:
        gw = start_gateway(
            _config(
                fake_openai,
                [{"scope": "global", "rpm": 9}],
                redis={"url": redis_url, "prefix": pfx},
            )
        )
        _check_rpm(gw, 30, 9)
    finally:
        drop_prefix(redis_url, pfx)


def test_two_instances_share_one_limit(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    pfx = prefix()
    try:
        cfg = _config(
            fake_openai, [{"scope": "key", "rpm": 11}], redis={"url": redis_url, "prefix": pfx}
        )
        gws = [start_gateway(cfg), start_gateway(cfg)]
        _check_rpm(gws, 40, 11)
    finally:
        drop_prefix(redis_url, pfx)


def test_concurrent_limit_admits_k_and_releases(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(
        _config(
            fake_openai, [{"scope": "team", "concurrent": 99}, {"scope": "key", "concurrent": 3}]
        )
    )
    fake_openai_slow = chat_body("gpt-4o-mini-slow")
    responses = burst(gw.url, 12, fake_openai_slow, auth(TOKEN_A))
    assert statuses(responses) == {200: 3, 429: 9}
    rejected = [r for r in responses if r.status_code == 429]
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    assert "concurrent" in rejected[0].json()["error"]["message"]
    # The slots were released when the three finished.
    assert statuses(burst(gw.url, 3, fake_openai_slow, auth(TOKEN_A))) == {200: 3}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tpm_reserves_then_settles_to_real_usage(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], stream: bool
) -> None:
    gw = start_gateway(_config(fake_openai, [{"scope": "key", "tpm": 1000}]))
    fresh_window()
    body = chat_body(text="one two three", max_tokens=50, stream=stream)
    raw_len = len(httpx.Request("POST", "http://x", json=body).content)
    estimate = (raw_len + 3) // 4 + 50
    with httpx.Client(base_url=gw.url, headers=auth(TOKEN_A), timeout=30) as c:
        first = c.post("/v1/chat/completions", json=body)
        assert first.status_code == 200, first.text
        _ = first.content
        assert first.headers["x-ratelimit-limit-tokens"] == "1000"
        assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - estimate)
        time.sleep(0.2)  # settlement follows the response
        second = c.post("/v1/chat/completions", json=body)
        real = 3 + 3 + 6  # the fake's usage: words + 3 per message, six completion words
        assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - real - estimate)
        # A request whose own estimate cannot fit is refused with the token headers.
        big = c.post("/v1/chat/completions", json={**body, "max_tokens": 990})
        assert big.status_code == 429
        assert big.json()["error"]["code"] == "RATE_LIMITED"
        assert "tokens per minute" in big.json()["error"]["message"]
        assert big.headers["x-ratelimit-limit-tokens"] == "1000"
        assert "retry-after" in big.headers


def test_session_and_model_scopes(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    """Session and model scopes count separately; the tighter of two rules on one counter wins."""
    gw = start_gateway(
        _config(
            fake_openai,
            [
                {"scope": "session", "rpm": 2},
                {"scope": "model", "rpm": 50},
                {"scope": "model", "rpm": 4},
            ],
        )
    )
    fresh_window()
    with httpx.Client(base_url=gw.url, headers=auth(TOKEN_A), timeout=30) as c:
        s1 = [
            c.post("/v1/chat/completions", json=chat_body(), headers={"X-Session-ID": "s1"})
            for _ in range(3)
        ]
        assert [r.status_code for r in s1] == [200, 200, 429]
        # Two rpm limits: the headers report the one with the least left (session: 1 of 2).
        assert s1[0].headers["x-ratelimit-limit-requests"] == "2"
        assert s1[0].headers["x-ratelimit-remaining-requests"] == "1"
        # A refused request moved no counter: the model has seen 2 of its 4 (the smaller rule).
        s2 = [
            c.post("/v1/chat/completions", json=chat_body(), headers={"X-Session-ID": "s2"})
            for _ in range(2)
        ]
        assert [r.status_code for r in s2] == [200, 200]
        s3 = {"X-Session-ID": "s3"}
        spent = c.post("/v1/chat/completions", json=chat_body(), headers=s3)
        assert spent.status_code == 429
        assert "4 requests per minute per model" in spent.json()["error"]["message"]
        other = c.post("/v1/chat/completions", json=chat_body("gpt-4.1"), headers=s3)
        assert other.status_code == 200


def test_no_limits_no_headers(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(openai_config(fake_openai))
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat_body())
    assert r.status_code == 200
    assert not any(h.startswith("x-ratelimit") for h in r.headers)


def test_native_pass_through_is_limited_and_budgeted(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    """SPEC §4: native routes get limits too; tokens and spend settle from the native usage."""
    cfg = _config(fake_openai, [{"scope": "key", "rpm": 3, "tpm": 5000}])
    cfg["budgets"] = [{"scope": "key", "usd": 1, "period": "day"}]
    gw = start_gateway(cfg)
    fresh_window()
    url = gw.url + "/openai/v1/chat/completions"
    body = chat_body("gpt-4o-mini", max_tokens=20)
    with httpx.Client(headers=auth(TOKEN_A), timeout=30) as c:
        first = c.post(url, json=body)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        raw_len = len(httpx.Request("POST", url, json=body).content)
        assert first.headers["x-ratelimit-remaining-tokens"] == str(5000 - (raw_len + 3) // 4 - 20)
        time.sleep(0.2)
        check = c.get(gw.url + "/v1/route-check", params={"model": "gpt-4o-mini"}).json()
        tpm = next(x for x in check["limits"] if x["kind"] == "tpm")
        assert tpm["remaining"] == 5000 - (4 + 6)  # settled to the upstream's usage
        assert 0 < check["budgets"][0]["spent_usd"] < 0.0001
        assert [c.post(url, json=body).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"limits": [{"scope": "key"}]}, "limits[0]"),
        ({"limits": [{"scope": "key", "rpm": 5}, {"scope": "team", "tpm": 0}]}, "limits[1].tpm"),
        ({"limits": [{"scope": "planet", "rpm": 5}]}, "limits[0].scope"),
        ({"budgets": [{"scope": "team", "usd": -1}]}, "budgets[0].usd"),
        ({"budgets": [{"scope": "team", "usd": 5, "period": "year"}]}, "budgets[0].period"),
        ({"redis": {"instances": 0}}, "redis.instances"),
    ],
    ids=["empty-rule", "zero-cap", "unknown-scope", "negative-budget", "bad-period", "instances"],
)
def test_traffic_config_errors_name_the_path(extra: dict[str, Any], path: str) -> None:
    from sluice import config

    with pytest.raises(config.ConfigError) as err:
        config.from_mapping(extra)
    assert str(err.value).startswith(path)
