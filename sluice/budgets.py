"""Spend ceilings in USD per key/team/user/global and period (SPEC §2, §7).

Money is counted in integer nano-dollars so Redis's INCRBY and Lua's doubles stay exact (up
to $9M per counter). A request reserves its worst case — prompt estimate plus `max_tokens`
(or DEFAULT_MAX_TOKENS) at the highest price among its plan's targets — and settles to its
real cost afterwards.

A model with no known price cannot be held to a budget: a request to it from a caller under
a budget is refused with 403 FORBIDDEN naming the model (add `price:` to its models entry).
Callers under no budget may still use it; its cost is recorded as unknown (SPEC §5).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

from sluice.config import Price
from sluice.state import Counter

NANO = 1_000_000_000
DEFAULT_MAX_TOKENS = 4096  # reserved output when a request sets no max_tokens
HOUR_MS = 3_600_000  # budget counters outlive their period by this much


class Period(NamedTuple):
    """One budget period: its counter suffix and when it resets (None for `total`)."""

    key: str
    resets_at: datetime | None


def period(kind: str, now: datetime) -> Period:
    """The current day/week/month/total period in UTC."""
    return _period(kind, now.date().toordinal())


@lru_cache(maxsize=64)
def _period(kind: str, ordinal: int) -> Period:
    # Cached per day: the period math and its formatting cost more than the rest of admission.
    day = datetime.fromordinal(ordinal).replace(tzinfo=UTC)
    if kind == "day":
        return Period(f"d{day:%Y%m%d}", day + timedelta(days=1))
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return Period(f"w{start:%Y%m%d}", start + timedelta(days=7))
    if kind == "month":
        start = day.replace(day=1)
        nxt = (start + timedelta(days=32)).replace(day=1)
        return Period(f"m{start:%Y%m}", nxt)
    return Period("total", None)


def nano_cost(prompt_tokens: int, completion_tokens: int, price: Price) -> int:
    """Worst-case cost in nano-USD (rounded up, so a reservation never falls short)."""
    usd_per_mtok = prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok
    return math.ceil(usd_per_mtok * 1000)


def worst_price(prices: list[Price | None]) -> Price | None:
    """The highest input and output rates among a plan's targets; None if any is unknown."""
    if not prices or None in prices:
        return None
    if len(prices) == 1:
        return prices[0]
    known = [p for p in prices if p is not None]
    return Price(
        input_per_mtok=max(p.input_per_mtok for p in known),
        output_per_mtok=max(p.output_per_mtok for p in known),
    )


class BudgetCheck(NamedTuple):
    """A budget a request reserves against."""

    scope: str
    ident: str
    usd: float
    period: Period
    counter: Counter


def budget_check(
    scope: str, ident: str, usd: float, kind: str, amount: int, now: datetime
) -> BudgetCheck:
    """The counter for one budget and this request's reservation on it."""
    p = period(kind, now)
    ttl = 0
    if p.resets_at is not None:
        ttl = int((p.resets_at.timestamp() - now.timestamp()) * 1000) + HOUR_MS
    counter = Counter(f"b:{scope}:{ident}:{p.key}", amount, int(usd * NANO), ttl)
    return BudgetCheck(scope, ident, usd, p, counter)


def utcnow() -> datetime:
    """The current time in UTC (budget periods are UTC)."""
    return datetime.now(UTC)
