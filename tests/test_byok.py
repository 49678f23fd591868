"""Seed 004's BYOK proxy end to end: shapes, validation, upstream errors, and a canary key
that must appear nowhere but in the request to the upstream."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from sluice.providers import registry
from sluice.routes.byok import SERVICES
from tests.conftest import Gateway, free_port, launch_gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.fakes.server import FakeServer

SIX = [
    "openai_chat",
    "openai_embedding",
    "anthropic_claude",
    "jina_embedding",
    "cohere_generate",
    "cohere_embed",
]


class EchoUpstream(FakeServer):
    """Answers any POST with a JSON body naming the path and a usage block; records headers."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        await self.record(request)
        answer = {"path": request.path, "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
        return web.json_response(answer)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    e = EchoUpstream().start()
    yield e
    e.stop()


def proxy(gw: Gateway, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/api/proxy/external", json=body, headers=headers, timeout=30)


def canary() -> str:
    return f"sk-canary-byok-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    g = launch_gateway(tmp_path_factory.mktemp("byok"), openai_config(fake_openai))
    yield g
    g.stop()


def test_exactly_the_six_services_in_seed_shapes(gw: Gateway) -> None:
    assert list(SERVICES) == SIX
    r = httpx.get(gw.url + "/api/proxy/services").json()
    assert r["success"] is True and r["requestId"].startswith("req_")
    assert r["data"] == {"services": SIX, "count": 6}
    h = httpx.get(gw.url + "/api/proxy/health").json()
    assert h["success"] is True and h["data"]["status"] == "healthy"
    assert h["data"]["services"] == 6 and h["data"]["timestamp"].endswith("Z")


def test_openai_chat_with_the_callers_key(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    key = canary()
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = proxy(gw, {"target_service": "openai_chat", "api_key": key, "payload": payload})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["requestId"] == r.headers["x-request-id"]
    assert body["data"]["choices"][0]["message"]["content"]
    sent = fake_openai.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {key}"  # not the gateway's own key
    audit = gw.wait_audit(1)[-1]
    assert audit["path"] == "/api/proxy/external" and audit["prompt_tokens"] > 0
    assert key not in r.text + gw.stdout() + gw.stderr()


def test_openai_embedding(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    payload = {"model": "text-embedding-3-small", "input": ["a", "b"]}
    r = proxy(gw, {"target_service": "openai_embedding", "api_key": canary(), "payload": payload})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]["data"]) == 2
    assert fake_openai.requests[-1]["path"] == "/v1/embeddings"


INVALID = {
    "unknown_service": (
        {"target_service": "workers_ai", "api_key": "k1234", "payload": {}},
        "VALIDATION_ERROR",
    ),
    "path_in_service": (
        {"target_service": "openai_chat/../models", "api_key": "k1234", "payload": {}},
        "VALIDATION_ERROR",
    ),
    "no_service": ({"api_key": "k1234", "payload": {}}, "VALIDATION_ERROR"),
    "no_key": ({"target_service": "openai_chat", "payload": {}}, "MISSING_API_KEY"),
    "empty_key": (
        {"target_service": "openai_chat", "api_key": "", "payload": {}},
        "MISSING_API_KEY",
    ),
    "key_with_newline": (
        {"target_service": "openai_chat", "api_key": "a\r\nX: y", "payload": {}},
        "VALIDATION_ERROR",
    ),
    "payload_not_object": (
        {"target_service": "openai_chat", "api_key": "k1234", "payload": [1]},
        "VALIDATION_ERROR",
    ),
    "base_url_in_payload": (
        {
            "target_service": "openai_chat",
            "api_key": "k1234",
            "payload": {"model": "gpt-4o", "base_url": "http://evil"},
        },
        "VALIDATION_ERROR",
    ),
    "api_base_nested": (
        {
            "target_service": "openai_chat",
            "api_key": "k1234",
            "payload": {"x": [{"api_base": "http://evil"}]},
        },
        "VALIDATION_ERROR",
    ),
    "not_json": (b"{nope", "VALIDATION_ERROR"),
}


@pytest.mark.parametrize("body,code", INVALID.values(), ids=list(INVALID))
def test_invalid_requests_get_seed_004_errors(
    gw: Gateway, fake_openai: FakeOpenAI, body: Any, code: str
) -> None:
    before = len(fake_openai.requests)
    if isinstance(body, bytes):
        r = httpx.post(gw.url + "/api/proxy/external", content=body, timeout=30)
    else:
        r = proxy(gw, body)
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["success"] is False and out["error"]["code"] == code
    assert set(out) == {"success", "error", "requestId"}
    assert len(fake_openai.requests) == before  # nothing reached an upstream


def test_upstream_choosing_header_is_refused(gw: Gateway) -> None:
    body = {"target_service": "openai_chat", "api_key": "k1234", "payload": {"model": "gpt-4o"}}
    r = proxy(gw, body, **{"X-Base-URL": "http://evil.test"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"


def test_upstream_error_keeps_status_and_never_echoes_the_key(gw: Gateway) -> None:
    key = canary()
    bad = {"model": "gpt-x-400", "messages": [{"role": "user", "content": "hi"}]}
    r = proxy(gw, {"target_service": "openai_chat", "api_key": key, "payload": bad})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "EXTERNAL_SERVICE_ERROR"
    assert "foo" in r.json()["error"]["message"]  # the upstream's message is kept
    echo = {"model": "gpt-x-echokey", "messages": [{"role": "user", "content": "hi"}]}
    r2 = proxy(gw, {"target_service": "openai_chat", "api_key": key, "payload": echo})
    assert r2.status_code == 401
    assert r2.json()["error"]["code"] == "EXTERNAL_SERVICE_ERROR"
    assert "Incorrect API key" in r2.json()["error"]["message"]
    gw.wait_audit(2)
    db = b"".join(p.read_bytes() for p in gw.config_path.parent.glob("*.db*"))
    for text in (r.text, r2.text, gw.stdout(), gw.stderr(), db.decode("latin-1")):
        assert key not in text
        assert key[3:] not in text  # not even without its prefix


def test_unreachable_upstream_is_network_error(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI
) -> None:
    cfg = openai_config(fake_openai)
    cfg["providers"]["openai"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(cfg)
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    r = proxy(gw, {"target_service": "openai_chat", "api_key": canary(), "payload": payload})
    assert r.status_code == 502 and r.json()["error"]["code"] == "NETWORK_ERROR"


def test_gateway_auth_and_entitlements_still_apply(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI
) -> None:
    gw = start_gateway(openai_config(fake_openai, auth={"tokens": ["gw-token-123456"]}))
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    body = {"target_service": "openai_chat", "api_key": canary(), "payload": payload}
    denied = proxy(gw, body)
    assert denied.status_code == 401 and denied.json()["success"] is False
    assert proxy(gw, body, **{"X-AUTH-TOKEN": "gw-token-123456"}).status_code == 200


def test_byok_disabled_is_forbidden(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI
) -> None:
    gw = start_gateway(openai_config(fake_openai, auth={"byok": False}))
    body = {"target_service": "openai_chat", "api_key": canary(), "payload": {"model": "gpt-4o"}}
    r = proxy(gw, body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"


# Every service whose provider kind has an adapter registered: the base URL comes from that
# configured provider, the path and key header from the service.
REGISTERED = [s for s in SIX if SERVICES[s].kind in registry.kinds()]


@pytest.mark.parametrize("service", REGISTERED)
def test_service_goes_to_its_configured_provider(
    start_gateway: Callable[..., Gateway], echo: EchoUpstream, service: str
) -> None:
    svc = SERVICES[service]
    cfg = {
        "providers": {
            svc.kind: {
                "kind": svc.kind,
                "api_key": "operator-key-1",
                "base_url": f"http://127.0.0.1:{echo.port}/base",
            }
        }
    }
    gw = start_gateway(cfg)
    key = canary()
    r = proxy(
        gw, {"target_service": service, "api_key": key, "payload": {"model": "m-1", "input": "x"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["path"] == "/base" + svc.path
    sent = echo.requests[-1]["headers"]
    carried = sent.get("x-api-key") if svc.anthropic_auth else sent.get("Authorization")
    assert carried in (key, f"Bearer {key}")
    assert "operator-key-1" not in str(sent)
