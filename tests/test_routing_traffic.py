"""Routing under traffic: per-target cooldowns with probing, least-latency, load spread over
several keys, and /v1/route-check's view of the caller's limits and price."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Gateway
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import auth, chat_body

TOKEN = "tok-routing-000000000000001"


def _provider(fake: FakeOpenAI, key: str = "sk-up-a") -> dict[str, Any]:
    return {"kind": "openai", "api_key": key, "base_url": fake.url, "max_retries": 0}


def _calls(fake: FakeOpenAI, model: str) -> int:
    return sum(r["body"].get("model") == model for r in fake.requests)


def _ask(gw: Gateway, model: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", json=chat_body(model), headers=auth(TOKEN), timeout=30
    )


def test_cooldown_skips_a_failing_target_then_probes_it(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    bad, good = f"gpt-{uuid.uuid4().hex[:8]}-500", f"gpt-{uuid.uuid4().hex[:8]}"
    gw = start_gateway(
        {
            "server": {"cooldown_failures": 2, "cooldown_s": 1.5},
            "providers": {"openai": _provider(fake_openai)},
            "models": [
                {
                    "name": "smart",
                    "strategy": "fallback",
                    "targets": [
                        {"provider": "openai", "model": bad},
                        {"provider": "openai", "model": good},
                    ],
                }
            ],
            "auth": {"tokens": [TOKEN]},
        }
    )
    for _ in range(2):
        assert _ask(gw, "smart").status_code == 200
    assert (_calls(fake_openai, bad), _calls(fake_openai, good)) == (2, 2)
    # Cooling: the failing target is skipped; the same provider's other model still serves.
    assert _ask(gw, "smart").status_code == 200
    assert (_calls(fake_openai, bad), _calls(fake_openai, good)) == (2, 3)
    check = httpx.get(gw.url + "/v1/route-check", params={"model": "smart"}).json()
    assert check["provider"] == "openai" and check["upstream_model"] == good
    assert list(check["cooling_down"]) == [f"openai/{bad}"]
    time.sleep(1.6)
    # After the cooldown one request probes it; it fails again, so it cools down again.
    assert _ask(gw, "smart").status_code == 200
    assert _calls(fake_openai, bad) == 3
    assert _ask(gw, "smart").status_code == 200
    assert _calls(fake_openai, bad) == 3


def test_least_latency_prefers_the_faster_target(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    slow, fast = f"gpt-{uuid.uuid4().hex[:8]}-slow", f"gpt-{uuid.uuid4().hex[:8]}"
    gw = start_gateway(
        {
            "providers": {"openai": _provider(fake_openai)},
            "models": [
                {
                    "name": "quick",
                    "strategy": "least-latency",
                    "targets": [
                        {"provider": "openai", "model": slow},
                        {"provider": "openai", "model": fast},
                    ],
                }
            ],
        }
    )
    for _ in range(8):
        assert _ask(gw, "quick").status_code == 200
    # Each unmeasured target is tried once; then the slow one (0.3 s TTFB) is left alone.
    assert _calls(fake_openai, slow) == 1
    assert _calls(fake_openai, fast) == 7


def test_weighted_alias_spreads_load_over_two_keys(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    model = f"gpt-{uuid.uuid4().hex[:8]}"
    gw = start_gateway(
        {
            "providers": {
                "openai_a": _provider(fake_openai, "sk-key-aaaa"),
                "openai_b": _provider(fake_openai, "sk-key-bbbb"),
            },
            "models": [
                {
                    "name": "spread",
                    "strategy": "weighted",
                    "targets": [
                        {"provider": "openai_a", "model": model, "weight": 1},
                        {"provider": "openai_b", "model": model, "weight": 1},
                    ],
                }
            ],
        }
    )
    for _ in range(40):
        assert _ask(gw, "spread").status_code == 200
    keys = [
        r["headers"]["Authorization"] for r in fake_openai.requests if r["body"]["model"] == model
    ]
    assert len(keys) == 40
    assert (
        8 <= keys.count("Bearer sk-key-aaaa") <= 32
    )  # both keys carry a share (p < 1e-4 otherwise)


def test_route_check_shows_limits_left_and_price(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(
        {
            "providers": {"openai": _provider(fake_openai)},
            "models": [{"match": "gpt-*", "provider": "openai"}],
            "auth": {"tokens": [TOKEN]},
            "limits": [{"scope": "key", "rpm": 5, "concurrent": 2}],
            "budgets": [{"scope": "key", "usd": 10, "period": "month"}],
        }
    )
    for _ in range(2):
        assert _ask(gw, "gpt-4o-mini").status_code == 200
    time.sleep(0.1)
    params = {"model": "gpt-4o-mini", "prompt_tokens": "1000", "max_tokens": "1000"}
    view = httpx.get(gw.url + "/v1/route-check", params=params, headers=auth(TOKEN)).json()
    rpm = next(x for x in view["limits"] if x["kind"] == "rpm")
    conc = next(x for x in view["limits"] if x["kind"] == "concurrent")
    assert (rpm["limit"], rpm["remaining"], conc["remaining"]) == (5, 3, 2)
    assert 0 < rpm["reset_s"] <= 60
    [budget] = view["budgets"]
    assert budget["usd"] == 10 and 0 < budget["spent_usd"] < 0.001
    # gpt-4o-mini's built-in list price: $0.15 in, $0.60 out per million tokens.
    assert view["estimate"]["usd"] == (1000 * 0.15 + 1000 * 0.60) / 1e6
    anonymous = httpx.get(gw.url + "/v1/route-check", params=params).json()
    assert "limits" not in anonymous and anonymous["estimate"]["usd"] > 0
