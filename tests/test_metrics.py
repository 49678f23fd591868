"""Prometheus updates made in batches give the exposition one update at a time gives."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from sluice.metrics import Metrics, observe_many


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The text format without the `_created` samples (their timestamps differ)."""
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


def test_observe_many_matches_observe_one_by_one() -> None:
    bounds = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("lat", "doc", ["p"], buckets=bounds, registry=one).labels("a")
    h2 = Histogram("lat", "doc", ["p"], buckets=bounds, registry=many).labels("a")
    rng = random.Random(7)
    # Values on every bound (observe counts v <= bound), between them, and past the last.
    values = [*bounds, 0.0, 7.5, 1e9] + [rng.uniform(0, 6) for _ in range(500)]
    for v in values:
        h1.observe(v)
    observe_many(h2, values)
    assert _exposition(one) == _exposition(many)
    lowest = sum(v <= 0.005 for v in values)
    assert f'lat_bucket{{le="0.005",p="a"}} {lowest:.1f}' in _exposition(many)


def test_a_batch_of_rows_counts_as_the_rows_one_by_one() -> None:
    rows = []
    for i in range(60):
        rows.append(
            {
                "provider": "openai",
                "model": f"m{i % 3}",
                "team": "t",
                "status": 200 if i % 5 else 429,
                "error_code": None if i % 5 else "RATE_LIMITED",
                "latency_ms": 3.0 * i,
                "ttfb_ms": None if i % 7 == 0 else 1.5 * i,
                "overhead_ms": 0.1 * i,
                "prompt_tokens": i,
                "completion_tokens": 2 * i,
                "cached_tokens": i % 4,
                "cost_usd": 0.001 * i,
                "attempts": 1 + i % 2,
                "tokens_estimated": i % 6 == 0,
                "cache_hit": i % 9 == 0,
            }
        )
    single, batched = Metrics(), Metrics()
    for row in rows:
        single.observe(row)
    batched.observe_batch(rows)

    def samples(m: Metrics) -> list[tuple[str, float]]:
        # Without the process collector's samples (memory, CPU: they move between reads)
        lines = [ln for ln in _exposition(m.registry) if ln[0] != "#" and "process_" not in ln]
        return [(name, float(v)) for name, _, v in (ln.rpartition(" ") for ln in lines)]

    one, many = samples(single), samples(batched)
    assert [name for name, _ in one] == [name for name, _ in many]
    # Sums of floats added in another order may differ in the last digit (cost, seconds).
    assert all(math.isclose(a, b, rel_tol=1e-9) for (_, a), (_, b) in zip(one, many, strict=True))
    assert ('sluice_first_byte_seconds_count{model="m1",provider="openai"}', 17.0) in many
