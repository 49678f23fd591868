"""Routing: aliases, P/model, globs in order, the provider field, default_model, strategies."""

from __future__ import annotations

from collections import Counter

import pytest

from sluice import config
from sluice.errors import GatewayError
from sluice.routing import Router, Target


def _router(models: list[dict[str, object]], default: str | None = None) -> Router:
    s = config.from_mapping(
        {
            "providers": {
                "a": {"kind": "openai", "api_key": "k"},
                "b": {"kind": "openai", "api_key": "k"},
                "c": {"kind": "openai"},
            },
            "models": models,
            "default_model": default,
        }
    )
    return Router(s, {"a", "b"})


def test_globs_top_to_bottom_and_rule_named() -> None:
    r = _router([{"match": "gpt-4*", "provider": "a"}, {"match": "gpt-*", "provider": "b"}])
    p = r.plan("gpt-4o")
    assert p.targets == (Target("a", "gpt-4o"),)
    assert p.rule == "models[0] match 'gpt-4*'"
    assert r.plan("gpt-3.5").targets[0].provider == "b"


def test_alias_and_upstream_model() -> None:
    r = _router(
        [
            {
                "name": "smart",
                "targets": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}],
            }
        ]
    )
    p = r.plan("smart")
    assert [(t.provider, t.model) for t in r.order(p)] == [("a", "m1"), ("b", "m2")]


def test_provider_prefix_only_for_configured() -> None:
    r = _router([{"match": "*", "provider": "b"}])
    assert r.plan("a/some-model").targets == (Target("a", "some-model"),)
    assert r.plan("c/x").targets == (Target("b", "c/x"),)  # c has no credentials


def test_provider_field_and_default_model() -> None:
    r = _router([{"match": "gpt-*", "provider": "a"}], default="gpt-default")
    assert r.plan("anything", "b").targets == (Target("b", "anything"),)
    assert r.plan(None).model == "gpt-default"
    with pytest.raises(GatewayError) as err:
        r.plan("x", "nope")
    assert err.value.code == "VALIDATION_ERROR" and err.value.param == "provider"


def test_unknown_model_is_404() -> None:
    with pytest.raises(GatewayError) as err:
        _router([{"match": "gpt-*", "provider": "a"}]).plan("llama")
    assert (err.value.code, err.value.status) == ("MODEL_NOT_FOUND", 404)


def test_weighted_spreads_by_weight() -> None:
    r = _router(
        [
            {
                "name": "w",
                "strategy": "weighted",
                "targets": [{"provider": "a", "weight": 3}, {"provider": "b", "weight": 1}],
            }
        ]
    )
    plan = r.plan("w")
    firsts = Counter(r.order(plan)[0].provider for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80
    assert all(len(r.order(plan)) == 2 for _ in range(10))  # the other stays as fallback


def test_least_latency_prefers_fastest() -> None:
    r = _router(
        [
            {
                "name": "l",
                "strategy": "least-latency",
                "targets": [{"provider": "a"}, {"provider": "b"}],
            }
        ]
    )
    plan = r.plan("l")
    r.latency.observe(Target("a", "l"), 0.5)
    r.latency.observe(Target("b", "l"), 0.1)
    assert r.order(plan)[0].provider == "b"
