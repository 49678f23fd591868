"""Native pass-through (SPEC §4, seed 003) end to end: official SDKs pointed at
`<gateway>/<provider>` work unchanged; the credential is swapped; headers are allowlisted;
streams are relayed byte for byte; usage is recorded."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import openai
import pytest
from aiohttp import web
from google import genai
from google.genai import types

from tests.conftest import Gateway, launch_gateway
from tests.fakes import cohere_fake, gemini_fake, workers_ai_fake
from tests.fakes.cohere_fake import FakeCohere
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.jina_fake import FakeJina
from tests.fakes.openai_fake import WORDS, FakeOpenAI
from tests.fakes.server import FakeServer
from tests.fakes.workers_ai_fake import FakeWorkersAI
from tests.providers.conftest import KEYS

TOKEN = "gw-static-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class MiniAnthropic(FakeServer):
    """Just enough of https://docs.anthropic.com/en/api/messages to answer the SDK."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)

    async def messages(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if request.headers.get("x-api-key") != "sk-ant-fake-0001":
            err = {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
            return self.json(err, 401)
        return self.json(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": "Hello from the mini anthropic."}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 9, "output_tokens": 6},
            }
        )


@pytest.fixture(scope="module")
def mini_anthropic() -> Iterator[MiniAnthropic]:
    fake = MiniAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def native_gw(
    providers_config: dict[str, Any],
    mini_anthropic: MiniAnthropic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = json.loads(json.dumps(providers_config))
    config["auth"] = {"tokens": [TOKEN], "byok": True}
    config["providers"]["claude"] = {
        "kind": "anthropic",
        "api_key": "sk-ant-fake-0001",
        "base_url": mini_anthropic.origin,
    }
    gw = launch_gateway(Path(tmp_path_factory.mktemp("native")), config)
    yield gw
    gw.stop()


def rid(name: str) -> dict[str, str]:
    """An X-Request-ID header unique to this test run, so each audit line is found exactly."""
    return {"X-Request-ID": f"req_{name}_{uuid.uuid4().hex[:12]}"}


def _audit_for(gw: Gateway, headers: dict[str, str]) -> dict[str, Any]:
    """The audit line of the request sent with `headers` (from `rid`); lines are written
    just after the response, so wait for it."""
    request_id = headers["X-Request-ID"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [a for a in gw.audit() if a["request_id"] == request_id]
        if lines:
            assert len(lines) == 1, lines
            return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


def test_google_genai_sdk_through_gemini_prefix(
    native_gw: Gateway, fake_gemini: FakeGemini
) -> None:
    client = genai.Client(
        api_key=TOKEN, http_options=types.HttpOptions(base_url=native_gw.url + "/gemini")
    )
    r = client.models.generate_content(model="gemini-2.0-flash", contents="Say hi")
    assert r.text == gemini_fake.ANSWER
    seen = fake_gemini.requests[-1]
    # The path is the SDK's own (its API version included), minus our prefix.
    assert seen["path"] in (
        "/v1/models/gemini-2.0-flash:generateContent",
        "/v1beta/models/gemini-2.0-flash:generateContent",
    )
    assert seen["headers"]["x-goog-api-key"] == KEYS["gemini"]
    assert TOKEN not in json.dumps(seen)
    tagged = rid("gemini_stream")
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers=tagged))
    stream = client.models.generate_content_stream(
        model="gemini-2.0-flash", contents="x", config=config
    )
    assert "".join(c.text or "" for c in stream) == gemini_fake.ANSWER
    emb = client.models.embed_content(model="gemini-embedding-001", contents=["a", "b c"])
    assert emb.embeddings is not None and len(emb.embeddings) == 2
    rec = _audit_for(native_gw, tagged)
    assert rec["path"] == "/gemini" + fake_gemini.requests[-2]["path"]
    assert rec["provider"] == "gemini" and rec["model"] == "gemini-2.0-flash"
    assert rec["stream"] is True and rec["prompt_tokens"] == 1 and not rec["tokens_estimated"]


def test_openai_sdk_through_openai_prefix(native_gw: Gateway, fake_openai: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=native_gw.url + "/openai/v1", api_key=TOKEN, max_retries=0)
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.choices[0].message.content == "".join(WORDS)
    seen = fake_openai.requests[-1]
    assert (
        seen["path"] == "/v1/chat/completions"
    )  # seed 003's /openai/v1/... on a base ending in /v1
    assert seen["headers"]["Authorization"] == f"Bearer {KEYS['openai']}"
    tagged = rid("openai_stream")
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=tagged,
        )
    )
    assert chunks[-1].usage is not None
    rec = _audit_for(native_gw, tagged)
    assert rec["path"] == "/openai/v1/chat/completions"
    assert rec["stream"] is True and rec["completion_tokens"] == chunks[-1].usage.completion_tokens


def test_cohere_sdk_through_cohere_prefix(native_gw: Gateway, fake_cohere: FakeCohere) -> None:
    client = cohere.ClientV2(api_key=TOKEN, base_url=native_gw.url + "/cohere")
    r = client.chat(model="command-r", messages=[{"role": "user", "content": "hi"}])
    assert r.message.content is not None
    assert r.message.content[0].text == cohere_fake.ANSWER  # type: ignore[union-attr]
    assert fake_cohere.requests[-1]["headers"]["Authorization"] == f"Bearer {KEYS['cohere']}"
    tagged = rid("cohere_stream")
    events = list(
        client.chat_stream(
            model="command-r",
            messages=[{"role": "user", "content": "hi"}],
            request_options={"additional_headers": tagged},
        )
    )
    assert events[-1].type == "message-end"
    rec = _audit_for(native_gw, tagged)
    assert rec["path"] == "/cohere/v2/chat"
    assert rec["stream"] is True and rec["prompt_tokens"] > 60  # `tokens`, not billed units


def test_workers_ai_envelope_and_stream_pass_unchanged(
    native_gw: Gateway, fake_workers_ai: FakeWorkersAI
) -> None:
    url = native_gw.url + "/workers-ai/@cf/meta/llama-3.1-8b-instruct"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(url, json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["result"]["response"] == workers_ai_fake.ANSWER
    seen = fake_workers_ai.requests[-1]
    assert (
        seen["path"]
        == f"/client/v4/accounts/{FakeWorkersAI.ACCOUNT}/ai/run/@cf/meta/llama-3.1-8b-instruct"
    )
    direct_url = fake_workers_ai.url + seen["path"].removeprefix("/client/v4")
    stream_body = {**body, "stream": True}
    tagged = rid("workers_ai_stream")
    via_gateway = httpx.post(url, json=stream_body, headers={**AUTH, **tagged})
    direct = httpx.post(direct_url, json=stream_body, headers={"Authorization": "Bearer x"})
    assert via_gateway.headers["content-type"].startswith("text/event-stream")
    assert via_gateway.content == direct.content  # byte for byte
    rec = _audit_for(native_gw, tagged)
    assert rec["model"] == "@cf/meta/llama-3.1-8b-instruct" and rec["completion_tokens"] == 6


def test_jina_prefix(native_gw: Gateway, fake_jina: FakeJina) -> None:
    r = httpx.post(
        native_gw.url + "/jina/v1/embeddings",
        json={"model": "jina-embeddings-v3", "input": ["a"]},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["data"][0]["index"] == 0
    assert fake_jina.requests[-1]["path"] == "/v1/embeddings"


def test_only_allowlisted_headers_reach_the_provider(
    native_gw: Gateway, fake_openai: FakeOpenAI
) -> None:
    headers = {
        **AUTH,
        "Cookie": "session_id=abc",
        "X-Unknown-Header": "nope",
        "OpenAI-Organization": "org-123",
        "X-Provider-Key": "sk-caller-own-key-000111",
        "Connection": "keep-alive",
    }
    r = httpx.post(
        native_gw.url + "/openai/v1/chat/completions?auth_token=x",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert r.status_code == 200
    seen = {k.lower(): v for k, v in fake_openai.requests[-1]["headers"].items()}
    assert seen["authorization"] == "Bearer sk-caller-own-key-000111"  # BYOK
    assert seen["openai-organization"] == "org-123"
    for name in ("cookie", "x-unknown-header", "x-provider-key", "x-auth-token"):
        assert name not in seen
    assert TOKEN not in json.dumps(fake_openai.requests[-1])


def test_auth_applies_and_errors_keep_status(native_gw: Gateway, fake_gemini: FakeGemini) -> None:
    before = len(fake_gemini.requests)
    url = native_gw.url + "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"parts": [{"text": "x"}]}]}
    assert httpx.post(url, json=body).status_code == 401
    assert len(fake_gemini.requests) == before  # refused before any upstream call
    bad = httpx.post(url.replace("gemini-2.0-flash", "gemini-x-400"), json=body, headers=AUTH)
    assert bad.status_code == 400 and "Invalid JSON payload" in bad.json()["error"]["message"]
    assert (
        httpx.post(
            native_gw.url + "/openrouter/v1/chat/completions", json={}, headers=AUTH
        ).status_code
        == 404
    )
    # SPEC §6: the request never chooses the upstream, in native bodies and headers either.
    sneaky = {**body, "generationConfig": {"base_url": "http://evil.example"}}
    refused = httpx.post(url, json=sneaky, headers=AUTH)
    assert refused.status_code == 400 and "generationConfig.base_url" in refused.text
    redirected = httpx.post(url, json=body, headers={**AUTH, "X-Base-URL": "http://e"})
    assert redirected.status_code == 400
    assert len(fake_gemini.requests) == before + 1  # only the -400 call reached the provider


def test_client_disconnect_mid_stream_is_recorded(native_gw: Gateway) -> None:
    """SPEC §6: a client that leaves cancels the upstream and still gets a usage record."""
    url = native_gw.url + "/gemini/v1beta/models/gemini-2.0-flash-slow:streamGenerateContent"
    body = {"contents": [{"parts": [{"text": "count slowly"}]}]}
    tagged = rid("disconnect")
    with httpx.stream(
        "POST", url, params={"alt": "sse"}, json=body, headers={**AUTH, **tagged}
    ) as r:
        assert r.status_code == 200 and float(r.headers["x-sluice-overhead-ms"]) >= 0
        next(r.iter_raw())  # the first event arrives, then the client leaves
    rec = _audit_for(native_gw, tagged)
    assert rec["status"] == 499 and rec["error_code"] == "CLIENT_DISCONNECTED"
    assert rec["stream"] is True and rec["latency_ms"] < 3000  # well before the 4 s stream ends


def test_anthropic_sdk_through_anthropic_prefix(
    native_gw: Gateway, mini_anthropic: MiniAnthropic
) -> None:
    import anthropic

    client = anthropic.Anthropic(
        api_key=TOKEN, base_url=native_gw.url + "/anthropic", max_retries=0
    )
    tagged = rid("anthropic")
    r = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=tagged,
    )
    assert r.content[0].text == "Hello from the mini anthropic."  # type: ignore[union-attr]
    seen = mini_anthropic.requests[-1]["headers"]
    assert seen["x-api-key"] == "sk-ant-fake-0001" and TOKEN not in json.dumps(seen)
    rec = _audit_for(native_gw, tagged)
    assert rec["path"] == "/anthropic/v1/messages"
    assert rec["prompt_tokens"] == 9 and rec["completion_tokens"] == 6
