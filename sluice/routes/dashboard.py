"""The dashboard: the static page at /ui and the admin read endpoints it draws from.

- GET /ui, /ui/{file}: the page (no credentials; it asks for the admin key itself).
- GET /admin/timeseries: requests, tokens, spend and p50/p95 latency per hour or day.
- GET /admin/requests: the most recent usage rows, accounting fields only.
- PATCH /admin/keys/{id}: a key's allowed models and limits (cached copies dropped at once,
  on every instance).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from sluice.auth import UNAUTHORIZED
from sluice.dashboard import BUCKETS, BUDGET_PERIODS, LIMIT_FIELDS, Filters, default_range
from sluice.errors import GatewayError, validation
from sluice.routes import Route

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import RawHeaders, Request

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_FILE = re.compile(r"^[a-z0-9_-]+\.(html|js|css|svg)$")
# The page loads nothing from elsewhere and cannot be framed (clickjacking on key revocation).
_PAGE_HEADERS: RawHeaders = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]
_ADMIN_HEADERS: RawHeaders = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]


async def ui(gw: Gateway, req: Request) -> None:
    """GET /ui and /ui/{file}: the dashboard's static files, shipped inside the package."""
    name = req.path.removeprefix("/ui").lstrip("/") or "index.html"
    if not _FILE.match(name):
        raise GatewayError("NOT_FOUND", f"no endpoint at {req.path}")
    f = resources.files("sluice").joinpath("ui", name)
    if not f.is_file():
        raise GatewayError("NOT_FOUND", f"no endpoint at {req.path}")
    ctype = _TYPES[name[name.rindex(".") :]]
    await req.respond(200, f.read_bytes(), [(b"content-type", ctype), *_PAGE_HEADERS])


def _require_admin(gw: Gateway, req: Request) -> None:
    if not gw.auth.is_admin(req):
        raise GatewayError("UNAUTHORIZED", UNAUTHORIZED)


async def _answer(req: Request, obj: Any) -> None:
    await req.respond(200, orjson.dumps(obj), _ADMIN_HEADERS)


def _time(req: Request, name: str) -> float | None:
    """A time parameter: epoch seconds or ISO 8601 (naive means UTC)."""
    raw = req.query.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise validation(name, "epoch seconds or an ISO 8601 time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        value = dt.timestamp()
    if not math.isfinite(value) or value < 0:
        raise validation(name, "must be a time after 1970")
    return value


def _int(req: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation(name, "must be an integer") from None
    if not low <= value <= high:
        raise validation(name, f"must be between {low} and {high}")
    return value


def _text(req: Request, name: str) -> str | None:
    value = req.query.get(name)
    return value if value else None


async def timeseries(gw: Gateway, req: Request) -> None:
    """GET /admin/timeseries?bucket=hour|day&from=&to=&model=&provider=&team=&key=&top="""
    _require_admin(gw, req)
    bucket = req.query.get("bucket") or "hour"
    if bucket not in BUCKETS:
        raise validation("bucket", "hour or day")
    start, end = default_range(bucket)
    given_start, given_end = _time(req, "from"), _time(req, "to")
    start = start if given_start is None else given_start
    end = end if given_end is None else given_end
    if end <= start:
        raise validation("to", "must be after from")
    f = Filters(
        start=start,
        end=end,
        model=_text(req, "model"),
        provider=_text(req, "provider"),
        team=_text(req, "team"),
        key=_text(req, "key"),
    )
    offset = _int(req, "tz_offset_min", 0, -14 * 60, 14 * 60) or 0
    top_n = _int(req, "top", 10, 1, 100) or 10
    await _answer(req, await gw.dashboard.timeseries(f, bucket, offset * 60, top_n))


async def requests(gw: Gateway, req: Request) -> None:
    """GET /admin/requests?limit=&status=&team=&since_id=&before_id= (newest first)."""
    _require_admin(gw, req)
    limit = _int(req, "limit", 50, 1, 500) or 50
    rows = await gw.dashboard.recent(
        limit,
        status=_text(req, "status"),
        team=_text(req, "team"),
        since_id=_int(req, "since_id", None, 0, 2**62),
        before_id=_int(req, "before_id", None, 0, 2**62),
    )
    since = _int(req, "since_id", 0, 0, 2**62) or 0
    last_id = max([since, *(r["id"] for r in rows)])
    await _answer(req, {"data": rows, "last_id": last_id, "now": time.time()})


def _key_changes(body: bytes) -> dict[str, Any]:
    """Validate a PATCH body: `allowedModels` (globs or null) and `limits` (numbers or null;
    `budget_period` one of day, week, month, total)."""
    try:
        obj = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise validation("body", "must be a JSON object") from None
    if not isinstance(obj, dict):
        raise validation("body", "must be a JSON object")
    changes: dict[str, Any] = {}
    for name in obj:
        if name not in ("allowedModels", "allowed_models", "limits"):
            raise validation(name, "unknown field (allowedModels, limits)")
    models = obj.get("allowedModels", obj.get("allowed_models", ...))
    if models is not ...:
        if models is not None and not (
            isinstance(models, list)
            and all(isinstance(m, str) and 0 < len(m) <= 256 for m in models)
            and len(models) <= 200
        ):
            raise validation("allowedModels", "a list of model names or globs, or null")
        changes["allowed_models"] = models
    if "limits" in obj:
        limits = obj["limits"]
        if limits is not None:
            if not isinstance(limits, dict):
                raise validation("limits", "an object or null")
            for k, v in limits.items():
                if k == "budget_period":
                    if v is not None and v not in BUDGET_PERIODS:
                        raise validation(f"limits.{k}", f"one of {', '.join(BUDGET_PERIODS)}")
                    continue
                if k not in LIMIT_FIELDS:
                    raise validation(f"limits.{k}", f"unknown limit ({', '.join(LIMIT_FIELDS)})")
                ok = v is None or (
                    isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1e12
                )
                if not ok:
                    raise validation(f"limits.{k}", "a non-negative number or null")
            limits = {k: v for k, v in limits.items() if v is not None} or None
        changes["limits"] = limits
    return changes


async def patch_key(gw: Gateway, req: Request) -> None:
    """PATCH /admin/keys/{id}: set allowed models and limits."""
    _require_admin(gw, req)
    key_id = req.path.removeprefix("/admin/keys/")
    if not key_id or "/" in key_id:
        raise GatewayError("NOT_FOUND", f"no endpoint at {req.path}")
    changes = _key_changes(await req.body(64 * 1024))
    key = await gw.dashboard.update_key(key_id, changes)
    if key is None:
        raise GatewayError("NOT_FOUND", "no such key", param="id")
    if changes and gw.auth.keys is not None:
        # Cached copies of the key carry the old limits: drop them here, and on every other
        # instance through Redis, so the next request reads the new ones.
        rec = await gw.auth.keys.store.by_id(key_id)
        if rec is not None:
            await gw.auth.keys.announce("update", rec)
    await _answer(req, key)


ROUTES = [
    Route(("GET",), "/ui", ui, shape="plain"),
    Route(("GET",), "/ui/", ui, shape="plain", prefix=True),
    Route(("GET",), "/admin/timeseries", timeseries, shape="plain"),
    Route(("GET",), "/admin/requests", requests, shape="plain"),
    Route(("PATCH",), "/admin/keys/", patch_key, shape="plain", prefix=True),
]
