"""The only module that talks HTTP to providers: pools, timeouts, retries, error mapping.

One keep-alive aiohttp session per provider. `open()` makes one target's attempts (retrying
429/5xx, connect errors and resets with jittered backoff, honouring Retry-After up to a cap)
and returns a response whose status is 2xx; everything else becomes a GatewayError with a
SPEC §5 code. Redirects are never followed (SPEC §6).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import orjson

from sluice import __version__
from sluice.errors import GatewayError
from sluice.providers.base import Adapter, UpstreamCall
from sluice.redact import scrub

if TYPE_CHECKING:
    from sluice.config import AiGatewayConfig

_MAX_ERROR_BODY = 64 * 1024
_SESSION_HEADERS = {"User-Agent": f"sluice/{__version__}"}


@dataclass(slots=True)
class Opened:
    """A 2xx upstream response, ready to read, and what it took to get it."""

    response: aiohttp.ClientResponse
    attempts: int
    started: float  # monotonic time the successful attempt was sent
    headers_at: float  # monotonic time its headers arrived

    async def read(self) -> bytes:
        """The whole body (non-streamed answers)."""
        try:
            return await self.response.read()
        except TimeoutError:
            raise GatewayError("UPSTREAM_TIMEOUT", "upstream timed out while answering") from None
        except aiohttp.ClientError as exc:
            raise GatewayError(
                "NETWORK_ERROR", f"upstream connection failed: {type(exc).__name__}"
            ) from None
        finally:
            self.response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; errors surface as GatewayError."""
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
        except TimeoutError:
            raise GatewayError("UPSTREAM_TIMEOUT", "upstream stalled mid-stream") from None
        except aiohttp.ClientError as exc:
            raise GatewayError(
                "NETWORK_ERROR", f"upstream stream broke: {type(exc).__name__}"
            ) from None
        finally:
            self.response.close()


class Upstream:
    """Owns the HTTP sessions; one per provider name."""

    def __init__(
        self, retry_after_cap_s: float = 10.0, ai_gateway: AiGatewayConfig | None = None
    ) -> None:
        self.retry_after_cap_s = retry_after_cap_s
        self.ai_gateway = ai_gateway
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.attempts_total = 0
        self.retries_total = 0

    def session(self, provider: str) -> aiohttp.ClientSession:
        """The pooled keep-alive session for a provider (created on first use)."""
        s = self._sessions.get(provider)
        if s is None or s.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
            )
            # A User-Agent of our own rather than `skip_auto_headers`, which makes aiohttp
            # sort and copy the headers of every request. No cookie jar: the session serves
            # every tenant, so a provider's Set-Cookie must never ride on the next caller's
            # request (and the jar's per-request filtering costs CPU for nothing).
            s = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                headers=_SESSION_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[provider] = s
        return s

    async def close(self) -> None:
        """Close every session (at shutdown)."""
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()

    async def open(
        self,
        provider: str,
        adapter: Adapter,
        call: UpstreamCall,
        deadline: float,
        secrets: tuple[str, ...],
        metadata: Mapping[str, str | None] | None = None,
    ) -> Opened:
        """Send `call`, retrying per SPEC §6 until a 2xx, a final error, or the deadline.

        `metadata` (team, key id, user, session) rides to a Cloudflare AI Gateway when one
        is in use; its token is scrubbed from error messages like the provider key.
        """
        url, call = self.address(adapter, call, metadata)
        if self.ai_gateway is not None and self.ai_gateway.token:
            secrets = (*secrets, self.ai_gateway.token)
        retries = max(0, adapter.config.max_retries)
        attempt = 0
        while True:
            attempt += 1
            self.attempts_total += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GatewayError("UPSTREAM_TIMEOUT", "the request's deadline passed")
            per_attempt = min(adapter.config.timeout_s, remaining)
            started = time.monotonic()
            try:
                err = await self._attempt(
                    provider, call, url, per_attempt, remaining, secrets, adapter
                )
                if isinstance(err, Opened):
                    err.attempts = attempt
                    err.started = started
                    return err
            except GatewayError as exc:
                err = exc
            err.attempts = attempt
            if not err.retryable or attempt > retries:
                raise err
            delay = self._backoff(attempt, err)
            if delay is None or time.monotonic() + delay >= deadline:
                raise err
            self.retries_total += 1
            await asyncio.sleep(delay)

    def address(
        self, adapter: Adapter, call: UpstreamCall, metadata: Mapping[str, str | None] | None
    ) -> tuple[str, UpstreamCall]:
        """The URL for `call`: the provider's base URL, or the AI Gateway's provider path
        with its token and metadata headers (seed 003;
        https://developers.cloudflare.com/ai-gateway/configuration/authentication/ and
        https://developers.cloudflare.com/ai-gateway/observability/custom-metadata/ , which
        keeps at most five string/number/boolean entries)."""
        gw = self.ai_gateway
        path = adapter.ai_gateway_path(call.path) if gw is not None else None
        if gw is None or path is None:
            return adapter.base_url + call.path, call
        headers = dict(call.headers)
        if gw.token:
            headers["cf-aig-authorization"] = f"Bearer {gw.token}"
        meta = {k: v for k, v in (metadata or {}).items() if v is not None}
        if meta:
            headers["cf-aig-metadata"] = orjson.dumps(meta).decode()
        sent = UpstreamCall(call.method, path, headers, call.body, call.stream, call.query)
        return gw.url.rstrip("/") + path, sent

    def _backoff(self, attempt: int, err: GatewayError) -> float | None:
        """Jittered exponential backoff; Retry-After honoured up to the cap, else give up."""
        ra = err.headers.get("Retry-After")
        if ra is not None:
            try:
                seconds = float(ra)
            except ValueError:
                seconds = self.retry_after_cap_s + 1
            return None if seconds > self.retry_after_cap_s else seconds
        return random.uniform(0, min(2.0, 0.1 * 2 ** (attempt - 1)))

    async def _attempt(
        self,
        provider: str,
        call: UpstreamCall,
        url: str,
        per_attempt: float,
        remaining: float,
        secrets: tuple[str, ...],
        adapter: Adapter,
    ) -> Opened | GatewayError:
        timeout = aiohttp.ClientTimeout(
            total=remaining, sock_connect=per_attempt, sock_read=per_attempt
        )
        try:
            resp = await self.session(provider).request(
                call.method,
                url,
                params=call.query or None,
                data=call.body,
                headers=call.headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except TimeoutError:
            return GatewayError("UPSTREAM_TIMEOUT", f"provider {provider!r} did not answer in time")
        except aiohttp.ClientError as exc:
            return GatewayError(
                "NETWORK_ERROR", f"could not reach provider {provider!r}: {type(exc).__name__}"
            )
        if resp.status < 300:
            return Opened(resp, 0, 0.0, time.monotonic())
        return await self._error(provider, resp, secrets, adapter)

    async def _error(
        self,
        provider: str,
        resp: aiohttp.ClientResponse,
        secrets: tuple[str, ...],
        adapter: Adapter,
    ) -> GatewayError:
        """A non-2xx answer → EXTERNAL_SERVICE_ERROR keeping the status and (scrubbed) message."""
        try:
            data = await resp.content.read(_MAX_ERROR_BODY)
        except (aiohttp.ClientError, TimeoutError):
            data = b""
        finally:
            resp.release()
        if 300 <= resp.status < 400:
            return GatewayError(
                "EXTERNAL_SERVICE_ERROR",
                f"provider {provider!r} answered a redirect; redirects are not followed",
                status=502,
            )
        message = scrub(adapter.error_message(data), secrets)
        headers = {}
        if "Retry-After" in resp.headers:
            headers["Retry-After"] = resp.headers["Retry-After"]
        return GatewayError("EXTERNAL_SERVICE_ERROR", message, status=resp.status, headers=headers)
