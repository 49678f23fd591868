"""The usage record every request produces, and where it goes.

The pipeline fills one `UsageRecord` per request and hands it to `UsageSink.record()` in a
`finally`, so failures, rejections and client disconnects are recorded too.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any

import orjson

from sluice.config import Price
from sluice.providers.base import Usage


@dataclass(slots=True)
class UsageRecord:
    """One request's accounting (keys never appear here: only key ids)."""

    ts: float
    request_id: str
    method: str
    path: str
    status: int = 200
    error_code: str | None = None
    model: str | None = None  # as requested
    upstream_model: str | None = None
    provider: str | None = None
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    session: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float | None = None
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    overhead_ms: float | None = None
    cache_hit: bool = False
    attempts: int = 0
    stream: bool = False

    def set_usage(self, usage: Usage, price: Price | None) -> None:
        """Tokens and cost; cost stays None when the price is unknown (never $0)."""
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens
        self.cached_tokens = usage.cached_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        self.tokens_estimated = usage.estimated
        self.cost_usd = cost(usage, price)

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (for logs and storage)."""
        return asdict(self)


def cost(usage: Usage, price: Price | None) -> float | None:
    """USD for `usage` at `price`; None when the price is unknown."""
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_rate = price.cached_input_per_mtok
    if cached_rate is None:
        cached_rate = price.input_per_mtok
    fresh = usage.prompt_tokens - cached
    return (
        fresh * price.input_per_mtok
        + cached * cached_rate
        + usage.completion_tokens * price.output_per_mtok
    ) / 1_000_000


def new_record(request_id: str, method: str, path: str) -> UsageRecord:
    """A record for a request that just arrived."""
    return UsageRecord(ts=time.time(), request_id=request_id, method=method, path=path)


class UsageSink:
    """Receives finished records: writes the audit line (seeds 000, 004)."""

    def __init__(self, audit: bool, out: IO[bytes] | None = None) -> None:
        self.audit = audit
        self._out = out if out is not None else sys.stdout.buffer
        self.recorded = 0

    def record(self, rec: UsageRecord) -> None:
        """Account one finished request; never raises into the request path."""
        self.recorded += 1
        if self.audit:
            try:
                self._out.write(orjson.dumps({"type": "audit", **rec.as_dict()}) + b"\n")
                self._out.flush()
            except (OSError, ValueError):
                pass

    async def close(self) -> None:
        """Flush whatever is pending (at shutdown)."""
        try:
            self._out.flush()
        except (OSError, ValueError):
            pass
