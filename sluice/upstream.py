"""The only module that talks HTTP to providers: pools, timeouts, retries, error mapping.

One keep-alive client per provider (`sluice.httpclient`: HTTP/1.1 on the event loop, parsed
by httptools). Chosen by measurement (bench/experiments/clients.py, one core, c=64): 45 µs
of CPU a request against rnet's 91 in a bare proxy (2026-12-02); rnet had replaced aiohttp
(81-95 µs), and pyreqwest kept an upstream request running when the awaiting task was
cancelled. Cancelling the awaiting task aborts the connection, before the headers and
mid-stream alike (SPEC §6). Every wait here is bounded by `sluice.deadlines.within`
(asyncio.timeout's meaning at a fraction of its cost).

`open()` makes one target's attempts (retrying 429/5xx, connect errors and resets with
jittered backoff, honouring Retry-After up to a cap) and returns a response whose status is
2xx; everything else becomes a GatewayError with a SPEC §5 code. Redirects are never
followed and cookies never kept (SPEC §6).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from sluice import __version__
from sluice.deadlines import within
from sluice.errors import GatewayError
from sluice.httpclient import Client, HttpError, Response, UnsendableHeader
from sluice.providers.base import Adapter, UpstreamCall
from sluice.redact import scrub

if TYPE_CHECKING:
    from sluice.config import AiGatewayConfig

_MAX_ERROR_BODY = 64 * 1024
_USER_AGENT = f"sluice/{__version__}"
_BROKEN: tuple[type[Exception], ...] = (HttpError,)  # a call that could not be made or broke
_TIMEOUTS: tuple[type[Exception], ...] = (TimeoutError,)
UNREADABLE = _TIMEOUTS + _BROKEN  # every way a call or a body can fail


@dataclass(slots=True)
class Opened:
    """A 2xx upstream response, ready to read, and what it took to get it."""

    response: Response
    attempts: int
    started: float  # monotonic time the successful attempt was sent
    headers_at: float  # monotonic time its headers arrived
    deadline: float  # monotonic: the request's deadline bounds reading the body too
    stall_s: float  # the longest wait for the next piece of the body
    body: bytes | None  # a whole (not event-stream) answer, read during the attempt

    @property
    def status(self) -> int:
        """The upstream's status code."""
        return self.response.status

    def header(self, name: str, default: str = "") -> str:
        """One response header (`name` lower-case), decoded."""
        value = self.response.headers.get(name)
        return value.decode("latin-1") if value is not None else default

    def _wait(self) -> float:
        """How long the next read may take: the stall limit, within the deadline."""
        return min(self.stall_s, self.deadline - time.monotonic())

    async def read(self) -> bytes:
        """The whole body (non-streamed answers)."""
        if self.body is not None:
            return self.body
        try:
            with within(self._wait()):
                return await self.response.read()
        except _TIMEOUTS:
            raise GatewayError("UPSTREAM_TIMEOUT", "upstream timed out while answering") from None
        except _BROKEN as exc:
            raise GatewayError(
                "NETWORK_ERROR", f"upstream connection failed: {type(exc).__name__}"
            ) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; errors surface as GatewayError. Leaving early (a client
        gone, an error) closes the response, which drops its connection."""
        if self.body is not None:  # read whole during the attempt
            yield self.body
            return
        following = self.response.stream().__anext__
        finished = False
        try:
            while True:
                try:
                    with within(self._wait()):
                        chunk = await following()
                except StopAsyncIteration:
                    finished = True
                    return
                yield chunk
        except _TIMEOUTS:
            raise GatewayError("UPSTREAM_TIMEOUT", "upstream stalled mid-stream") from None
        except _BROKEN as exc:
            raise GatewayError(
                "NETWORK_ERROR", f"upstream stream broke: {type(exc).__name__}"
            ) from None
        finally:
            if not finished:
                await self.response.close()


class Upstream:
    """Owns the HTTP clients; one per provider name."""

    def __init__(
        self, retry_after_cap_s: float = 10.0, ai_gateway: AiGatewayConfig | None = None
    ) -> None:
        self.retry_after_cap_s = retry_after_cap_s
        self.ai_gateway = ai_gateway
        self._clients: dict[str, Client] = {}
        self.attempts_total = 0
        self.retries_total = 0

    def client(self, provider: str) -> Client:
        """The pooled keep-alive client for a provider (created on first use)."""
        c = self._clients.get(provider)
        if c is None:
            c = self._clients[provider] = new_client()
        return c

    async def close(self) -> None:
        """Drop every client and its pooled connections (at shutdown)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

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
                    provider, call, url, per_attempt, deadline, secrets, adapter
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
        deadline: float,
        secrets: tuple[str, ...],
        adapter: Adapter,
    ) -> Opened | GatewayError:
        body: bytes | None = None
        try:
            with within(per_attempt):
                resp = await self.client(provider).request(
                    call.method,
                    url,
                    call.headers,
                    call.body if call.body is not None else b"",
                    list(call.query.items()),
                )
                headers_at = time.monotonic()
                # A whole answer is read inside the attempt: one timer, and a body that
                # breaks is retried like any failure before the client's first byte.
                if resp.status < 300 and not call.stream and not _is_sse(resp):
                    body = await resp.read()
        except _TIMEOUTS:
            return GatewayError("UPSTREAM_TIMEOUT", f"provider {provider!r} did not answer in time")
        except _BROKEN as exc:
            return GatewayError(
                "NETWORK_ERROR", f"could not reach provider {provider!r}: {type(exc).__name__}"
            )
        except UnsendableHeader:
            return GatewayError(
                "PROVIDER_UNAVAILABLE",
                f"provider {provider!r} has a key or header value that cannot be sent "
                "(a control character, e.g. a trailing carriage return)",
            )
        if resp.status < 300:
            return Opened(resp, 0, 0.0, headers_at, deadline, per_attempt, body)
        data = await read_capped(resp, _MAX_ERROR_BODY, per_attempt)
        retry_after = resp.headers.get("retry-after")
        return self._error(provider, resp.status, retry_after, data, secrets, adapter)

    def _error(
        self,
        provider: str,
        status: int,
        retry_after: bytes | None,
        data: bytes,
        secrets: tuple[str, ...],
        adapter: Adapter,
    ) -> GatewayError:
        """A non-2xx answer → EXTERNAL_SERVICE_ERROR keeping the status and (scrubbed) message."""
        if 300 <= status < 400:
            return GatewayError(
                "EXTERNAL_SERVICE_ERROR",
                f"provider {provider!r} answered a redirect; redirects are not followed",
                status=502,
            )
        message = scrub(adapter.error_message(data), secrets)
        headers = {} if retry_after is None else {"Retry-After": retry_after.decode("latin-1")}
        return GatewayError("EXTERNAL_SERVICE_ERROR", message, status=status, headers=headers)


def new_client() -> Client:
    """A keep-alive client as Sluice calls out with (providers, the JWKS).

    No cookie store: a client serves every tenant, so a provider's Set-Cookie must never ride
    on the next caller's request. No proxy from the environment: an HTTP_PROXY meant for
    something else must not see provider keys. No redirects (SPEC §6). Certificates always
    checked (`httpclient.trusted_cas`)."""
    return Client(_USER_AGENT)


def _is_sse(resp: Response) -> bool:
    ctype = resp.headers.get("content-type")
    return ctype is not None and b"event-stream" in ctype


async def read_capped(resp: Response, limit: int, wait_s: float) -> bytes:
    """At most `limit` bytes of a body (an error answer, a JWKS): what a stalled or broken
    body sent until then. A body cut short is closed, which drops its connection."""
    parts: list[bytes] = []
    size = 0
    whole = False
    try:
        with within(wait_s):
            async for chunk in resp.stream():
                parts.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
            else:
                whole = True
    except UNREADABLE:
        pass
    if not whole:
        await resp.close()
    return b"".join(parts)[:limit]
