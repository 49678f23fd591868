"""Team keys (sluice.auth) meet traffic control: a key's own limits and budget from
`Principal.limits`, team-wide rules, and the cache partitioned by team."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import auth, chat_body, fresh_window

ADMIN = "admin-traffic-key-000000000001"


def _gateway(start: Callable[..., Gateway], fake: FakeOpenAI, tmp: Path, **extra: Any) -> Gateway:
    cfg = openai_config(
        fake,
        storage={"url": f"sqlite:///{tmp}/keys-{uuid.uuid4().hex[:6]}.db"},
        auth={"admin_key": ADMIN, "keys": True},
        **extra,
    )
    return start(cfg)


def _key(gw: Gateway, team: str, **extra: Any) -> str:
    r = httpx.post(
        gw.url + "/tokens", json={"teamId": team, "name": team, **extra}, headers=auth(ADMIN)
    )
    assert r.status_code == 200, r.text
    return str(r.json()["apiKey"])


def _ask(gw: Gateway, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", json=body or chat_body(), headers=auth(key), timeout=30
    )


def test_key_limits_and_team_rules_together(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = _gateway(start_gateway, fake_openai, tmp_path, limits=[{"scope": "team", "rpm": 4}])
    own = _key(gw, "team_a", limits={"rpm": 2})
    plain = _key(gw, "team_a")
    other = _key(gw, "team_b")
    fresh_window()
    first = [_ask(gw, own) for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 429]
    assert "2 requests per minute per key" in first[2].json()["error"]["message"]
    # The team's 4 are shared by its keys: two used, two left for the other key.
    second = [_ask(gw, plain) for _ in range(3)]
    assert [r.status_code for r in second] == [200, 200, 429]
    assert "per team" in second[2].json()["error"]["message"]
    assert _ask(gw, other).status_code == 200  # another team is untouched


def test_key_budget_from_its_settings(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = _gateway(start_gateway, fake_openai, tmp_path)
    # gpt-4o-mini's built-in price: $0.15 / $0.60 per million tokens.
    key = _key(gw, "team_c", limits={"budget_usd": 0.00001, "budget_period": "week"})
    body = chat_body(max_tokens=5)
    assert _ask(gw, key, body).status_code == 200
    refused = _ask(gw, key, body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "BUDGET_EXCEEDED"
    assert "key budget of $1e-05" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) <= 7 * 86_400


def test_cache_is_shared_within_a_team_only(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = _gateway(start_gateway, fake_openai, tmp_path, cache={"enabled": True})
    a1, a2, b = _key(gw, "team_x"), _key(gw, "team_x"), _key(gw, "team_y")
    body = chat_body(text=uuid.uuid4().hex)
    assert _ask(gw, a1, body).headers["x-sluice-cache"] == "MISS"
    assert _ask(gw, a2, body).headers["x-sluice-cache"] == "HIT"
    assert _ask(gw, b, body).headers["x-sluice-cache"] == "MISS"
