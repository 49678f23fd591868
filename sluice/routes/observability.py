"""Observability endpoints: Prometheus `/metrics` and the admin usage query."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice import usage_query
from sluice.errors import GatewayError, validation
from sluice.metrics import CONTENT_TYPE
from sluice.routes import Route

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request


async def metrics(gw: Gateway, req: Request) -> None:
    """GET /metrics in Prometheus text format (no per-request labels, no keys)."""
    await req.respond(200, gw.usage.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())])


async def admin_usage(gw: Gateway, req: Request) -> None:
    """GET /admin/usage?group_by=model|provider|team|key|user|day&from=&to= (admin key)."""
    if not gw.auth.is_admin(req):
        raise GatewayError("UNAUTHORIZED", "Invalid or missing credentials")
    q = req.query
    group_by = q.get("group_by") or "model"
    if group_by not in usage_query.GROUPS:
        raise validation("group_by", f"one of {', '.join(usage_query.GROUPS)}")
    try:
        since = usage_query.parse_time(q.get("from"), "from")
        until = usage_query.parse_time(q.get("to"), "to", end=True)
    except usage_query.QueryError as exc:
        raise validation(str(exc).split(":", 1)[0], str(exc).split(": ", 1)[1]) from None
    try:
        result = await usage_query.summary(gw.store.engine, group_by, since, until)
    except Exception:
        raise GatewayError("SERVICE_UNAVAILABLE", "usage storage is unreachable") from None
    await req.json(200, result)


ROUTES = [
    Route(("GET",), "/metrics", metrics, shape="plain"),
    Route(("GET",), "/admin/usage", admin_usage, shape="plain"),
]
