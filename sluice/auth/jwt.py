"""JWT verification (seeds 000, 002; SPEC §6): pinned algorithms, JWKS kept warm off the
hot path, a fallback key for when the JWKS cannot be fetched, entitlements → Principal.

- The JWKS is prefetched at start-up and refreshed in the background every `REFRESH_S`.
- A token whose `kid` we do not hold triggers one refresh, at most once per `KID_REFRESH_S`;
  concurrent requests share that one fetch (an unknown-`kid` storm costs one fetch).
- `jku`, `x5u` and embedded `jwk` headers are never read: keys come only from configuration.
- Verified tokens are cached by SHA-256 until their `exp`, so a repeat costs a dict lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from sluice.config import JwtConfig
from sluice.httpclient import Client
from sluice.upstream import UNREADABLE, new_client, read_capped

log = logging.getLogger("sluice.auth.jwt")
_FETCH_FAILED: tuple[type[Exception], ...] = (*UNREADABLE, ValueError, jwt.PyJWTError)

REFRESH_S = 300.0  # background JWKS refresh period
RETRY_S = 30.0  # after a failed fetch
KID_REFRESH_S = 30.0  # SPEC §6: an unknown kid refreshes at most once per 30 s
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 256 * 1024
CACHE_MAX = 10_000
INVALID = "Invalid or expired token"


class TokenRejected(Exception):
    """The token failed verification; the reason is for logs, never for the client."""


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token grants: who, which models, which limits, until when."""

    user: str | None
    team: str | None
    allowed_models: tuple[str, ...] | None
    limits: dict[str, Any]
    exp: float


def looks_like_jwt(token: str) -> bool:
    """Whether a credential has a JWT's shape (three base64url parts, a JSON header)."""
    return token.startswith("eyJ") and token.count(".") == 2


def parse_public_key(text: str) -> Any:
    """A PEM public key or a JWK (JSON) → a key object PyJWT accepts."""
    text = text.strip()
    if text.startswith("{"):
        return jwt.PyJWK(json.loads(text)).key
    return load_pem_public_key(text.encode())


def _entitlements(raw: Any) -> tuple[tuple[str, ...] | None, dict[str, Any], str | None]:
    """The entitlements claim → (model globs, limits, team); malformed means rejected."""
    if raw is None:
        return None, {}, None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise TokenRejected("entitlements claim is not JSON") from None
    if not isinstance(raw, dict):
        raise TokenRejected("entitlements claim is not an object")
    models = raw.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise TokenRejected("entitlements.models is not a list of strings")
    team = raw.get("team")
    limits = {k: v for k, v in raw.items() if k not in ("models", "team")}
    return (
        (tuple(models) if models is not None else None),
        limits,
        (str(team) if team is not None else None),
    )


class JwtVerifier:
    """Verifies bearer JWTs against the configured JWKS and/or fallback key."""

    def __init__(self, config: JwtConfig) -> None:
        self.config = config
        self.algorithms = list(config.algorithms)  # pinned; config rejects none/HMAC
        self.fallback = parse_public_key(config.public_key) if config.public_key else None
        self._keys: dict[str, Any] = {}  # kid → key object, from the last good JWKS
        self._jwks_ok = False  # whether the last fetch succeeded
        self._last_kid_refresh = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self._bg: asyncio.Task[None] | None = None
        self._client: Client | None = None
        self._cache: dict[bytes, Claims] = {}
        self.fetches = 0

    async def start(self) -> None:
        """Prefetch the JWKS and keep it fresh in the background."""
        if not self.config.jwks_url:
            return
        await self.refresh()
        self._bg = asyncio.create_task(self._refresher())

    async def close(self) -> None:
        """Stop the refresher and drop the HTTP client."""
        if self._bg is not None:
            self._bg.cancel()
        if self._client is not None:
            self._client.close()
        self._client = None

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S if self._jwks_ok else RETRY_S)
            await self.refresh()

    async def refresh(self) -> None:
        """Fetch the JWKS once; concurrent callers share the same fetch."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        url = self.config.jwks_url
        assert url is not None
        if self._client is None:
            self._client = new_client()
        self.fetches += 1
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                resp = await self._client.request("GET", url)
            if resp.status != 200:
                await resp.close()
                raise ValueError(f"HTTP {resp.status}")
            body = await read_capped(resp, MAX_JWKS_BYTES + 1, FETCH_TIMEOUT_S)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS too large")
            self._keys = self._parse_jwks(json.loads(body))
            self._jwks_ok = True
        except _FETCH_FAILED as exc:
            self._jwks_ok = False
            log.warning("JWKS fetch failed (%s): %s", url, type(exc).__name__)

    @staticmethod
    def _parse_jwks(doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWKS document")
        keys: dict[str, Any] = {}
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[str(jwk.get("kid", ""))] = jwt.PyJWK(jwk).key
            except jwt.PyJWTError:
                continue  # a key type we do not support must not hide the others
        return keys

    async def verify(self, token: str) -> Claims:
        """The token's claims, or TokenRejected (the reason is logged, not returned)."""
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None and hit.exp > time.time():
            return hit
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRejected(f"algorithm {alg!r} is not allowed")
        key = await self._key_for(header.get("kid"))
        claims = self._decode(token, key, alg)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()  # crude but bounded; the next requests re-verify
        self._cache[digest] = claims
        return claims

    async def _key_for(self, kid: Any) -> Any:
        """The key for `kid`: the JWKS's, after at most one refresh, else the fallback."""
        kid = "" if kid is None else str(kid)
        if kid in self._keys:
            return self._keys[kid]
        now = time.monotonic()
        if self.config.jwks_url and now - self._last_kid_refresh >= KID_REFRESH_S:
            self._last_kid_refresh = now
            await self.refresh()
            if kid in self._keys:
                return self._keys[kid]
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if self.fallback is not None and (not self.config.jwks_url or not self._jwks_ok):
            return self.fallback
        raise TokenRejected("unknown kid")

    def _decode(self, token: str, key: Any, alg: str) -> Claims:
        c = self.config
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=c.audience,
                issuer=c.issuer,
                leeway=min(c.leeway_s, 60.0),
                options={"require": ["exp"], "verify_aud": c.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(type(exc).__name__) from None
        except (TypeError, ValueError) as exc:  # e.g. an EC key offered to an RSA algorithm
            raise TokenRejected(type(exc).__name__) from None
        models, limits, team = _entitlements(payload.get(c.entitlements_claim))
        sub = payload.get("sub")
        return Claims(
            user=str(sub) if sub is not None else None,
            team=team,
            allowed_models=models,
            limits=limits,
            exp=float(payload["exp"]),
        )
