"""Seed 000's `POST /api/register-callback`: a dashboard holding `REGISTRATION_TOKEN` learns
the gateway's identity. Without the token configured the endpoint does not exist (404).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

import orjson

from sluice import __version__
from sluice.auth import credential, unauthorized
from sluice.errors import GatewayError
from sluice.routes import Route

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request

CAPABILITIES = [
    "chat.completions",
    "completions",
    "embeddings",
    "messages",
    "streaming",
    "native-passthrough",
    "byok",
    "team-keys",
    "jwt",
]


def _body_token(raw: bytes) -> str | None:
    """The token when sent in the body as {"token"} or {"registrationToken"}."""
    try:
        obj = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        for name in ("token", "registrationToken", "registration_token"):
            if isinstance(obj.get(name), str):
                return str(obj[name])
    return None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


async def register_callback(gw: Gateway, req: Request) -> None:
    """POST /api/register-callback: identity for a caller holding REGISTRATION_TOKEN."""
    expected = gw.settings.registration_token
    if not expected:
        raise GatewayError("NOT_FOUND", f"no endpoint at {req.path}")
    offered = credential(req) or _body_token(await req.body(64 * 1024))
    # Compare digests so the comparison time depends on neither value's length.
    if offered is None or not hmac.compare_digest(_digest(offered), _digest(expected)):
        raise unauthorized()
    await req.json(
        200,
        {
            "success": True,
            "name": "sluice",
            "version": __version__,
            "url": gw.settings.server.public_url,
            "capabilities": CAPABILITIES,
            "providers": sorted(n for n, p in gw.settings.providers.items() if p.configured),
        },
    )


ROUTES = [Route(("POST",), "/api/register-callback", register_callback, shape="plain")]
