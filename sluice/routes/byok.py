"""Seed 004's bring-your-own-key proxy: `POST /api/proxy/external`, `/services`, `/health`.

Exactly six services are reachable. Each one's upstream base URL comes from the configured
provider of its kind (its `base_url` override) or the kind's default, never from the
request. The caller's `api_key` lives only in this request: it is sent upstream and then
dropped, never stored, logged, cached or echoed (upstream echoes are scrubbed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from sluice import schema
from sluice.config import ProviderConfig
from sluice.errors import GatewayError, validation
from sluice.providers import registry
from sluice.providers.base import Adapter, UpstreamCall
from sluice.providers.openai import usage_from
from sluice.redact import MASK
from sluice.routes import Route
from sluice.usage import new_record

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request


@dataclass(frozen=True, slots=True)
class Service:
    """One BYOK target: the provider kind whose base URL it uses, and the path under it."""

    kind: str
    path: str
    default_base_url: str  # SPEC §2's default, used until an adapter of the kind is registered
    anthropic_auth: bool = False  # x-api-key + anthropic-version instead of a Bearer header


SERVICES: dict[str, Service] = {
    "openai_chat": Service("openai", "/chat/completions", "https://api.openai.com/v1"),
    "openai_embedding": Service("openai", "/embeddings", "https://api.openai.com/v1"),
    # https://docs.anthropic.com/en/api/messages
    "anthropic_claude": Service("anthropic", "/v1/messages", "https://api.anthropic.com", True),
    # https://jina.ai/embeddings/ (POST https://api.jina.ai/v1/embeddings)
    "jina_embedding": Service("jina", "/embeddings", "https://api.jina.ai/v1"),
    # https://docs.cohere.com/v1/reference/generate and /v1/reference/embed
    "cohere_generate": Service("cohere", "/v1/generate", "https://api.cohere.com"),
    "cohere_embed": Service("cohere", "/v1/embed", "https://api.cohere.com"),
}


class _Relay(Adapter):
    """A pass-through target for `sluice.upstream`: no translation, the caller's key."""

    kind = "byok"
    default_base_url = ""


def base_url(gw: Gateway, svc: Service) -> str:
    """The provider named like the kind, else the only provider of the kind, else default."""
    same = {n: p for n, p in gw.settings.providers.items() if p.kind == svc.kind}
    chosen = same.get(svc.kind) or (next(iter(same.values())) if len(same) == 1 else None)
    if chosen is not None and chosen.base_url:
        return chosen.base_url.rstrip("/")
    if svc.kind in registry.kinds():
        return registry.get(svc.kind).default_base_url.rstrip("/")
    return svc.default_base_url


def _envelope(req: Request, data: Any) -> dict[str, Any]:
    return {"success": True, "data": data, "requestId": req.request_id}


def _parse(raw: bytes) -> tuple[str, Service, str, dict[str, Any]]:
    """Seed 004's request checks, in its order: shape, service, key, payload."""
    body = schema.parse_object(raw)
    name = body.get("target_service")
    if not isinstance(name, str) or name not in SERVICES:
        raise validation("target_service", "must be one of " + ", ".join(SERVICES))
    key = body.get("api_key")
    if key is None or key == "":
        raise GatewayError("MISSING_API_KEY", "api_key is required", param="api_key")
    if not isinstance(key, str) or not key.isascii() or not key.isprintable() or " " in key:
        raise validation("api_key", "must be a single-line ASCII string")
    payload = body.get("payload")
    if not isinstance(payload, dict):
        raise validation("payload", "must be an object")
    if payload.get("stream"):
        raise validation("payload.stream", "not supported here; use X-Provider-Key on /v1")
    return name, SERVICES[name], key, payload


def _call(svc: Service, key: str, payload: dict[str, Any]) -> UpstreamCall:
    headers = {"Content-Type": "application/json"}
    if svc.anthropic_auth:
        headers.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
    else:
        headers["Authorization"] = f"Bearer {key}"
    return UpstreamCall("POST", svc.path, headers, orjson.dumps(payload))


async def external(gw: Gateway, req: Request) -> None:
    """POST /api/proxy/external: {"target_service", "api_key", "payload"} → seed 004 shape."""
    rec = new_record(req.request_id, req.method, req.path)
    try:
        principal = await gw.auth.authenticate(req)
        rec.set_caller(principal)
        if not gw.settings.auth.byok:
            raise GatewayError("FORBIDDEN", "bring-your-own-key is disabled on this gateway")
        name, svc, key, payload = _parse(await req.body(gw.settings.server.max_request_bytes))
        rec.provider = name
        model = payload.get("model")
        if isinstance(model, str):
            rec.model = rec.upstream_model = model
            principal.check_model(model)
        relay = _Relay(ProviderConfig(kind=svc.kind, base_url=base_url(gw, svc), max_retries=0))
        deadline = time.monotonic() + gw.settings.server.upstream_timeout_s
        opened = await gw.upstream.open(
            f"byok:{svc.kind}", relay, _call(svc, key, payload), deadline, (key,)
        )
        rec.attempts = opened.attempts
        data = await opened.read()
        if key.encode() in data:  # an upstream that echoes the key must not leak it
            data = data.replace(key.encode(), MASK.encode())
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise GatewayError("EXTERNAL_SERVICE_ERROR", f"{name} answered non-JSON") from None
        _account(rec, obj)
        await req.json(200, _envelope(req, obj))
    except GatewayError as exc:
        rec.status, rec.error_code = exc.status, exc.code
        raise
    finally:
        rec.latency_ms = (time.perf_counter() - req.started) * 1000
        gw.usage.record(rec)


def _account(rec: Any, obj: Any) -> None:
    """Tokens from whichever usage field the service reports (OpenAI, Anthropic, Jina,
    Cohere's meta.billed_units)."""
    if not isinstance(obj, dict):
        return
    meta = obj.get("meta")
    raw = obj.get("usage") or (meta.get("billed_units") if isinstance(meta, dict) else None)
    usage = usage_from(raw)
    if usage is not None:
        rec.set_usage(usage, None)


async def services(gw: Gateway, req: Request) -> None:
    """GET /api/proxy/services."""
    names = list(SERVICES)
    await req.json(200, _envelope(req, {"services": names, "count": len(names)}))


async def health(gw: Gateway, req: Request) -> None:
    """GET /api/proxy/health."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    await req.json(
        200, _envelope(req, {"status": "healthy", "timestamp": now, "services": len(SERVICES)})
    )


ROUTES = [
    Route(("POST",), "/api/proxy/external", external, shape="proxy", routed=True),
    Route(("GET",), "/api/proxy/services", services, shape="proxy"),
    Route(("GET",), "/api/proxy/health", health, shape="proxy"),
]
