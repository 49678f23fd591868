"""The ASGI application: `create_app(settings)` builds the gateway and its dispatcher.

Everything shared (router, upstream pool, auth, usage sink) lives on `Gateway`, built once
and passed to handlers; nothing module-global is mutated by requests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import traceback
from typing import Any

from sluice import db, errors, logsafe, state
from sluice.asgi import JSON_HEADERS, ClientGone, Receive, Request, Scope, Send
from sluice.auth import Authenticator
from sluice.cache import ResponseCache
from sluice.config import Settings
from sluice.dashboard import UsageQueries
from sluice.drain import Drain
from sluice.errors import GatewayError
from sluice.limits import Traffic
from sluice.pipeline import Pipeline
from sluice.pricing import Prices
from sluice.providers import registry
from sluice.providers.base import Adapter
from sluice.readiness import ReadyCheck, StorageProbe
from sluice.redact import scrub
from sluice.routes import Route, admin, byok, register
from sluice.routes import anthropic as anthropic_routes
from sluice.routes import dashboard as dashboard_routes
from sluice.routes import native as native_routes
from sluice.routes import observability as observability_routes
from sluice.routes import openai as openai_routes
from sluice.routes import ops as ops_routes
from sluice.routing import Router
from sluice.store import Store
from sluice.upstream import Upstream
from sluice.usage import UsageSink, failed_record

log = logging.getLogger("sluice")

# Headers that would let a request choose the upstream (SPEC §6).
_UPSTREAM_HEADERS = frozenset(
    {
        "x-base-url",
        "x-api-base",
        "x-portkey-custom-host",
        "x-api-url",
        "x-upstream-url",
        "x-target-url",
    }
)


class Gateway:
    """The parts of one running gateway.

    `ready_checks`: async callables answering None (ready) or a reason; GET /health/ready is
    503 while draining or while any of them gives a reason. Append yours; keep them cheap.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.adapters: dict[str, Adapter] = {
            name: registry.adapter_for(p) for name, p in settings.providers.items()
        }
        configured = {name for name, p in settings.providers.items() if p.configured}
        self.router = Router(settings, configured)
        self.prices = Prices(settings)
        self.upstream = Upstream(settings.server.retry_after_cap_s, settings.ai_gateway)
        self.store = Store(settings.storage.url)
        self.auth = Authenticator(settings, self.store)
        self.usage = UsageSink(settings)
        self.usage.writer.share_engine(self.store.engine)  # one engine per database
        r = settings.redis
        self.state = state.build(r.url, r.prefix, r.instances, settings.cache.max_entries)
        self.traffic = Traffic(settings, self.state, self.prices)
        self.cache = ResponseCache(settings.cache, self.state)
        self.pipeline = Pipeline(self)
        self.drain = Drain(settings.server.drain_timeout_s)
        self.ready_checks: list[ReadyCheck] = [StorageProbe(self.store.engine)]
        self.dashboard = UsageQueries(self.store.engine)

    async def startup(self) -> None:
        """Open what needs opening before the first request."""
        self.drain.install()
        logsafe.install(logsafe.secrets_of(self.settings))
        if self.settings.storage.url.startswith("sqlite"):  # PostgreSQL: `sluice db upgrade`
            await asyncio.to_thread(db.ensure_current, self.settings.storage.url)
        await self.state.start()
        await self.auth.start()
        await self.usage.start()

    async def shutdown(self) -> None:
        """Close pools and flush records."""
        self.drain.uninstall()
        await self.upstream.close()
        await self.state.close()
        await self.usage.close()
        await self.auth.close()
        await self.store.close()  # last: the writer and the dashboard share its engine


def _all_routes() -> list[Route]:
    return [
        *openai_routes.ROUTES,
        *anthropic_routes.ROUTES,
        *ops_routes.ROUTES,
        *native_routes.ROUTES,
        *admin.ROUTES,
        *byok.ROUTES,
        *register.ROUTES,
        *observability_routes.ROUTES,
        *dashboard_routes.ROUTES,
    ]


class App:
    """The ASGI callable: lifespan, CORS, request ids, dispatch, errors in the route's shape."""

    def __init__(self, gw: Gateway, routes: list[Route]) -> None:
        self.gw = gw
        self.exact: dict[str, Route] = {r.path: r for r in routes if not r.prefix}
        self.prefixes = sorted((r for r in routes if r.prefix), key=lambda r: -len(r.path))
        origins = gw.settings.server.cors_origins
        self.cors_any = "*" in origins
        self.cors_origins = frozenset(o for o in origins if o != "*")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(Request(scope, receive, send))
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Start up and shut down the gateway with the server."""
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.gw.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.gw.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def route(self, path: str, method: str = "GET") -> Route | None:
        """The route for a path: exact first, then the longest prefix (of several routes on
        one prefix, e.g. DELETE and PATCH /admin/keys/, the one that allows `method`)."""
        r = self.exact.get(path)
        if r is not None:
            return r
        for p in self.prefixes:
            if path.startswith(p.path):
                if method in p.methods:
                    return p
                same = (q for q in self.prefixes if q.path == p.path and method in q.methods)
                return next(same, p)
        return None

    async def http(self, req: Request) -> None:
        """Dispatch one HTTP request."""
        origin = req.headers.get("origin")
        if origin is not None:
            self._cors(req, origin)
            if req.method == "OPTIONS" and "access-control-request-method" in req.headers:
                await self._preflight(req)
                return
        route = self.route(req.path, req.method)
        try:
            if admin.is_admin_path(req):  # on the raw path, whatever route matched (SPEC §6)
                self.gw.auth.require_admin(req)
            if route is None:
                raise GatewayError("NOT_FOUND", f"no endpoint at {scrub(req.path)}")
            if req.method not in route.methods:
                raise GatewayError(
                    "METHOD_NOT_ALLOWED", f"{req.method} is not allowed on {req.path}"
                )
            if route.routed:
                self._check_headers(req)
            await route.handler(self.gw, req)
        except GatewayError as exc:
            self._record_refused(req, route, exc.status, exc.code)
            await self._error(req, route, exc)
        except ClientGone:
            self._record_refused(req, route, 499, "CLIENT_DISCONNECTED")
            return
        except Exception as exc:
            log.error("unhandled error on %s: %s", scrub(req.path), scrub(traceback.format_exc()))
            self._record_refused(req, route, 500, "INTERNAL_ERROR")
            await self._error(
                req, route, GatewayError("INTERNAL_ERROR", f"internal error ({type(exc).__name__})")
            )

    def _record_refused(self, req: Request, route: Route | None, status: int, code: str) -> None:
        """A routed request refused before the pipeline took it (bad header or body) still
        gets its usage record; the pipeline records everything after that itself."""
        if route is not None and route.routed and req.usage is None:
            self.gw.usage.record(failed_record(req.request_id, req.method, req.path, status, code))

    @staticmethod
    def _check_headers(req: Request) -> None:
        for name, value in req.headers.items():
            if name in _UPSTREAM_HEADERS:
                raise errors.validation(
                    name, "the upstream is chosen by configuration, not by the request"
                )
            if "\r" in value or "\n" in value:
                raise errors.validation(name, "header values must not contain CR or LF")

    async def _error(self, req: Request, route: Route | None, exc: GatewayError) -> None:
        shape = route.shape if route else "openai"
        if shape == "anthropic":
            body = errors.anthropic_body(exc)
        elif shape == "proxy":
            body = errors.proxy_body(exc, req.request_id)
        else:
            body = errors.openai_body(exc)
        for k, v in exc.headers.items():
            req.add_header(k, v)
        try:
            await req.respond(exc.status, body, JSON_HEADERS)
        except RuntimeError:
            pass  # the response had already started; the stream handled its own ending

    def _cors(self, req: Request, origin: str) -> None:
        """SPEC §6: a listed origin is echoed with credentials; `*` never with credentials."""
        if origin in self.cors_origins:
            req.add_header("access-control-allow-origin", origin)
            req.add_header("access-control-allow-credentials", "true")
            req.add_header("vary", "Origin")
        elif self.cors_any:
            req.add_header("access-control-allow-origin", "*")
        req.add_header(
            "access-control-expose-headers",
            "X-Request-ID, X-Sluice-Provider, X-Sluice-Cache, X-Sluice-Overhead-Ms, Retry-After, "
            "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
            "x-ratelimit-reset-requests, x-ratelimit-limit-tokens, "
            "x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens",
        )

    async def _preflight(self, req: Request) -> None:
        asked = req.headers.get("access-control-request-headers", "")
        req.add_header("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
        if asked:
            req.add_header("access-control-allow-headers", asked)
        req.add_header("access-control-max-age", "600")
        await req.respond(204, b"", [])


def create_app(settings: Settings) -> App:
    """Build the gateway and its ASGI app from settings."""
    return App(Gateway(settings), _all_routes())


# Allocations net of frees between two young-generation collections (CPython's default is
# 700). With 64 requests in flight the default ran a collection every ~10 requests; whatever
# was alive then (queued usage records, open requests) was promoted, and every ~1,000
# requests the promotions forced a full collection of the whole process (~35 ms).
# Measured 2026-11-23 (c=64, bench config, 10 s): 2,577 / 234 / 21 collections by
# generation and 1.3 s of the 10 s in the collector at 700; 14 / 1 / 0 and 0.04 s at 10,000.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect less often, and never again scan what the process built to start: what is
    alive now (modules, config, the gateway's parts) moves to the permanent generation."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def factory() -> Any:
    """uvicorn's factory: settings from --config / SLUICE_CONFIG / the environment."""
    from sluice import config

    app = create_app(config.load())
    tune_gc()  # a serving process only (tests build apps in their own process)
    return app
