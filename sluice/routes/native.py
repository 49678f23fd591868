"""Native pass-through (SPEC §4, seed 003): `/{prefix}/{path}` → that provider, its own format.

The body and the answer pass unchanged (a stream is relayed chunk by chunk as it arrives);
the gateway credential is swapped for the provider key (or the caller's `X-Provider-Key`
under BYOK); only allowlisted request headers are forwarded (SPEC §6); usage is read with
the adapter's `native_usage` / `native_stream_usage` and recorded like any routed request.

A prefix names a provider: the provider of that name, else the first one whose adapter
declares that `native_prefix` (or is of that kind), so `/openai/` reaches a provider of kind
openai called anything, while `/openrouter/` needs a provider named openrouter.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from sluice import errors, schema, sse, tokenizer
from sluice.asgi import WATCH_AFTER_S, ClientGone, DisconnectWatch, Request
from sluice.config import Price
from sluice.errors import GatewayError
from sluice.providers.base import Adapter, UpstreamCall, Usage
from sluice.routes import Route
from sluice.routing import Target
from sluice.upstream import Opened
from sluice.usage import UsageRecord, new_record

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.auth import Principal
    from sluice.limits import Ticket

PREFIXES = ("openai", "anthropic", "gemini", "cohere", "jina", "openrouter", "workers-ai")

# Request headers a provider may see (SPEC §6); everything else — the gateway credential,
# cookies, hop-by-hop and unknown headers — stays here.
FORWARDED = frozenset(
    {
        "content-type",
        "accept",
        "anthropic-version",
        "anthropic-beta",
        "openai-organization",
        "openai-project",
        "openai-beta",
        "x-goog-api-client",
        "x-client-name",  # Cohere's SDK
        "x-title",  # OpenRouter's attribution headers
        "http-referer",
    }
)
# Query parameters that carry credentials (ours, or Gemini's `key`) are never forwarded.
_SECRET_QUERY = frozenset({"key", "auth_token"})
_GEMINI_MODEL = re.compile(r"/models/([^/:]+)")


def provider_for(gw: Gateway, prefix: str) -> str:
    """The configured provider a native prefix reaches, or 404."""
    if prefix in gw.adapters:
        return prefix
    for name, adapter in gw.adapters.items():
        if adapter.native_prefix == prefix or adapter.kind == prefix:
            return name
    raise GatewayError("NOT_FOUND", f"no provider is configured for /{prefix}/")


def model_of(adapter: Adapter, path: str, body: bytes) -> str | None:
    """The model a native request names: in Gemini's or Workers AI's path, else the body."""
    if adapter.kind == "workers_ai":
        return path.lstrip("/") or None
    found = _GEMINI_MODEL.search(path) if adapter.kind == "gemini" else None
    if found:
        return found.group(1)
    if body[:1] == b"{":
        try:
            model = orjson.loads(body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return model if isinstance(model, str) else None
    return None


def _is_stream(req: Request, body: bytes) -> bool:
    return req.query.get("alt") == "sse" or b'"stream":true' in body.replace(b" ", b"")


def build_call(adapter: Adapter, req: Request, rest: str, body: bytes, key: str) -> UpstreamCall:
    """The upstream request: the client's path, body and allowlisted headers, our key."""
    # Allowlisted caller headers win over defaults (a client's anthropic-version), and can
    # never replace the key: no credential header is on the allowlist.
    headers = {**adapter.config.headers, **adapter.auth_headers(key)}
    headers.update((k, v) for k, v in req.headers.items() if k in FORWARDED)
    query = {k: v for k, v in req.query.items() if k not in _SECRET_QUERY}
    path = adapter.native_path(rest)
    return UpstreamCall(req.method, path, headers, body or None, _is_stream(req, body), query)


async def native(gw: Gateway, req: Request) -> None:
    """ANY /{prefix}/{path}: forward to the provider with its own wire format."""
    prefix, _, rest = req.path[1:].partition("/")
    name = provider_for(gw, prefix)
    adapter = gw.adapters[name]
    body = await req.body(gw.settings.server.max_request_bytes)
    schema.refuse_upstream_fields(body)
    rec = req.usage = new_record(req.request_id, req.method, req.path)  # recorded here, once
    rec.provider = name
    current = asyncio.current_task()
    watch = DisconnectWatch(current, req.receive, WATCH_AFTER_S)
    ticket: Ticket | None = None
    try:
        call, key, principal = await _prepare(gw, req, adapter, "/" + rest, body, rec)
        ticket = await gw.traffic.admit_native(req, principal, name, rec.model, body)  # limits
        await _serve(gw, req, adapter, call, key, body, rec)
    except GatewayError as exc:
        rec.status, rec.error_code = exc.status, exc.code
        raise
    except (asyncio.CancelledError, ClientGone):
        if not watch.gone or current is None:
            raise
        current.uncancel()  # the client left: finish the accounting (SPEC §6)
        rec.status, rec.error_code = 499, "CLIENT_DISCONNECTED"
    finally:
        watch.stop()
        if ticket is not None:
            ticket.settle(rec)
        rec.latency_ms = (time.perf_counter() - req.started) * 1000
        gw.usage.record(rec)


async def _prepare(
    gw: Gateway, req: Request, adapter: Adapter, rest: str, body: bytes, rec: UsageRecord
) -> tuple[UpstreamCall, str, Principal]:
    """Authenticate, check the model, pick the key: the upstream call, that key, the caller."""
    principal = await gw.auth.authenticate(req)
    rec.set_caller(principal)
    model = model_of(adapter, rest, body)
    rec.model = rec.upstream_model = model
    if model:
        principal.check_model(model)
    byok = req.headers.get("x-provider-key") if gw.settings.auth.byok else None
    key = byok or adapter.config.api_key
    if not key or not adapter.credentials_complete(adapter.config):
        raise GatewayError("PROVIDER_UNAVAILABLE", f"provider {rec.provider!r} has no credentials")
    call = build_call(adapter, req, rest, body, key)
    rec.stream = call.stream
    return call, key, principal


async def _serve(
    gw: Gateway,
    req: Request,
    adapter: Adapter,
    call: UpstreamCall,
    key: str,
    body: bytes,
    rec: UsageRecord,
) -> None:
    assert rec.provider is not None
    deadline = time.monotonic() + gw.settings.server.upstream_timeout_s
    meta = {"team": rec.team, "key_id": rec.key_id, "user": rec.user, "session": rec.session}
    upstream_started = time.perf_counter()
    opened = await gw.upstream.open(
        rec.provider, adapter, call, deadline, (key, adapter.config.api_key or ""), meta
    )
    rec.attempts += opened.attempts
    req.add_header("x-sluice-provider", rec.provider)
    price = gw.prices.lookup(rec.model or "", Target(rec.provider, rec.model or ""))
    ctype = opened.header("content-type", "application/json")
    if "text/event-stream" in ctype:
        rec.stream = True
        _overhead(req, rec, time.perf_counter() - upstream_started)
        await _relay(req, adapter, opened, ctype, rec, price)
        return
    data = await opened.read()
    _overhead(req, rec, time.perf_counter() - upstream_started)
    rec.ttfb_ms = (time.perf_counter() - req.started) * 1000
    rec.set_usage(adapter.native_usage(data) or _estimate(body, len(data)), price)
    await req.respond(opened.status, data, [(b"content-type", ctype.encode("latin-1"))])


def _overhead(req: Request, rec: UsageRecord, upstream_s: float) -> None:
    """X-Sluice-Overhead-Ms (SPEC §5): the time the gateway added, the upstream's excluded."""
    rec.overhead_ms = (time.perf_counter() - req.started - upstream_s) * 1000
    req.add_header("x-sluice-overhead-ms", f"{rec.overhead_ms:.3f}")


async def _relay(
    req: Request,
    adapter: Adapter,
    opened: Opened,
    ctype: str,
    rec: UsageRecord,
    price: Price | None,
) -> None:
    """Relay a stream as it arrives while reading usage from its events; a break after the
    first byte ends it with one error event (SPEC §6)."""
    acc = Usage()
    sent = 0

    async def tee() -> AsyncIterator[bytes]:
        nonlocal sent
        async for chunk in opened.chunks():
            if not sent:
                rec.ttfb_ms = (time.perf_counter() - req.started) * 1000
            sent += len(chunk)
            await req.write(chunk)
            yield chunk

    await req.start_stream(opened.status, [(b"content-type", ctype.encode("latin-1"))])
    try:
        async for group in sse.blocks(tee()):
            for block in group:
                ev = sse.parse_block(block)
                if ev is not None and ev.data[:1] == b"{":
                    adapter.native_stream_usage(ev.data, acc)
        await req.end()
    except GatewayError as exc:
        rec.status, rec.error_code = exc.status, exc.code
        await req.write(errors.sse_error_event(exc))
        await req.end()
    finally:
        usage = acc if acc.prompt_tokens or acc.completion_tokens else None
        rec.set_usage(usage or _estimate(b"", sent), price)


def _estimate(body: bytes, answer_bytes: int) -> Usage:
    """A flagged estimate when the provider's answer carried no usage."""
    return Usage(
        prompt_tokens=tokenizer.estimate_chars(len(body)),
        completion_tokens=tokenizer.estimate_chars(answer_bytes),
        estimated=True,
    )


_ANY = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTES = [
    Route(
        _ANY,
        f"/{p}/",
        native,
        shape="anthropic" if p == "anthropic" else "openai",
        prefix=True,
        routed=True,
    )
    for p in PREFIXES
]
