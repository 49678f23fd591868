"""Who is calling: credentials from every carrier of SPEC §4, checked without storage I/O on
the hot path (static tokens and the admin key by hash, JWTs and team keys from caches).

Open mode: with no static token, no JWT configuration, and team keys disabled or none ever
issued, the gateway is open (and says so loudly at start). The first team key issued closes
it: at once on the instance that issued it, within a second on others with Redis, else
within `keys.REVALIDATE_S`. Revoking every key does not reopen it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from sluice.asgi import Request
from sluice.auth.keys import KeyAuth
from sluice.config import Settings
from sluice.errors import GatewayError, validation
from sluice.store import Store

if TYPE_CHECKING:
    from sluice.auth.jwt import JwtVerifier

log = logging.getLogger("sluice.auth")

# One body for a wrong, an expired and a missing credential (SPEC §6), in seed 000's words.
UNAUTHORIZED = "Invalid or expired token"
_MAX_SESSION = 256


@dataclass(slots=True)
class Principal:
    """The caller of one request, as the pipeline, limits and usage see it."""

    kind: str  # open | static | admin | jwt | key
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    session: str | None = None
    allowed_models: tuple[str, ...] | None = None  # globs; None = any
    limits: dict[str, Any] = field(default_factory=dict)  # shared: read, never mutate
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


def session_of(req: Request) -> str | None:
    """The session id from `X-SESSION-ID` or the `session_id` cookie; CR/LF is a 400."""
    session = req.headers.get("x-session-id") or req.cookie("session_id")
    if session is not None and ("\r" in session or "\n" in session or len(session) > _MAX_SESSION):
        raise validation("X-SESSION-ID", "must be one line of at most 256 characters")
    return session


def _hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_DIGESTS_MAX = 4096  # credentials whose digest is remembered; emptied when full


def unauthorized() -> GatewayError:
    """The one 401 every credential failure gets."""
    return GatewayError("UNAUTHORIZED", UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


class Authenticator:
    """Checks a request's credential: static tokens, the admin key, JWTs, team keys."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        a = settings.auth
        # digest → a stable, secret-free id so usage and limits can tell static tokens apart
        self._static = {_hex(t): "static_" + _hex(t)[:8] for t in a.tokens}
        self._admin = _hex(a.admin_key) if a.admin_key else None
        self.jwt: JwtVerifier | None = None
        if a.jwt is not None:
            # PyJWT and cryptography cost ~10 MB of RSS: loaded only when JWTs are on.
            from sluice.auth.jwt import JwtVerifier

            self.jwt = JwtVerifier(a.jwt)
        self.keys = KeyAuth(store, settings.redis.url) if a.keys and store is not None else None
        self._digests: dict[str, str] = {}  # credential -> _hex(credential), see _digest

    def _digest(self, cred: str) -> str:
        """`_hex(cred)`, remembered: a caller sends the same credential on every request,
        and hashing it was ~1 % of a request's CPU (py-spy, c=64). Bounded, so made-up
        credentials cost at most _DIGESTS_MAX entries; never logged or stored."""
        digest = self._digests.get(cred)
        if digest is None:
            if len(self._digests) >= _DIGESTS_MAX:
                self._digests.clear()
            digest = self._digests[cred] = _hex(cred)
        return digest

    @property
    def open(self) -> bool:
        """Whether requests without a credential are let through (see the module doc)."""
        if self._static or self.jwt is not None:
            return False
        return self.keys is None or not self.keys.any_keys

    async def start(self) -> None:
        """Warm the JWKS and the key state; warn loudly if the gateway is open."""
        if self.jwt is not None:
            await self.jwt.start()
        if self.keys is not None:
            await self.keys.start()
        if self.open:
            log.warning(
                "AUTH IS OFF: no auth.tokens, AUTH_TOKEN, JWT or team key is configured; "
                "anyone who can reach this port can use every provider"
            )

    async def close(self) -> None:
        """Stop background refreshers."""
        if self.jwt is not None:
            await self.jwt.close()
        if self.keys is not None:
            await self.keys.close()

    def is_admin(self, req: Request) -> bool:
        """Whether the request carries the admin key (constant-time compare)."""
        cred = credential(req)
        return bool(cred and self._admin and hmac.compare_digest(self._digest(cred), self._admin))

    def require_admin(self, req: Request) -> None:
        """401 unless the request carries the admin key."""
        if not self.is_admin(req):
            raise unauthorized()

    async def authenticate(self, req: Request) -> Principal:
        """The request's Principal, or 401 with one body for wrong and missing credentials."""
        session = session_of(req)
        cred = credential(req)
        if cred is None:
            if self.open:
                return Principal("open", session=session)
            raise unauthorized()
        digest = self._digest(cred)
        static = self._static.get(digest)
        if static is not None:
            return Principal("static", key_id=static, session=session)
        if self._admin is not None and hmac.compare_digest(digest, self._admin):
            return Principal("admin", session=session)
        if self.open:  # SDKs always send some key; with auth off it means nothing
            return Principal("open", session=session)
        principal = await self._verify(cred, digest)
        if principal is None:
            raise unauthorized()
        principal.session = session
        return principal

    async def _verify(self, cred: str, digest: str) -> Principal | None:
        if self.keys is not None and cred.startswith("sk_"):
            rec = await self.keys.lookup(cred, digest)
            if rec is None:
                return None
            return Principal(
                "key",
                team=rec.team_id,
                key_id=rec.id,
                allowed_models=rec.allowed_models,
                limits=rec.limits,
                metadata=rec.metadata,
            )
        if self.jwt is None:
            return None
        from sluice.auth.jwt import TokenRejected, looks_like_jwt

        if looks_like_jwt(cred):
            try:
                claims = await self.jwt.verify(cred)
            except TokenRejected as exc:
                log.info("JWT rejected: %s", exc)  # the reason, never the token
                return None
            return Principal(
                "jwt",
                team=claims.team,
                user=claims.user,
                allowed_models=claims.allowed_models,
                limits=claims.limits,
            )
        return None
