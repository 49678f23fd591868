"""Who is calling: credentials from every carrier of SPEC §4, checked without storage I/O."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from sluice.asgi import Request
from sluice.config import Settings
from sluice.errors import GatewayError

log = logging.getLogger("sluice.auth")

# A wrong and a missing credential get the same body (SPEC §6).
UNAUTHORIZED = "Invalid or missing credentials"


@dataclass(slots=True)
class Principal:
    """The caller of one request, as the pipeline, limits and usage see it."""

    kind: str  # open | static | admin | jwt | key
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    session: str | None = None
    allowed_models: tuple[str, ...] | None = None  # globs; None = any
    limits: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def check_model(self, model: str) -> None:
        """403 FORBIDDEN unless the caller is entitled to `model`."""
        if self.allowed_models is not None and not any(
            fnmatchcase(model, g) for g in self.allowed_models
        ):
            raise GatewayError("FORBIDDEN", f"not entitled to model {model!r}", param="model")


def credential(req: Request) -> str | None:
    """The gateway credential from whichever carrier holds it (SPEC §4)."""
    h = req.headers
    auth = h.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in ("x-auth-token", "x-api-key", "x-goog-api-key"):
        carried = h.get(name)
        if carried:
            return carried.strip()
    if req.scope.get("query_string") and b"auth_token=" in req.scope["query_string"]:
        return req.query.get("auth_token") or None
    return None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    """Checks a request's credential against the admin key and static tokens."""

    def __init__(self, settings: Settings) -> None:
        a = settings.auth
        self._static = frozenset(_digest(t) for t in a.tokens)
        self._admin = _digest(a.admin_key) if a.admin_key else None
        self.open = not a.tokens and a.jwt is None
        if self.open:
            log.warning(
                "AUTH IS OFF: no auth.tokens, AUTH_TOKEN or JWT configured; "
                "anyone who can reach this port can use every provider"
            )

    def is_admin(self, req: Request) -> bool:
        """Whether the request carries the admin key (constant-time compare)."""
        cred = credential(req)
        return bool(cred and self._admin and hmac.compare_digest(_digest(cred), self._admin))

    def authenticate(self, req: Request) -> Principal:
        """The request's Principal, or 401 with one body for wrong and missing credentials."""
        session = req.headers.get("x-session-id") or req.cookie("session_id")
        cred = credential(req)
        if cred is not None:
            d = _digest(cred)
            if d in self._static:
                # A hash-derived id, so limits and the cache tell static tokens apart.
                return Principal("static", key_id="static-" + d[:6].hex(), session=session)
            if self._admin is not None and hmac.compare_digest(d, self._admin):
                return Principal("admin", session=session)
        if self.open:
            return Principal("open", session=session)
        raise GatewayError("UNAUTHORIZED", UNAUTHORIZED)
