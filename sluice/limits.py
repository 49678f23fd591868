"""Admission control: rate limits (rpm, tpm, concurrent) and budgets, reserved in one call.

Rules come from config `limits`/`budgets` and from the caller's own `Principal.limits`
(a key's settings or JWT entitlements: rpm, tpm, concurrent, budget_usd, budget_period),
which apply at the caller's identity — its key id, else its user, else its team. Where
two rules land on one counter the smaller cap wins, so a request is never counted twice.

rpm and tpm are fixed one-minute windows (UTC wall clock, so every instance agrees on the
window); tpm reserves the prompt estimate plus `max_tokens` (or budgets.DEFAULT_MAX_TOKENS)
and settles to the real usage when the request ends. Every counter of a request is
reserved in one atomic `State.reserve` call: all pass or nothing moves, which is what makes
"N parallel requests against a limit of K admit exactly K" hold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import orjson

from sluice import budgets, tokenizer
from sluice.errors import GatewayError
from sluice.routing import Target
from sluice.state import Admission, Counter, MemoryState, State

if TYPE_CHECKING:
    from sluice.asgi import Request
    from sluice.auth import Principal
    from sluice.config import Price, Settings
    from sluice.pipeline import Operation
    from sluice.pricing import Prices
    from sluice.providers.base import StreamMeter
    from sluice.routing import Plan
    from sluice.usage import UsageRecord

_KINDS = ("rpm", "tpm", "concurrent")
_KEY_SCOPES = ("key", "team", "global")  # rules an admin's view of one key shows
_HEADER_NAMES: dict[str, tuple[bytes, bytes, bytes]] = {
    kind: (
        f"x-ratelimit-limit-{suffix}".encode(),
        f"x-ratelimit-remaining-{suffix}".encode(),
        f"x-ratelimit-reset-{suffix}".encode(),
    )
    for kind, suffix in (("rpm", "requests"), ("tpm", "tokens"))
}
_PLANS_MAX = 4096  # callers x models x minutes remembered; cleared when full
_P = TypeVar("_P")


class LimitCheck(NamedTuple):
    """One rate limit a request reserves on. Resolved once per caller, model and minute, so
    `counter` is a template: its key and cap are the request's, and for a concurrency limit
    the whole counter is; rpm and tpm counters get the request's amount and TTL per request."""

    kind: str  # rpm | tpm | concurrent
    scope: str
    cap: int
    counter: Counter
    cap_bytes: bytes  # the cap as its x-ratelimit-limit-* header value


def duration(ms: int) -> str:
    """A reset time in OpenAI's header style: "20ms", "17s", "6m0s"."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    s = math.ceil(ms / 1000)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60}s"


# A window's reset is at most a minute away: its header values, by whole seconds.
_RESETS = tuple(duration(s * 1000).encode() for s in range(61))


def reset_bytes(ms: int) -> bytes:
    """`duration(ms)` as a header value (table lookups for a window's whole seconds)."""
    if 1000 <= ms <= 60_000:
        return _RESETS[-(-ms // 1000)]
    return duration(ms).encode()


def native_max_tokens(body: bytes) -> int:
    """The output cap a native body asks for (OpenAI, Anthropic, Gemini names), else the default."""
    try:
        obj = orjson.loads(body) if body[:1] == b"{" else None
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        gen = obj.get("generationConfig")
        for value in (
            obj.get("max_completion_tokens"),
            obj.get("max_tokens"),
            obj.get("max_output_tokens"),
            gen.get("maxOutputTokens") if isinstance(gen, dict) else None,
        ):
            if isinstance(value, int) and value > 0:
                return value
    return budgets.DEFAULT_MAX_TOKENS


def identity(scope: str, principal: Principal, req: Request | None, model: str) -> str | None:
    """Who a rule of `scope` counts for this request (None: the rule does not apply; without
    a request, as for an admin's view of a key, ip rules do not)."""
    if scope == "key":
        return principal.key_id
    if scope == "team":
        return principal.team
    if scope == "user":
        return principal.user
    if scope == "session":
        return principal.session
    if scope == "ip":
        return (req.client_ip or None) if req is not None else None
    if scope == "model":
        return model
    return "*"


def own_identity(principal: Principal) -> tuple[str, str] | None:
    """The scope and id a caller's own limits apply at."""
    if principal.key_id:
        return "key", principal.key_id
    if principal.user:
        return "user", principal.user
    if principal.team:
        return "team", principal.team
    return None


class Later(Enum):
    """`Traffic.admit_now`'s "cannot answer at once": await `Traffic.admit` instead."""

    LATER = "later"


LATER = Later.LATER


class _Plans(dict[tuple[Any, ...], _P]):
    """What rules resolved to, by caller and what else they depend on; cleared when full
    (keys carry the minute or the day, so old ones are never asked for again)."""

    def put(self, key: tuple[Any, ...], plan: _P) -> _P:
        """Remember `plan` for `key` and return it."""
        if len(self) >= _PLANS_MAX:
            self.clear()
        self[key] = plan
        return plan


def _caller(principal: Principal, req: Request | None, by_ip: bool) -> tuple[Any, ...]:
    """Everything about the caller that decides which counters its rules land on."""
    ip = req.client_ip if req is not None and by_ip else None
    return (principal.key_id, principal.team, principal.user, principal.session, ip)


# `LimitPlan.steps` amounts that vary per request: the request's tokens (tpm), its cost in
# nano-USD (a budget)
_TOKENS, _NANO = 0, -1


@dataclass(slots=True)
class LimitPlan:
    """The limits and budgets one caller's requests for one model land on in one minute,
    resolved once (`Traffic._resolve`) with what every such request reuses: the counters as
    reserved (rpm and concurrent as they are; each tpm counter takes the request's tokens,
    each budget its cost) and which limits its x-ratelimit-* headers report.

    An rpm or tpm counter's TTL is the time left in the minute when the plan was resolved:
    a counter first reserved later in the minute expires a little after the minute ends,
    never before it, and no later request uses it, since its key names its minute. A budget
    counter's names its period and outlives it by budgets.HOUR_MS."""

    checks: list[LimitCheck]
    counters: list[Counter]  # the limits' (budgets' are in `budgets`)
    tpm: list[int]  # indexes of the tpm counters
    budgets: list[budgets.BudgetCheck] = field(default_factory=list)  # counters: amount 0
    # In-process backend: the live slot (`MemoryState.live_slot`) of each limit's counter,
    # then each budget's, fetched on the plan's first request, so later requests count
    # without a lookup (`take_now`).
    slots: list[list[float]] | None = None
    # Per slot, what `take_now` needs: cap, amount (or _TOKENS, _NANO), and for a gauge
    # the seconds it stays alive (0.0 otherwise)
    steps: list[tuple[int, int, float]] = field(init=False)
    # Per kind with x-ratelimit-* headers: the header names and its limits (check index,
    # cap, the cap as a header value), the first apart; with several, the one with the least
    # left is shown
    headed: list[
        tuple[tuple[bytes, bytes, bytes], tuple[int, int, bytes], list[tuple[int, int, bytes]]]
    ] = field(init=False)
    # What a settlement may move: (check index, whether it is a concurrency gauge) for the
    # concurrent and tpm checks
    settled: list[tuple[int, bool]] = field(init=False)

    def __post_init__(self) -> None:
        self.steps = [
            (cap, _TOKENS if i in self.tpm else amount, -ttl / 1000 if ttl < 0 else 0.0)
            for i, (_, amount, cap, ttl) in enumerate(self.counters)
        ] + [(b.counter.cap, _NANO, 0.0) for b in self.budgets]
        self.headed = []
        for kind, names in _HEADER_NAMES.items():
            limits = [(i, c.cap, c.cap_bytes) for i, c in enumerate(self.checks) if c.kind == kind]
            if limits:
                self.headed.append((names, limits[0], limits[1:]))
        self.settled = [
            (i, c.kind == "concurrent")
            for i, c in enumerate(self.checks)
            if c.kind in ("concurrent", "tpm")
        ]

    def counters_for(self, tokens: int, nano: int) -> list[Counter]:
        """A request's counters: the plan's, with its `tokens` on tpm, then the budgets'
        with its cost `nano` (a new list)."""
        counters = self.counters.copy()
        for i in self.tpm:
            key, _, cap, ttl = counters[i]
            counters[i] = Counter(key, tokens, cap, ttl)
        for b in self.budgets:
            counters.append(Counter(b.counter.key, nano, b.counter.cap, b.counter.ttl_ms))
        return counters

    def take_now(
        self, slots: list[list[float]], tokens: int, nano: int
    ) -> list[tuple[bytes, bytes]] | int | None:
        """`MemoryState.reserve_now` of `counters_for(tokens, nano)` on the live `slots`,
        all or nothing, without lookups; the request's x-ratelimit-* headers when every
        counter took it. An int: the index of the first counter it would take past its cap
        (nothing moved). None: a slot has expired (a window ended, a gauge idle past its
        TTL; nothing moved), so the caller fetches fresh ones."""
        now = time.monotonic()
        steps = self.steps
        # (amount > 0: fixed; 0: _TOKENS; else _NANO, written out: this runs per request)
        for slot, (cap, amount, _) in zip(slots, steps, strict=True):
            if 0 < slot[1] <= now:
                return None
            if slot[0] + (amount if amount > 0 else tokens if amount == 0 else nano) > cap:
                return next(i for i, s in enumerate(slots) if s is slot)
        for slot, (_, amount, alive_s) in zip(slots, steps, strict=True):
            slot[0] += amount if amount > 0 else tokens if amount == 0 else nano
            if alive_s:  # a gauge: alive while busy
                slot[1] = now + alive_s
        return self.headers(slots, now)

    def headers(self, slots: Sequence[Sequence[float]], now: float) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* headers for the tightest rpm and tpm limits, from each
        check's [value, expiry] (monotonic seconds, as slots hold them) at `now`."""
        out: list[tuple[bytes, bytes]] = []
        for (limit, remaining, reset), (i, cap, cap_bytes), others in self.headed:
            left = cap - int(slots[i][0])
            for j, other_cap, other_bytes in others:  # several of a kind: the tightest
                other_left = other_cap - int(slots[j][0])
                if other_left < left:
                    i, cap_bytes, left = j, other_bytes, other_left
            out += (
                (limit, cap_bytes),
                (remaining, b"%d" % (left if left > 0 else 0)),
                (reset, reset_bytes(round((slots[i][1] - now) * 1000))),
            )
        return out


_NO_LIMITS = LimitPlan([], [], [])
# A ticket whose reservation was made by `LimitPlan.take_now` (settled on its slots).
_TAKEN = Admission(True, -1, [], [])


@dataclass(slots=True)
class Ticket:
    """One admitted request's reservations, settled once when the request ends."""

    state: State
    plan: LimitPlan
    budgets: list[budgets.BudgetCheck]
    admission: Admission
    est_tokens: int
    est_nano: int
    price: Price | None
    reserved_out: int
    slots: list[list[float]] | None = None  # in-process: the live slots (LimitPlan.slots)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The x-ratelimit-* headers of a reservation made by key (`admission`)."""
        adm = self.admission  # as slots: [value, seconds to expiry] at time 0
        slots = [(v, t / 1000) for v, t in zip(adm.values, adm.ttls, strict=True)]
        return self.plan.headers(slots, 0.0)

    async def check_stream(self, meter: StreamMeter) -> None:
        """Mid-stream: past the reserved output, reserve more or end it with BUDGET_EXCEEDED."""
        if not self.budgets or self.price is None:
            return
        if meter.usage is not None:
            prompt, out = meter.usage.prompt_tokens, meter.usage.completion_tokens
        else:
            prompt = self.est_tokens - self.reserved_out
            out = tokenizer.estimate_chars(meter.completion_chars) or meter.chunks
        spent = budgets.nano_cost(prompt, out, self.price)
        if spent <= self.est_nano:
            return
        # Reserve at least as much again as the request asked for, so this is rare per stream.
        more = max(self.reserved_out, 64)
        amount = max(spent - self.est_nano, budgets.nano_cost(0, more, self.price))
        adm = await self.state.reserve(
            [Counter(b.counter.key, amount, b.counter.cap, b.counter.ttl_ms) for b in self.budgets]
        )
        if not adm.ok:
            raise budget_error(self.budgets[adm.failed], adm.values[0])
        self.reserved_out += more
        self.est_nano += amount

    def settle(self, rec: UsageRecord) -> None:
        """Release in-flight slots and move tokens and spend from the estimate to the real."""
        real_tokens = 0 if rec.cache_hit else rec.prompt_tokens + rec.completion_tokens
        tokens = real_tokens - self.est_tokens
        # (check index, delta): a gauge gives back its slot; tpm moves to the real tokens
        moves = [(i, -1 if gauge else tokens) for i, gauge in self.plan.settled if gauge or tokens]
        spent = 0  # nano-USD to move on each budget
        if self.budgets:
            real = 0
            if not rec.cache_hit and rec.cost_usd is not None:
                real = math.ceil(rec.cost_usd * budgets.NANO)
            spent = real - self.est_nano
        slots = self.slots
        if slots is not None:  # reserved by LimitPlan.take_now (in-process)
            for i, delta in moves:  # MemoryState.adjust on the held slots, without lookups
                slot = slots[i]
                slot[0] = max(0, slot[0] + delta)
            if spent:
                for slot in slots[len(self.plan.checks) :]:
                    slot[0] = max(0, slot[0] + spent)
            return
        checks = self.plan.checks
        deltas = [(checks[i].counter.key, delta) for i, delta in moves]
        if spent:
            deltas += [(b.counter.key, spent) for b in self.budgets]
        if deltas:
            self.state.adjust(deltas, self.admission.local)


def _worst_cost(model: str, prices: list[Price | None], prompt: int, out: int) -> tuple[Price, int]:
    """The worst price among a plan's targets and the request's cost at it in nano-USD;
    403 when a price is unknown (a budget cannot be kept without one)."""
    price = budgets.worst_price(prices)
    if price is None:
        raise GatewayError(
            "FORBIDDEN",
            f"model {model!r} has no known price, so it cannot be used under a "
            "budget (configure models[].price)",
            param="model",
        )
    return price, budgets.nano_cost(prompt, out, price)


def _refusal(limits: LimitPlan, failed: int, value: int, ttl_ms: int) -> GatewayError:
    """The 429 for the counter at index `failed` of `limits.counters_for(...)`."""
    if failed < len(limits.checks):
        return limit_error(limits.checks[failed], value, ttl_ms)
    return budget_error(limits.budgets[failed - len(limits.checks)], value)


def budget_error(b: budgets.BudgetCheck, spent_nano: int) -> GatewayError:
    """429 BUDGET_EXCEEDED naming the budget and when its period resets."""
    resets = b.period.resets_at
    when = resets.isoformat().replace("+00:00", "Z") if resets else "never (total budget)"
    headers = {}
    if resets is not None:
        wait = (resets - budgets.utcnow()).total_seconds()
        headers = {"retry-after": str(max(1, math.ceil(wait))), "x-sluice-budget-reset": when}
    return GatewayError(
        "BUDGET_EXCEEDED",
        f"{b.scope} budget of ${b.usd:g} is spent (${spent_nano / budgets.NANO:.6f} used); "
        f"resets at {when}",
        headers=headers,
    )


def limit_error(c: LimitCheck, value: int, ttl_ms: int) -> GatewayError:
    """429 RATE_LIMITED with Retry-After and the limit's x-ratelimit-* headers."""
    retry_ms = 1000 if c.kind == "concurrent" or ttl_ms < 0 else ttl_ms
    headers = {"retry-after": str(max(1, math.ceil(retry_ms / 1000)))}
    if c.kind != "concurrent":
        suffix = "requests" if c.kind == "rpm" else "tokens"
        headers[f"x-ratelimit-limit-{suffix}"] = str(c.cap)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, c.cap - value))
        headers[f"x-ratelimit-reset-{suffix}"] = duration(retry_ms)
    what = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrent": "concurrent"}
    return GatewayError(
        "RATE_LIMITED", f"rate limit reached: {c.cap} {what[c.kind]} per {c.scope}", headers=headers
    )


class Traffic:
    """Builds each request's reservations from the rules and settles them afterwards."""

    def __init__(self, settings: Settings, state: State, prices: Prices) -> None:
        self.state = state
        self.prices = prices
        self.limit_rules: list[tuple[str, str, int]] = [
            (r.scope, kind, int(cap))
            for r in settings.limits
            for kind in _KINDS
            if (cap := getattr(r, kind)) is not None
        ]
        self.budget_rules: list[tuple[str, float, str]] = [
            (b.scope, b.usd, b.period) for b in settings.budgets
        ]
        self.inflight_ttl_ms = int((settings.server.upstream_timeout_s + 60) * 1000)
        # In-process counters answer at once: called directly, without a coroutine.
        self._memory = state if isinstance(state, MemoryState) else None
        self._by_ip = any(r[0] == "ip" for r in (*self.limit_rules, *self.budget_rules))
        # Which counters a caller's request lands on, per caller, model and minute: the
        # rules are resolved once, not on every request.
        self._plans: _Plans[LimitPlan] = _Plans()

    def _limits(self, req: Request | None, principal: Principal, model: str) -> LimitPlan:
        """The limits and budgets a request lands on, resolved once per caller, model and
        minute."""
        now_ms = int(time.time() * 1000)
        window = now_ms // 60_000
        own = principal.limits
        ck = (
            _caller(principal, req, self._by_ip),
            model,
            window,
            *(
                (
                    own.get("rpm"),
                    own.get("tpm"),
                    own.get("concurrent"),
                    own.get("budget_usd"),
                    own.get("budget_period"),
                )
                if own
                else ()
            ),
        )
        plan = self._plans.get(ck)
        if plan is None:
            ttl = 60_000 - now_ms % 60_000
            plan = self._plans.put(ck, self._resolve(req, principal, model, window, ttl))
        return plan

    def _resolve(
        self, req: Request | None, principal: Principal, model: str, window: int, ttl: int
    ) -> LimitPlan:
        """Every limit a request lands on, with its counter as reserved (see LimitPlan)."""
        caps: dict[tuple[str, str, str], int] = {}
        for scope, kind, cap in self.limit_rules:
            ident = identity(scope, principal, req, model)
            if ident is not None:
                k = (kind, scope, ident)
                caps[k] = min(cap, caps.get(k, cap))
        own = own_identity(principal) if principal.limits else None
        if own is not None:
            for kind in _KINDS:
                own_cap = principal.limits.get(kind)
                if isinstance(own_cap, int | float):
                    k = (kind, *own)
                    caps[k] = min(int(own_cap), caps.get(k, int(own_cap)))
        plan_budgets = self._budget_checks(req, principal) if model else []
        if not caps and not plan_budgets:
            return _NO_LIMITS
        checks = []
        for (kind, scope, ident), cap in caps.items():
            if kind == "concurrent":  # one slot, kept alive while busy
                counter = Counter(f"c:{scope}:{ident}", 1, cap, -self.inflight_ttl_ms)
            else:
                counter = Counter(f"{kind[0]}:{scope}:{ident}:{window}", 1, cap, ttl)
            checks.append(LimitCheck(kind, scope, cap, counter, b"%d" % cap))
        tpm = [i for i, c in enumerate(checks) if c.kind == "tpm"]
        return LimitPlan(checks, [c.counter for c in checks], tpm, plan_budgets)

    def _budget_checks(
        self, req: Request | None, principal: Principal
    ) -> list[budgets.BudgetCheck]:
        """The caller's budgets for the current period (counters with amount 0)."""
        now = budgets.utcnow()
        return [
            budgets.budget_check(s, i, usd, k, 0, now)
            for (s, i, k), usd in self._budget_rules(req, principal).items()
        ]

    def _budget_rules(
        self, req: Request | None, principal: Principal
    ) -> dict[tuple[str, str, str], float]:
        rules: dict[tuple[str, str, str], float] = {}
        for scope, usd, kind in self.budget_rules:
            ident = identity(scope, principal, req, "")
            if ident is not None:
                rules[(scope, ident, kind)] = min(usd, rules.get((scope, ident, kind), usd))
        own = own_identity(principal) if principal.limits else None
        usd_own: Any = principal.limits.get("budget_usd") if own else None
        if own is not None and isinstance(usd_own, int | float):
            kind = str(principal.limits.get("budget_period") or "month")
            k = (*own, kind)
            rules[k] = min(float(usd_own), rules.get(k, float(usd_own)))
        return rules

    def admit_now(
        self, req: Request, principal: Principal, plan: Plan, op: Operation
    ) -> Ticket | Later | None:
        """`admit` without a coroutine when it can answer at once: nothing applies, or
        in-process counters (the default set-up). LATER: await `admit` (Redis)."""
        if not (self.limit_rules or self.budget_rules or principal.limits):
            return None
        memory = self._memory
        if memory is None:
            return LATER
        out = (op.chat.max_tokens or budgets.DEFAULT_MAX_TOKENS) if op.chat is not None else 0
        prompt = tokenizer.estimate_chars(op.prompt_chars)
        limits = self._limits(req, principal, plan.model)
        if not limits.checks and not limits.budgets:
            return None
        price, nano = None, 0
        if limits.budgets:
            prices = [self.prices.lookup(plan.model, t, plan.entry) for t in plan.targets]
            price, nano = _worst_cost(plan.model, prices, prompt, out)
        return self._take(memory, req, limits, prompt + out, nano, price, out)

    async def admit(
        self, req: Request, principal: Principal, plan: Plan, op: Operation
    ) -> Ticket | None:
        """Reserve the request's limits and budgets, or raise 429 (None: nothing applies)."""
        if not (self.limit_rules or self.budget_rules or principal.limits):
            return None
        if self._memory is not None:
            ticket = self.admit_now(req, principal, plan, op)
            assert ticket is not LATER  # in-process: always answered at once
            return ticket
        out = (op.chat.max_tokens or budgets.DEFAULT_MAX_TOKENS) if op.chat is not None else 0
        prompt = tokenizer.estimate_chars(op.prompt_chars)

        def prices() -> list[Price | None]:
            return [self.prices.lookup(plan.model, t, plan.entry) for t in plan.targets]

        return await self.reserve(req, principal, plan.model, prices, prompt, out)

    async def admit_native(
        self, req: Request, principal: Principal, provider: str, model: str | None, body: bytes
    ) -> Ticket | None:
        """Admission for a native pass-through request; without a model nothing is spent,
        so only rpm and concurrent limits apply."""
        if not (self.limit_rules or self.budget_rules or principal.limits):
            return None
        out = native_max_tokens(body) if model else 0
        prompt = tokenizer.estimate_chars(len(body))

        def prices() -> list[Price | None]:
            return [self.prices.lookup(model, Target(provider, model))] if model else []

        return await self.reserve(req, principal, model or "", prices, prompt, out)

    async def reserve(
        self,
        req: Request,
        principal: Principal,
        model: str,
        prices: Callable[[], list[Price | None]],
        prompt: int,
        out: int,
    ) -> Ticket | None:
        """Reserve `prompt` + `out` tokens and their worst cost at `prices()` on every rule
        (no budget without a model: nothing is spent)."""
        limits = self._limits(req, principal, model)
        if not limits.checks and not limits.budgets:
            return None
        price, nano = None, 0
        if limits.budgets:
            price, nano = _worst_cost(model, prices(), prompt, out)
        memory = self._memory
        if memory is not None:
            return self._take(memory, req, limits, prompt + out, nano, price, out)
        counters = limits.counters_for(prompt + out, nano)
        adm = await self.state.reserve(counters)
        if not adm.ok:
            raise _refusal(limits, adm.failed, adm.values[0], adm.ttls[0])
        ticket = Ticket(self.state, limits, limits.budgets, adm, prompt + out, nano, price, out)
        req.response_headers += ticket.headers()
        return ticket

    @staticmethod
    def _take(
        memory: MemoryState,
        req: Request,
        limits: LimitPlan,
        tokens: int,
        nano: int,
        price: Price | None,
        out: int,
    ) -> Ticket:
        """`reserve` on the in-process backend, on the plan's live slots."""
        slots = limits.slots
        taken = limits.take_now(slots, tokens, nano) if slots is not None else None
        if taken is None:  # the plan's first request, or a slot expired: fetch live ones
            slots = limits.slots = [
                memory.live_slot(c.key, c.ttl_ms)
                for c in (*limits.counters, *(b.counter for b in limits.budgets))
            ]
            taken = limits.take_now(slots, tokens, nano)
        if taken is None:  # expired again at once (a window ending this very ms): by key
            adm = memory.reserve_now(limits.counters_for(tokens, nano))
            if not adm.ok:
                raise _refusal(limits, adm.failed, adm.values[0], adm.ttls[0])
            ticket = Ticket(memory, limits, limits.budgets, adm, tokens, nano, price, out)
            req.response_headers += ticket.headers()
            return ticket
        assert slots is not None
        if isinstance(taken, int):
            slot = slots[taken]
            ttl_ms = int((slot[1] - time.monotonic()) * 1000) if slot[1] else -1
            raise _refusal(limits, taken, int(slot[0]), ttl_ms)
        req.response_headers += taken  # admitted on the held slots
        return Ticket(memory, limits, limits.budgets, _TAKEN, tokens, nano, price, out, slots)

    async def describe(self, req: Request, principal: Principal, plan: Plan) -> dict[str, Any]:
        """What is left of the caller's limits and budgets for `plan`, reserving nothing."""
        return await self._peek(
            self._limits(req, principal, plan.model).checks, self._budget_rules(req, principal)
        )

    async def describe_key(self, principal: Principal) -> dict[str, Any]:
        """A key's live limits and budgets, reserving nothing: the rules that count per key,
        per team or globally (per-request scopes such as ip, session or model are left out)."""
        limits = [c for c in self._limits(None, principal, "").checks if c.scope in _KEY_SCOPES]
        rules = self._budget_rules(None, principal)
        return await self._peek(limits, {k: v for k, v in rules.items() if k[0] in _KEY_SCOPES})

    async def _peek(
        self, limits: list[LimitCheck], rules: dict[tuple[str, str, str], float]
    ) -> dict[str, Any]:
        checks = [
            budgets.budget_check(s, i, usd, k, 0, budgets.utcnow())
            for (s, i, k), usd in rules.items()
        ]
        keys = [c.counter.key for c in limits] + [b.counter.key for b in checks]
        seen = await self.state.peek(keys)
        out_limits = [
            {
                "scope": c.scope,
                "kind": c.kind,
                "limit": c.cap,
                "remaining": max(0, c.cap - value),
                "reset_s": round(ttl / 1000, 3) if ttl >= 0 and c.kind != "concurrent" else None,
            }
            for c, (value, ttl) in zip(limits, seen, strict=False)
        ]
        out_budgets = [
            {
                "scope": b.scope,
                "per": per,  # day | week | month | total
                "period": b.period.key,  # which one: d20261123, m202611, ...
                "usd": b.usd,
                "spent_usd": value / budgets.NANO,
                "remaining_usd": max(0.0, b.usd - value / budgets.NANO),
                "resets_at": b.period.resets_at.isoformat() if b.period.resets_at else None,
            }
            for b, per, (value, _) in zip(
                checks, (k for _, _, k in rules), seen[len(limits) :], strict=False
            )
        ]
        return {"limits": out_limits, "budgets": out_budgets}
