"""Prometheus metrics, fed from finished usage records off the hot path.

Labels are bounded: provider, model, team, status/code; never a request id or a key.
With `--workers N`, `sluice serve` sets PROMETHEUS_MULTIPROC_DIR and every worker's values
live in shared files that `render()` aggregates (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_LIMIT_CODES = frozenset({"RATE_LIMITED", "BUDGET_EXCEEDED"})
_PMT = ("provider", "model", "team")


def multiprocess() -> bool:
    """Whether prometheus-client runs in multiprocess mode (several workers)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def observe_many(hist: Any, values: list[float]) -> None:
    """`hist.observe(v)` for each of `values` (a labelled Histogram), with one increment per
    bucket reached and one for the sum: `observe` takes two locks a value (~2.5 µs here,
    2026-12-02; three a request), this ~0.25 µs a value. It reads prometheus-client's
    Histogram internals (`_upper_bounds`, `_buckets`, `_sum`, single- and multiprocess
    alike); tests/test_metrics.py checks the exposition against `observe`'s, and without
    them this falls back to `observe`."""
    try:
        bounds, buckets, total = hist._upper_bounds, hist._buckets, hist._sum
    except AttributeError:
        for v in values:
            hist.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bound >= v, as `observe` finds it
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    total.inc(sum(values))


class Metrics:
    """Every metric the gateway exports, on a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess()
        self.registry = CollectorRegistry()
        # In multiprocess mode values live in files; registering would double-count them.
        r = None if self.multiprocess else self.registry

        def counter(name: str, doc: str, labels: Iterable[str]) -> Counter:
            return Counter(name, doc, list(labels), registry=r)

        def histogram(name: str, doc: str, labels: Iterable[str], buckets: Any) -> Histogram:
            return Histogram(name, doc, list(labels), buckets=buckets, registry=r)

        self.requests = counter("sluice_requests", "Requests by status", (*_PMT, "status"))
        self.errors = counter("sluice_errors", "Failed requests by error code", (*_PMT, "code"))
        self.latency = histogram(
            "sluice_request_duration_seconds", "Whole request", ("provider", "model"), _LATENCY
        )
        self.first_byte = histogram(
            "sluice_first_byte_seconds", "Time to first byte", ("provider", "model"), _LATENCY
        )
        self.overhead = histogram(
            "sluice_overhead_seconds", "Time the gateway itself added", ("provider",), _OVERHEAD
        )
        self.tokens = counter("sluice_tokens", "Tokens by type", (*_PMT, "type"))
        self.estimated = counter("sluice_tokens_estimated_requests", "Usage estimated", _PMT)
        self.cost = counter("sluice_cost_usd", "Spend in USD (priced models)", _PMT)
        self.cache_hits = counter("sluice_cache_hits", "Answers from the cache", _PMT)
        self.limited = counter("sluice_limit_rejections", "Limit rejections", ("team", "code"))
        self.attempts = counter("sluice_upstream_attempts", "Upstream attempts", ("provider",))
        self.retries = counter("sluice_upstream_retries", "Upstream retries", ("provider",))
        self.available = Gauge(
            "sluice_provider_available",
            "1 when a provider has credentials",
            ["provider"],
            registry=r,
            multiprocess_mode="max",
        )
        self.usage_queued = counter("sluice_usage_records_queued", "Records queued", ())
        self.usage_written = counter("sluice_usage_records_written", "Rows in storage", ())
        self.usage_spooled = counter("sluice_usage_records_spooled", "Rows spooled", ())
        self.usage_dropped = counter("sluice_usage_records_dropped", "Records lost", ())
        if not self.multiprocess:
            ProcessCollector(registry=self.registry)  # memory, CPU, open fds of this process
        self._children: dict[tuple[str, str, str, int, str | None], Any] = {}

    def set_available(self, providers: dict[str, bool]) -> None:
        """Provider availability (credentials present)."""
        for name, ok in providers.items():
            self.available.labels(name).set(1 if ok else 0)

    def _labelled(self, row: dict[str, Any]) -> Any:
        """Cached label children: `.labels()` costs more than the increment itself."""
        code = row["error_code"]
        key = (row["provider"] or "", row["model"] or "", row["team"] or "", row["status"], code)
        c = self._children.get(key)
        if c is None:
            p, m, t = key[0], key[1], key[2]
            c = (
                self.requests.labels(p, m, t, str(key[3])),
                self.errors.labels(p, m, t, code) if code else None,
                self.latency.labels(p, m),
                self.first_byte.labels(p, m),
                self.overhead.labels(p),
                self.tokens.labels(p, m, t, "prompt"),
                self.tokens.labels(p, m, t, "completion"),
                self.tokens.labels(p, m, t, "cached"),
                self.cost.labels(p, m, t),
                self.attempts.labels(p),
                self.retries.labels(p),
            )
            if len(self._children) < 10_000:  # bounded even if models are arbitrary
                self._children[key] = c
        return c

    def observe(self, row: dict[str, Any]) -> None:
        """Count one finished request, from its (scrubbed) storage row."""
        self.observe_batch([row])

    def observe_batch(self, rows: list[dict[str, Any]]) -> None:
        """Count finished requests, from their (scrubbed) storage rows: counters summed and
        histogram values gathered per label set first, so a batch of like requests costs one
        increment per counter and histogram bucket (each takes a lock), not one per request."""
        sums: dict[int, list[Any]] = {}
        timings: dict[int, tuple[Any, list[float]]] = {}  # per histogram child: its values

        def timing(hist: Any, ms: float) -> None:
            seen = timings.get(id(hist))
            if seen is None:
                seen = timings[id(hist)] = (hist, [])
            seen[1].append(ms / 1000)

        for row in rows:
            children = self._labelled(row)
            timing(children[2], row["latency_ms"])
            if row["ttfb_ms"] is not None:
                timing(children[3], row["ttfb_ms"])
            if row["overhead_ms"] is not None:
                timing(children[4], row["overhead_ms"])
            acc = sums.get(id(children))
            if acc is None:
                acc = sums[id(children)] = [children, 0, 0, 0, 0, 0.0, 0, 0]
            acc[1] += 1
            acc[2] += row["prompt_tokens"]
            acc[3] += row["completion_tokens"]
            acc[4] += row["cached_tokens"]
            acc[5] += row["cost_usd"] or 0.0
            acc[6] += row["attempts"]
            acc[7] += max(0, row["attempts"] - 1)
            if row["error_code"] in _LIMIT_CODES:
                self.limited.labels(row["team"] or "", row["error_code"]).inc()
            pmt = (row["provider"] or "", row["model"] or "", row["team"] or "")
            if row["tokens_estimated"]:
                self.estimated.labels(*pmt).inc()
            if row["cache_hit"]:
                self.cache_hits.labels(*pmt).inc()
        for (
            req,
            err,
            _,
            _,
            _,
            tp,
            tc,
            tca,
            cost,
            att,
            ret,
        ), n, p, c, ca, usd, a, r in sums.values():
            req.inc(n)
            if err is not None:
                err.inc(n)
            for counter, amount in ((tp, p), (tc, c), (tca, ca), (cost, usd), (att, a), (ret, r)):
                if amount:
                    counter.inc(amount)
        for hist, values in timings.values():
            observe_many(hist, values)

    def render(self) -> bytes:
        """The Prometheus text exposition (aggregated over workers in multiprocess mode)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
