"""Operational endpoints: health, and the liveness/readiness probes for Kubernetes."""

from __future__ import annotations

import asyncio
import os
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


async def live(gw: Gateway, req: Request) -> None:
    """GET /health/live: the process is up and its event loop answers (liveness probe); the
    pid tells which worker answered."""
    await req.json(200, {"status": "ok", "pid": os.getpid()})


async def ready(gw: Gateway, req: Request) -> None:
    """GET /health/ready: 200 when this instance should get traffic; 503 while draining or
    while a ready check (storage reachable, ...) fails (readiness probe)."""
    if gw.drain.draining:
        await req.json(503, {"status": "draining"})
        return
    reasons = [r for r in await asyncio.gather(*(c() for c in gw.ready_checks)) if r]
    if reasons:
        await req.json(503, {"status": "unavailable", "reasons": reasons})
        return
    await req.json(200, {"status": "ready"})


ROUTES = [
    Route(("GET",), "/health/live", live, shape="plain"),
    Route(("GET",), "/health/ready", ready, shape="plain"),
    Route(("GET",), "/health", health, shape="plain"),
    Route(("GET",), "/api/health", health, shape="plain"),
]
