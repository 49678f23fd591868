"""Fixtures for provider tests: the fake providers (real HTTP servers) and a gateway config
that routes to each of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, launch_gateway
from tests.fakes.cohere_fake import FakeCohere
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.jina_fake import FakeJina
from tests.fakes.openai_fake import FakeOpenAI
from tests.fakes.workers_ai_fake import FakeWorkersAI

KEYS = {
    "openai": "sk-test-openai-key-0001",
    "gemini": "AIzaFAKEgeminiKEY0123456789abcdef",
    "cloudflare": "cf-token-fake-0001",
    "cohere": "co-fake-key-0001",
    "jina": "jina_fake_key_0001",
}


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_workers_ai() -> Iterator[FakeWorkersAI]:
    fake = FakeWorkersAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_cohere() -> Iterator[FakeCohere]:
    fake = FakeCohere().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_jina() -> Iterator[FakeJina]:
    fake = FakeJina().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def providers_config(
    fake_openai: FakeOpenAI,
    fake_gemini: FakeGemini,
    fake_workers_ai: FakeWorkersAI,
    fake_cohere: FakeCohere,
    fake_jina: FakeJina,
) -> dict[str, Any]:
    """Every provider pointed at its fake, with SPEC §3's default routes."""
    return {
        "providers": {
            "openai": {"kind": "openai", "api_key": KEYS["openai"], "base_url": fake_openai.url},
            "gemini": {"kind": "gemini", "api_key": KEYS["gemini"], "base_url": fake_gemini.url},
            "cloudflare": {
                "kind": "workers_ai",
                "api_key": KEYS["cloudflare"],
                "account_id": fake_workers_ai.ACCOUNT,
                "base_url": fake_workers_ai.url,
            },
            "cohere": {"kind": "cohere", "api_key": KEYS["cohere"], "base_url": fake_cohere.url},
            "jina": {"kind": "jina", "api_key": KEYS["jina"], "base_url": fake_jina.url},
        },
        "models": [
            {"match": "@cf/*", "provider": "cloudflare"},
            {"match": "gpt-*", "provider": "openai"},
            {"match": "*gemini*", "provider": "gemini"},
            {"match": "text-embedding-*", "provider": "openai"},
            {"match": "command*", "provider": "cohere"},
            {"match": "embed-*", "provider": "cohere"},
            {"match": "jina-*", "provider": "jina"},
        ],
        "logging": {"audit": True},
    }


@pytest.fixture(scope="module")
def gateway(
    providers_config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway subprocess per test module, routing to every fake provider."""
    gw = launch_gateway(Path(tmp_path_factory.mktemp("gw")), providers_config)
    yield gw
    gw.stop()
