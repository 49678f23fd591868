"""Operational endpoints: health."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice import __version__
from sluice.routes import Route

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request


async def health(gw: Gateway, req: Request) -> None:
    """GET /health: version and each provider's configured/available state."""
    providers = {
        name: {
            "kind": a.kind,
            "configured": gw.router.available(name),
            "available": gw.router.available(name),
        }
        for name, a in gw.adapters.items()
    }
    await req.json(200, {"status": "ok", "version": __version__, "providers": providers})


ROUTES = [
    Route(("GET",), "/health", health, shape="plain"),
    Route(("GET",), "/api/health", health, shape="plain"),
]
