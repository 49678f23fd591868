"""Cloudflare AI Gateway as the upstream (seed 003): with AI_GATEWAY_URL set, calls go to
`{AI_GATEWAY_URL}/{provider}/...` with `cf-aig-authorization` and `cf-aig-metadata`
(https://developers.cloudflare.com/ai-gateway/providers/google-ai-studio/ ,
https://developers.cloudflare.com/ai-gateway/observability/custom-metadata/)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import web

from sluice.config import AiGatewayConfig, ProviderConfig
from sluice.providers import registry
from sluice.providers.base import UpstreamCall
from sluice.upstream import Upstream
from tests.conftest import Gateway
from tests.fakes.server import FakeServer

ACCOUNT, GATEWAY = "acct9", "my-gateway"
AIG_TOKEN = "cf-aig-token-0123456789"


class FakeAIGateway(FakeServer):
    """Answers each provider path in that provider's format, recording path and headers."""

    @property
    def url(self) -> str:
        return f"{self.origin}/v1/{ACCOUNT}/{GATEWAY}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/{account}/{gateway}/{rest:.+}", self.proxy)

    async def proxy(self, request: web.Request) -> web.Response:
        await self.record(request)
        if request.headers.get("cf-aig-authorization") != f"Bearer {AIG_TOKEN}":
            return self.json({"error": {"message": "Unauthorized gateway"}}, 401)
        rest = request.match_info["rest"]
        if rest == "openai/chat/completions":
            msg = {"role": "assistant", "content": "via gateway (openai)"}
            usage = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
            choice = {"index": 0, "message": msg, "finish_reason": "stop"}
            return self.json(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "gpt-4o",
                    "choices": [choice],
                    "usage": usage,
                }
            )
        if rest.startswith("workers-ai/@cf/"):
            result = {
                "response": "via gateway (workers-ai)",
                "usage": {"prompt_tokens": 2, "completion_tokens": 4},
            }
            return self.json({"result": result, "success": True, "errors": [], "messages": []})
        if rest == "anthropic/v1/messages":
            usage = {"input_tokens": 3, "output_tokens": 4}
            content = [{"type": "text", "text": "via gateway (anthropic)"}]
            return self.json(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-x",
                    "content": content,
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        if rest.startswith("google-ai-studio/v1beta/models/"):
            cand = {
                "content": {"parts": [{"text": "via gateway (gemini)"}], "role": "model"},
                "finishReason": "STOP",
            }
            return self.json(
                {
                    "candidates": [cand],
                    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 4},
                }
            )
        return self.json({"error": {"message": f"no provider at {rest}"}}, 404)


@pytest.fixture(scope="module")
def fake_aig() -> Iterator[FakeAIGateway]:
    fake = FakeAIGateway().start()
    yield fake
    fake.stop()


def _config() -> dict[str, Any]:
    """Providers on their default base URLs: only the AI Gateway makes them reachable here."""
    return {
        "providers": {
            "openai": {"kind": "openai", "api_key": "sk-openai-behind-gateway-01"},
            "cloudflare": {
                "kind": "workers_ai",
                "api_key": "cf-api-token-0001",
                "account_id": ACCOUNT,
            },
            "gemini": {"kind": "gemini", "api_key": "AIza-gemini-behind-gateway-0001"},
            "anthropic": {"kind": "anthropic", "api_key": "sk-ant-behind-gateway-0001"},
        },
        "models": [
            {"match": "gpt-*", "provider": "openai"},
            {"match": "@cf/*", "provider": "cloudflare"},
            {"match": "*gemini*", "provider": "gemini"},
            {"match": "claude-*", "provider": "anthropic"},
        ],
    }


@pytest.mark.parametrize(
    ("model", "path", "key_header", "answer"),
    [
        (
            "gpt-4o",
            "openai/chat/completions",
            ("Authorization", "Bearer sk-openai-behind-gateway-01"),
            "openai",
        ),
        (
            "@cf/meta/llama-3.1-8b-instruct",
            "workers-ai/@cf/meta/llama-3.1-8b-instruct",
            ("Authorization", "Bearer cf-api-token-0001"),
            "workers-ai",
        ),
        (
            "gemini-2.0-flash",
            "google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent",
            ("x-goog-api-key", "AIza-gemini-behind-gateway-0001"),
            "gemini",
        ),
        (
            "claude-sonnet-4-5",
            "anthropic/v1/messages",
            ("x-api-key", "sk-ant-behind-gateway-0001"),
            "anthropic",
        ),
    ],
    ids=["openai", "workers-ai", "google-ai-studio", "anthropic"],
)
def test_routed_calls_go_through_the_ai_gateway(
    start_gateway: Any,
    fake_aig: FakeAIGateway,
    model: str,
    path: str,
    key_header: tuple[str, str],
    answer: str,
) -> None:
    gw: Gateway = start_gateway(
        _config(), env={"AI_GATEWAY_URL": fake_aig.url, "AI_GATEWAY_TOKEN": AIG_TOKEN}
    )
    client = openai.OpenAI(
        base_url=gw.url + "/v1",
        api_key="x",
        max_retries=0,
        default_headers={"X-Session-ID": "sess-42"},
    )
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == f"via gateway ({answer})"
    seen = fake_aig.requests[-1]
    assert seen["path"] == f"/v1/{ACCOUNT}/{GATEWAY}/{path}"
    assert seen["headers"][key_header[0]] == key_header[1]
    assert json.loads(seen["headers"]["cf-aig-metadata"]) == {"session": "sess-42"}
    assert AIG_TOKEN not in gw.stdout() + gw.stderr()


def test_native_pass_through_uses_the_ai_gateway_too(
    start_gateway: Any, fake_aig: FakeAIGateway
) -> None:
    gw: Gateway = start_gateway(
        _config(), env={"AI_GATEWAY_URL": fake_aig.url, "AI_GATEWAY_TOKEN": AIG_TOKEN}
    )
    r = httpx.post(gw.url + "/workers-ai/@cf/meta/llama-3.1-8b-instruct", json={"messages": []})
    assert r.json()["result"]["response"] == "via gateway (workers-ai)"
    assert (
        fake_aig.requests[-1]["path"]
        == f"/v1/{ACCOUNT}/{GATEWAY}/workers-ai/@cf/meta/llama-3.1-8b-instruct"
    )


def test_team_metadata_and_custom_base_urls() -> None:
    """Team metadata is attached as JSON; a provider on a custom base URL goes direct."""
    up = Upstream(ai_gateway=AiGatewayConfig(url="https://gw.example/v1/a/g/", token=AIG_TOKEN))
    openai_adapter = registry.adapter_for(ProviderConfig(kind="openai", api_key="k"))
    call = UpstreamCall("POST", "/chat/completions", {"Authorization": "Bearer k"}, b"{}")
    url, sent = up.address(openai_adapter, call, {"team": "team_123", "user": None})
    assert url == "https://gw.example/v1/a/g/openai/chat/completions"
    assert orjson.loads(sent.headers["cf-aig-metadata"]) == {"team": "team_123"}
    assert sent.headers["cf-aig-authorization"] == f"Bearer {AIG_TOKEN}"
    vllm = registry.adapter_for(
        ProviderConfig(kind="openai", api_key="k", base_url="http://vllm:8000/v1")
    )
    url, sent = up.address(vllm, call, {"team": "team_123"})
    assert url == "http://vllm:8000/v1/chat/completions" and "cf-aig-metadata" not in sent.headers
