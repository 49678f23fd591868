"""OpenAI-compatible endpoints: chat, completions, embeddings, models, and seed 001's helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice import schema, tokenizer
from sluice.errors import GatewayError, validation
from sluice.pipeline import chat_operation, embeddings_operation
from sluice.routes import Route

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request


async def chat_completions(gw: Gateway, req: Request) -> None:
    """POST /v1/chat/completions (and the seeds' aliases)."""
    chat = schema.parse_chat(await req.body(gw.settings.server.max_request_bytes))
    await gw.pipeline.run(req, chat_operation(chat))


async def completions(gw: Gateway, req: Request) -> None:
    """POST /v1/completions: legacy text completions."""
    chat = schema.parse_completion(await req.body(gw.settings.server.max_request_bytes))
    await gw.pipeline.run(req, chat_operation(chat))


async def embeddings(gw: Gateway, req: Request) -> None:
    """POST /v1/embeddings."""
    emb = schema.parse_embeddings(await req.body(gw.settings.server.max_request_bytes))
    await gw.pipeline.run(req, embeddings_operation(emb))


def _listed_models(gw: Gateway) -> list[dict[str, Any]]:
    """Models a client can name exactly: aliases and named entries, plus the default."""
    out: dict[str, dict[str, Any]] = {}
    for m in gw.settings.models:
        if m.name is None:
            continue
        plan = gw.router.plan(m.name)
        first = plan.targets[0]
        out[m.name] = {
            "id": m.name,
            "provider": first.provider,
            "available": any(gw.router.available(t.provider) for t in plan.targets),
            "context_window": m.context_window,
            "price": gw.prices.describe(m.name, first),
        }
    default = gw.settings.default_model
    if default and default not in out:
        try:
            plan = gw.router.plan(default)
        except GatewayError:
            return list(out.values())
        first = plan.targets[0]
        out[default] = {
            "id": default,
            "provider": first.provider,
            "available": gw.router.available(first.provider),
            "context_window": plan.entry.context_window if plan.entry else None,
            "price": gw.prices.describe(default, first),
        }
    return list(out.values())


async def models(gw: Gateway, req: Request) -> None:
    """GET /v1/models in OpenAI's list format."""
    await gw.auth.authenticate(req)
    data = [
        {"id": m["id"], "object": "model", "created": 0, "owned_by": m["provider"]}
        for m in _listed_models(gw)
    ]
    await req.json(200, {"object": "list", "data": data})


async def model_options(gw: Gateway, req: Request) -> None:
    """GET /v1/model-options (seed 001)."""
    await req.json(200, {"models": _listed_models(gw)})


async def route_check(gw: Gateway, req: Request) -> None:
    """GET /v1/route-check?model=M: where M routes and why; calls no upstream."""
    model = req.query.get("model") or None
    provider = req.query.get("provider") or None
    plan = gw.router.plan(model, provider)
    targets = gw.router.order(plan) if plan.strategy != "weighted" else list(plan.targets)
    first, rest = targets[0], targets[1:]
    await req.json(
        200,
        {
            "model": plan.model,
            "provider": first.provider,
            "upstream_model": first.model,
            "rule": plan.rule,
            "strategy": plan.strategy,
            "available": gw.router.available(first.provider),
            "price": gw.prices.describe(plan.model, first),
            "fallbacks": [
                {
                    "provider": t.provider,
                    "model": t.model,
                    "available": gw.router.available(t.provider),
                }
                for t in rest
            ],
        },
    )


async def tokenize(gw: Gateway, req: Request) -> None:
    """POST /v1/tokenize: {"input" | "messages", "model"} → {"model", "tokens", "method"}."""
    await gw.auth.authenticate(req)
    body = schema.parse_object(await req.body(gw.settings.server.max_request_bytes))
    model = body.get("model") or gw.settings.default_model or ""
    if not isinstance(model, str):
        raise validation("model", "must be a string")
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise validation("messages", "must be an array")
        tokens, method = tokenizer.count_messages(messages, model)
    elif isinstance(body.get("input"), str):
        tokens, method = tokenizer.count(body["input"], model)
    else:
        raise validation("input", "give `input` (a string) or `messages` (an array)")
    await req.json(200, {"model": model, "tokens": tokens, "method": method})


_CHAT = ("POST",)
ROUTES = [
    Route(_CHAT, "/v1/chat/completions", chat_completions, routed=True),
    Route(_CHAT, "/chat/completions", chat_completions, routed=True),
    Route(_CHAT, "/api/chat/completions", chat_completions, routed=True),
    Route(_CHAT, "/v1/completions", completions, routed=True),
    Route(_CHAT, "/v1/embeddings", embeddings, routed=True),
    Route(("GET",), "/v1/models", models),
    Route(("GET",), "/v1/model-options", model_options),
    Route(("GET",), "/v1/route-check", route_check),
    Route(("POST",), "/v1/tokenize", tokenize),
]
