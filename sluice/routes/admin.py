"""Team keys over HTTP: seed 003's `/tokens` API in its exact shapes, and `/admin` (keys
listed without secrets, revoke by id, teams). Every route here needs the admin key, checked
by the dispatcher on the raw request path (`is_admin_path`) and again by each handler.
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from sluice import schema
from sluice.auth import Principal
from sluice.auth.keys import KeyAuth, storage_down
from sluice.errors import GatewayError, validation
from sluice.routes import Route
from sluice.store import KEY_SHAPE, KeyRecord

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request

T = TypeVar("T")
_ADMIN_ROOTS = ("/admin", "/tokens")


def _normal(path: str) -> str:
    for _ in range(3):  # double-encoded tricks: %252F → %2F → /
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = posixpath.normpath("/" + path.replace("\\", "/")).lower()
    return "/" + path.lstrip("/")


def is_admin_path(req: Request) -> bool:
    """Whether the raw or decoded path lies under /admin or /tokens, however it is spelled."""
    raw = req.scope.get("raw_path") or req.path.encode()
    low = raw.lower()
    # Fast path for every request: nothing here could spell an admin root, encoded or not.
    if b"admin" not in low and b"tokens" not in low and b"%" not in low:
        return False
    for p in (raw.decode("latin-1").split("?", 1)[0], req.path):
        n = _normal(p)
        if any(n == r or n.startswith(r + "/") for r in _ADMIN_ROOTS):
            return True
    return False


def iso(ts: float) -> str:
    """Seed 003's timestamp form: 2025-01-09T12:00:00.000Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _keys(gw: Gateway, req: Request) -> KeyAuth:
    gw.auth.require_admin(req)
    if gw.auth.keys is None:
        raise GatewayError("NOT_FOUND", "team keys are disabled (auth.keys: false)")
    return gw.auth.keys


async def _db(op: Awaitable[T]) -> T:
    """A storage call from an admin route: unreachable storage is a 503, not a 500."""
    try:
        return await op
    except GatewayError:
        raise
    except Exception:
        raise storage_down() from None


def _seed_shape(key: str, rec: KeyRecord) -> dict[str, Any]:
    return {
        "apiKey": key,
        "teamId": rec.team_id,
        "name": rec.name,
        "createdAt": iso(rec.created_at),
    }


def _string(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise validation(name, "must be a non-empty string")
    if len(value) > limit:
        raise validation(name, f"must be at most {limit} characters")
    return value


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """Sluice's optional extras on POST /tokens: models, limits, metadata."""
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise validation("models", "must be a list of model globs")
    for name in ("limits", "metadata"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise validation(name, "must be an object")
    return {
        "allowed_models": models,
        "limits": body.get("limits"),
        "metadata": body.get("metadata"),
    }


async def create_token(gw: Gateway, req: Request) -> None:
    """POST /tokens {"teamId", "name"} → {"apiKey", "teamId", "name", "createdAt"}."""
    keys = _keys(gw, req)
    body = schema.parse_object(await req.body(gw.settings.server.max_request_bytes))
    team, name = _string(body, "teamId", 128), _string(body, "name", 256)
    key, rec = await _db(keys.store.create_key(team, name, **_options(body)))
    await keys.announce("create", rec)
    await req.json(200, _seed_shape(key, rec))


async def _active(keys: KeyAuth, key: str) -> KeyRecord:
    rec = await _db(keys.store.resolve(key)) if KEY_SHAPE.match(key) else None
    if rec is None or not rec.active:
        raise GatewayError("NOT_FOUND", "no active key matches")  # never echo the key
    return rec


async def token_subpath(gw: Gateway, req: Request) -> None:
    """GET /tokens/{apiKey} (the key's team info) · POST /tokens/{apiKey}/refresh (rotate)."""
    keys = _keys(gw, req)
    rest = req.path.removeprefix("/tokens/")
    if req.method == "GET" and "/" not in rest:
        rec = await _active(keys, rest)
        await req.json(
            200, {"teamId": rec.team_id, "name": rec.name, "createdAt": iso(rec.created_at)}
        )
        return
    key, _, action = rest.partition("/")
    if req.method != "POST" or action != "refresh":
        raise GatewayError("NOT_FOUND", "no such token endpoint")
    old = await _active(keys, key)
    new_key, new = await _db(keys.store.rotate(old))
    await keys.announce("revoke", old)
    await keys.announce("create", new)
    await req.json(200, _seed_shape(new_key, new))


async def list_keys(gw: Gateway, req: Request) -> None:
    """GET /admin/keys[?team=ID]: every key without its secret or hash."""
    keys = _keys(gw, req)
    rows = await _db(keys.store.list_keys(req.query.get("team") or None))
    await req.json(200, {"keys": [r.public() for r in rows]})


def _key_id(path: str) -> str:
    """The key id in /admin/keys/{id}; 404 for anything else."""
    key_id = path.removeprefix("/admin/keys/")
    if not key_id.startswith("key_") or "/" in key_id or len(key_id) > 64:
        raise GatewayError("NOT_FOUND", "no such key id")
    return key_id


async def rotate_key(gw: Gateway, req: Request) -> None:
    """POST /admin/keys/{id}/rotate: rotate by id (admins never hold the secret). The new key
    is shown once, in seed 003's refresh shape plus its `id`; the old one stops at once."""
    keys = _keys(gw, req)
    path, _, action = req.path.rpartition("/")
    if action != "rotate":
        raise GatewayError("NOT_FOUND", f"no endpoint at {req.path}")
    old = await _db(keys.store.by_id(_key_id(path)))
    if old is None or not old.active:
        raise GatewayError("NOT_FOUND", "no active key with this id")
    new_key, new = await _db(keys.store.rotate(old))
    await keys.announce("revoke", old)
    await keys.announce("create", new)
    await req.json(200, {**_seed_shape(new_key, new), "id": new.id})


async def revoke_key(gw: Gateway, req: Request) -> None:
    """DELETE /admin/keys/{id}: revoke by key id (idempotent)."""
    keys = _keys(gw, req)
    key_id = _key_id(req.path)
    rec = await _db(keys.store.revoke(key_id))
    if rec is None:
        raise GatewayError("NOT_FOUND", "no such key id")
    await keys.announce("revoke", rec)
    await req.json(200, {"id": rec.id, "revoked": True, "revoked_at": rec.revoked_at})


async def key_limits(gw: Gateway, req: Request) -> None:
    """GET /admin/limits?key=<id>: a key's limits (limit, remaining, reset) and budgets
    (spent, left, reset) as they stand now; peeked, nothing reserved."""
    keys = _keys(gw, req)
    key_id = req.query.get("key") or ""
    if not key_id.startswith("key_") or len(key_id) > 64:
        raise validation("key", "a key id (key_…)")
    rec = await _db(keys.store.by_id(key_id))
    if rec is None:
        raise GatewayError("NOT_FOUND", "no such key id", param="key")
    who = Principal("key", team=rec.team_id, key_id=rec.id, limits=rec.limits)
    view = await gw.traffic.describe_key(who)
    await req.json(200, {"key": rec.id, "team": rec.team_id, "active": rec.active, **view})


async def list_teams(gw: Gateway, req: Request) -> None:
    """GET /admin/teams: teams and their active key counts."""
    keys = _keys(gw, req)
    await req.json(200, {"teams": await _db(keys.store.list_teams())})


ROUTES = [
    Route(("POST",), "/tokens", create_token, shape="plain"),
    Route(("GET", "POST"), "/tokens/", token_subpath, shape="plain", prefix=True),
    Route(("GET",), "/admin/keys", list_keys, shape="plain"),
    Route(("DELETE",), "/admin/keys/", revoke_key, shape="plain", prefix=True),
    Route(("POST",), "/admin/keys/", rotate_key, shape="plain", prefix=True),
    Route(("GET",), "/admin/teams", list_teams, shape="plain"),
    Route(("GET",), "/admin/limits", key_limits, shape="plain"),
]
