"""Env-only mode (SPEC §3) for the providers of this package: names, variables, routes."""

from __future__ import annotations

from sluice import config
from sluice.routing import Router


def test_provider_variables_and_default_routes() -> None:
    env = {
        "GOOGLE_API_KEY": "AIza-google",
        "GEMINI_BASE_URL": "http://127.0.0.1:9/gem",
        "CLOUDFLARE_API_TOKEN": "cf-token",
        "CLOUDFLARE_ACCOUNT_ID": "acct1",
        "COHERE_API_KEY": "co-key",
        "COHERE_BASE_URL": "http://127.0.0.1:9/co",
        "JINA_API_KEY": "jina-key",
    }
    s = config.from_env(env)
    p = s.providers
    assert (p["gemini"].kind, p["gemini"].api_key, p["gemini"].base_url) == (
        "gemini",
        "AIza-google",
        "http://127.0.0.1:9/gem",
    )
    assert (p["cloudflare"].kind, p["cloudflare"].account_id) == ("workers_ai", "acct1")
    assert p["cohere"].base_url == "http://127.0.0.1:9/co" and p["jina"].kind == "jina"
    router = Router(s, {n for n, c in p.items() if c.configured})
    expected = {
        "@cf/meta/llama-3.1-8b-instruct": "cloudflare",
        "gemini-2.5-pro": "gemini",
        "command-r-plus": "cohere",
        "embed-english-v3.0": "cohere",
        "jina-embeddings-v3": "jina",
    }
    for model, provider in expected.items():
        assert router.plan(model).targets[0].provider == provider, model
    assert s.default_model == "@cf/meta/llama-4-scout-17b-16e-instruct"


def test_workers_ai_needs_the_account_id() -> None:
    s = config.from_env({"CLOUDFLARE_API_TOKEN": "cf-token"})
    assert not s.providers["cloudflare"].configured
    assert s.default_model is None
