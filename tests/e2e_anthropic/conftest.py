"""One gateway for the Anthropic end-to-end tests: fake Anthropic and fake OpenAI behind it."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.conftest import Gateway, launch_gateway
from tests.e2e_anthropic.harness import KEY, OPENAI_KEY, TOKEN
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_tools_fake import FakeOpenAIWithTools


@pytest.fixture(scope="package")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="package")
def fake_oai() -> Iterator[FakeOpenAIWithTools]:
    fake = FakeOpenAIWithTools().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="package")
def gw(
    tmp_path_factory: pytest.TempPathFactory,
    fake_anthropic: FakeAnthropic,
    fake_oai: FakeOpenAIWithTools,
) -> Iterator[Gateway]:
    config = {
        "providers": {
            "openai": {"kind": "openai", "api_key": OPENAI_KEY, "base_url": fake_oai.url},
            "anthropic": {
                "kind": "anthropic",
                "api_key": KEY,
                "base_url": fake_anthropic.url,
                "max_retries": 0,
            },
        },
        "models": [
            {"match": "gpt-*", "provider": "openai"},
            {"match": "claude-*", "provider": "anthropic"},
            {"name": "smart", "targets": [{"provider": "anthropic", "model": "claude-real"}]},
        ],
        "auth": {"tokens": [TOKEN]},
    }
    g = launch_gateway(tmp_path_factory.mktemp("gw"), config)
    yield g
    g.stop()


@pytest.fixture
def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=TOKEN, base_url=gw.url + "/v1", max_retries=0)


@pytest.fixture
def claude(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=TOKEN, base_url=gw.url, max_retries=0)
