"""The data path of every routed request, top to bottom in `Pipeline.run`:

authenticate → route → open the cache slot (sluice.cache; its lookup is sent now) → admit
(limits, budgets: sluice.limits; with Redis, in the same round trip as the lookup) → await the
lookup → call upstream with fallbacks → answer or stream back → settle the admission and
record usage in a `finally`, so aborted and failed requests are still counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice import errors, tokenizer
from sluice.asgi import SSE_HEADERS, WATCH_AFTER_S, ClientGone, DisconnectWatch, Request
from sluice.drain import ended_error
from sluice.errors import GatewayError
from sluice.limits import LATER
from sluice.providers import canonical
from sluice.providers.base import Adapter, StreamMeter, UpstreamCall, Usage
from sluice.routing import Plan, Target
from sluice.schema import ChatRequest, EmbeddingsRequest
from sluice.upstream import Opened
from sluice.usage import UsageRecord, new_record

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.cache import CacheSlot
    from sluice.limits import Ticket


@dataclass(slots=True)
class Operation:
    """What a routed endpoint asks of an adapter: build the call, read the answer."""

    model: str | None
    provider: str | None
    stream: bool
    build: Callable[[Adapter, str, str], UpstreamCall]
    answer: Callable[[Adapter, bytes, str], tuple[bytes, Usage | None]]
    chat: ChatRequest | None = None
    prompt_chars: int = 0  # for the usage estimate when an upstream reports none
    # A route with its own wire format (e.g. /v1/messages) reshapes the stream here; the
    # default relays the adapter's canonical SSE. Its error event ends a failed stream.
    relay: Relay | None = None
    stream_error: Callable[[GatewayError], bytes] = errors.sse_error_event
    body: dict[str, Any] | None = None  # the parsed body (the cache key is built from it)
    ticket: Ticket | None = None  # this request's admission (limits, budgets), once admitted
    cache: CacheSlot | None = None  # this request's cache slot, when cacheable
    watch: DisconnectWatch | None = None  # cancels the request when its client leaves


Relay = Callable[
    [Adapter, AsyncIterator[bytes], ChatRequest, str, StreamMeter], AsyncIterator[bytes]
]


def chat_operation(chat: ChatRequest) -> Operation:
    """A chat (or legacy completion) request as an Operation."""
    return Operation(
        chat.model,
        chat.provider,
        chat.stream,
        build=lambda a, model, key: a.chat_request(chat, model, key),
        answer=lambda a, data, model: canonical.answer(a, chat, data, model),
        chat=chat,
        prompt_chars=len(chat.raw),
        body=chat.body,
    )


def embeddings_operation(req: EmbeddingsRequest) -> Operation:
    """An embeddings request as an Operation."""
    return Operation(
        req.model,
        req.provider,
        False,
        build=lambda a, model, key: a.embeddings_request(req, model, key),
        answer=lambda a, data, model: canonical.embeddings_answer(a, req, data, model),
        prompt_chars=len(req.raw),
        body=req.body,
    )


@dataclass(slots=True)
class Served:
    """The upstream answer being relayed: where it came from and when the attempts began."""

    opened: Opened
    target: Target
    adapter: Adapter
    plan: Plan
    upstream_started: float  # perf_counter before the first attempt (upstream time excluded)


class Pipeline:
    """Runs routed requests against the gateway's parts."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def run(self, req: Request, op: Operation) -> None:
        """Serve one routed request end to end; errors before the response are re-raised."""
        gw = self.gw
        rec = req.usage = new_record(req.request_id, req.method, req.path)
        rec.stream = op.stream
        if gw.usage.store_content and op.chat is not None:
            rec.content = op.chat.raw  # logged only with logging.store_content
        # A client that leaves cancels this task, and with it the upstream call (SPEC §6).
        current = asyncio.current_task()
        gw.drain.track(current)  # ended with a 503 / error event at the drain deadline
        watch = op.watch = DisconnectWatch(
            current, req.receive, 0.0 if op.stream else WATCH_AFTER_S
        )
        upstream_started = 0.0
        try:
            principal = await gw.auth.authenticate(req)
            rec.set_caller(principal)
            plan = gw.router.plan(op.model, op.provider)
            rec.model = plan.model
            principal.check_model(plan.model)
            slot = gw.cache.open_slot(req, principal, plan, op)  # its lookup leaves now
            ticket = gw.traffic.admit_now(req, principal, plan, op)
            if ticket is LATER:  # counters in Redis: a reservation to await
                ticket = await gw.traffic.admit(req, principal, plan, op)
            op.ticket = ticket
            if slot is not None:
                op.cache = slot
                if await gw.cache.lookup(req, slot) is not None:
                    await gw.cache.replay(req, slot, op, rec)
                    return
            upstream_started = time.perf_counter()
            opened, target, adapter = await self._open(req, op, plan, rec)
            served = Served(opened, target, adapter, plan, upstream_started)
            rec.provider, rec.upstream_model = target.provider, target.model
            req.add_header("x-sluice-provider", target.provider)
            if op.stream and op.chat is not None:
                await self._stream(req, op, served, rec)
            else:
                await self._answer(req, op, served, rec)
        except GatewayError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            _error_headers(req, rec, upstream_started)
            raise
        except (asyncio.CancelledError, ClientGone):
            gone = watch.gone
            if not gone and gw.drain.claim(current):  # SPEC §6: drain deadline, no answer yet
                err = ended_error()
                rec.status, rec.error_code = err.status, err.code
                raise err from None
            if not gone or current is None:
                raise
            current.uncancel()  # the client left: not a shutdown, so finish accounting
            rec.status, rec.error_code = 499, "CLIENT_DISCONNECTED"
        except Exception:
            rec.status, rec.error_code = 500, "INTERNAL_ERROR"  # never a success row for a bug
            raise
        finally:
            gw.drain.untrack(current)
            watch.stop()
            if op.ticket is not None:
                op.ticket.settle(rec)
            rec.latency_ms = (time.perf_counter() - req.started) * 1000
            gw.usage.record(rec)

    async def _open(
        self, req: Request, op: Operation, plan: Plan, rec: UsageRecord
    ) -> tuple[Opened, Target, Adapter]:
        """Try the plan's targets in order inside one deadline (SPEC §6); first 2xx wins."""
        gw = self.gw
        deadline = time.monotonic() + gw.settings.server.upstream_timeout_s
        byok = req.headers.get("x-provider-key") if gw.settings.auth.byok else None
        last: GatewayError | None = None
        for target in gw.router.order(plan):
            adapter = gw.adapters[target.provider]
            key = byok or adapter.config.api_key
            if not key or not adapter.credentials_complete(adapter.config):
                last = GatewayError(
                    "PROVIDER_UNAVAILABLE",
                    f"provider {target.provider!r} has no credentials configured",
                )
                continue
            call = op.build(adapter, target.model, key)
            rec.provider, rec.upstream_model = target.provider, target.model  # failures too
            try:
                secrets = (key, adapter.config.api_key or "")
                meta = {
                    "team": rec.team,
                    "key_id": rec.key_id,
                    "user": rec.user,
                    "session": rec.session,
                }
                opened = await gw.upstream.open(
                    target.provider, adapter, call, deadline, secrets, meta
                )
            except GatewayError as exc:
                rec.attempts += exc.attempts
                if not exc.retryable:
                    raise
                gw.router.breakers.failure(target)
                last = exc
                continue
            rec.attempts += opened.attempts
            gw.router.breakers.success(target)
            gw.router.latency.observe(target, opened.headers_at - opened.started)
            return opened, target, adapter
        assert last is not None
        raise last

    async def _answer(self, req: Request, op: Operation, served: Served, rec: UsageRecord) -> None:
        """A non-streamed answer: read it, translate it, account it, send it."""
        opened, target, adapter, plan = served.opened, served.target, served.adapter, served.plan
        upstream_started = served.upstream_started
        data = await opened.read()
        upstream_s = time.perf_counter() - upstream_started
        body, usage = op.answer(adapter, data, plan.model)
        rec.set_usage(
            usage or self._estimate(op, 0), self.gw.prices.lookup(plan.model, target, plan.entry)
        )
        rec.overhead_ms = (time.perf_counter() - req.started - upstream_s) * 1000
        rec.ttfb_ms = (time.perf_counter() - req.started) * 1000
        req.add_header("x-sluice-overhead-ms", f"{rec.overhead_ms:.3f}")
        await req.respond(200, body)
        if op.cache is not None:
            self.gw.cache.store_answer(op.cache, target.provider, body, usage)

    async def _stream(self, req: Request, op: Operation, served: Served, rec: UsageRecord) -> None:
        """Relay a stream event by event; a failure after the first byte ends it with one
        error event and no [DONE] (SPEC §6)."""
        opened, target, adapter, plan = served.opened, served.target, served.adapter, served.plan
        upstream_started = served.upstream_started
        chat = op.chat
        assert chat is not None
        meter = StreamMeter()
        collector = op.cache.collector if op.cache is not None else None
        ticket = op.ticket if op.ticket is not None and op.ticket.budgets else None
        if op.relay is not None:
            pieces = op.relay(adapter, opened.chunks(), chat, plan.model, meter)
        else:
            pieces = adapter.chat_stream(opened.chunks(), chat, plan.model, meter)
        upstream_s = time.perf_counter() - upstream_started
        rec.overhead_ms = (time.perf_counter() - req.started - upstream_s) * 1000
        req.add_header("x-sluice-overhead-ms", f"{rec.overhead_ms:.3f}")
        await req.start_stream(200, SSE_HEADERS)
        price = self.gw.prices.lookup(plan.model, target, plan.entry)
        try:
            first, whole = True, False
            async for piece in pieces:
                if whole:  # the upstream's last bytes, read so its connection stays pooled
                    continue
                if first:
                    rec.ttfb_ms = (time.perf_counter() - req.started) * 1000
                    first = False
                if ticket is not None:
                    await ticket.check_stream(meter)  # a stream past its budget ends here
                await req.write(piece)
                if collector is not None:
                    collector.feed(piece)
                if meter.done:
                    # [DONE] is out: the answer is whole now, whatever the upstream's close
                    # does. Clients (the SDKs) hang up on [DONE], so the response ends here,
                    # and the cache stores it, before the upstream is read to its end.
                    whole = True
                    self._finish_stream(op, target.provider, meter)
                    await req.end()
            if not meter.done:
                raise GatewayError("NETWORK_ERROR", "upstream stream ended before it finished")
        except GatewayError as exc:
            if whole:
                return  # the upstream failed after its last event: the client has it all
            await self._end_stream(req, rec, op, exc)
        except asyncio.CancelledError:
            if whole:  # cancelled while reading the upstream's last bytes: nothing is lost
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                return
            if not self.gw.drain.claim(asyncio.current_task()):
                raise
            await self._end_stream(req, rec, op, ended_error())  # SPEC §6: drain deadline passed
        finally:
            rec.set_usage(meter.usage or self._estimate_stream(chat, meter), price)

    def _finish_stream(self, op: Operation, provider: str, meter: StreamMeter) -> None:
        """A stream whose [DONE] went out: stop watching the client (its leaving no longer
        cancels anything) and store the answer."""
        if op.watch is not None:
            op.watch.stop()
        if op.cache is not None:
            self.gw.cache.store_stream(op.cache, provider, meter)

    @staticmethod
    async def _end_stream(req: Request, rec: UsageRecord, op: Operation, exc: GatewayError) -> None:
        """End a started stream with one error event in the route's shape and no [DONE]."""
        rec.status, rec.error_code = exc.status, exc.code
        await req.write(op.stream_error(exc))
        await req.end()

    @staticmethod
    def _estimate(op: Operation, completion_chars: int) -> Usage:
        """A flagged estimate when the upstream reported no usage."""
        return Usage(
            prompt_tokens=tokenizer.estimate_chars(op.prompt_chars),
            completion_tokens=tokenizer.estimate_chars(completion_chars),
            estimated=True,
        )

    @staticmethod
    def _estimate_stream(chat: ChatRequest, meter: StreamMeter) -> Usage:
        completion = tokenizer.estimate_chars(meter.completion_chars) or meter.chunks
        return Usage(
            prompt_tokens=tokenizer.estimate_chars(len(chat.raw)),
            completion_tokens=completion,
            estimated=True,
        )


def _error_headers(req: Request, rec: UsageRecord, upstream_started: float) -> None:
    """SPEC §5: an error answer of a routed request still says who was tried and what the
    gateway added (time spent in upstream attempts excluded)."""
    sent = {name for name, _ in req.response_headers}
    if rec.provider and b"x-sluice-provider" not in sent:
        req.add_header("x-sluice-provider", rec.provider)
    if b"x-sluice-overhead-ms" not in sent:
        now = time.perf_counter()
        upstream_s = now - upstream_started if upstream_started else 0.0
        rec.overhead_ms = (now - req.started - upstream_s) * 1000
        req.add_header("x-sluice-overhead-ms", f"{rec.overhead_ms:.3f}")
