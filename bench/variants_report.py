"""The variants' section of the report: figures, overhead against each baseline, targets."""

from __future__ import annotations

from bench.report import _cell, _table
from bench.variants import ANTHROPIC_CHUNKS, ENTRIES, Results, delta_key

FIGURES = [
    ("c1_p50", "c=1 latency p50 (ms, median of rounds)", "{:.3f}"),
    ("c1_p99", "c=1 latency p99 (ms, median of rounds)", "{:.3f}"),
    ("c1_cpu_us", "c=1 gateway CPU per request (µs)", "{:.0f}"),
    ("c64_rps", "c=64 requests/s", "{:,.0f}"),
    ("c64_cpu_us", "c=64 gateway CPU per request (µs)", "{:.0f}"),
    ("side_wakeups", "c=64 storage-thread wake-ups per request", "{:.3f}"),
    ("side_cpu_us", "c=64 storage-thread CPU per request (µs)", "{:.1f}"),
    ("ttfb_p50", "50 streams in flight: first byte p50 (ms)", "{:.2f}"),
    ("ttfb_p99", "50 streams in flight: first byte p99 (ms)", "{:.2f}"),
    ("total_p50", "50 streams in flight: total p50 (ms)", "{:.1f}"),
    ("stream_cpu_us", "gateway CPU per stream (µs)", "{:,.0f}"),
    ("streams_intact", "streams intact", "{}"),
    ("rss_mb", "peak RSS of the process (MB)", "{:.1f}"),
    ("failed", "failed requests", "{}"),
    ("c1_p50_rounds", "c=1 p50 of each round (ms)", "{}"),
]

WHAT = {
    "key": "team key (Bearer) vs auth off — issue 3",
    "audit": "audit log on vs AUDIT_LOG=false, rows in SQLite both — issue 4",
    "audit-pg": "audit log on, rows in PostgreSQL vs AUDIT_LOG=false + SQLite — issue 4",
    "anthropic": "OpenAI in → Anthropic upstream vs OpenAI route — issue 5",
    "key-twin": "the key process's config in a second process (A/A control) — issue 6",
    "traffic-local": "key limit + cache (misses), in-process vs both off, same process — issue 6",
    "traffic-redis": "key limit + cache (misses), Redis vs both off, same process — issue 6",
    "traffic-local hit": "cache hit (in-process) vs direct upstream — issue 6",
    "traffic-redis hit": "cache hit (Redis) vs direct upstream — issue 6",
}


def _diff(res: Results, a: str, b: str | None, key: str) -> float | None:
    paired = res.get(a, delta_key(key, a, b))
    if paired is not None:
        return paired  # the median of the rounds' paired differences
    x, y = res.get(a, key), res.get(b, key) if b else None
    return None if x is None or y is None else x - y


def _paired_or_rounds(res: Results, a: str, b: str) -> float | None:
    """`a`'s c=1 Δ against `b` from alternating pairs (PAIRS), else from the rounds."""
    paired = res.get(a, "c1_paired_delta")
    return paired if paired is not None else _diff(res, a, b, "c1_p50")


def targets(res: Results) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/info) for issues 3–6."""
    out: list[tuple[str, str, str]] = []

    def check(name: str, v: float | None, limit: float | None, fmt: str) -> None:
        shown = "–" if v is None else fmt.format(v)
        verdict = (
            "n/a" if v is None else "info" if limit is None else "PASS" if v <= limit else "FAIL"
        )
        out.append((name, shown, verdict))

    check(
        "3 · team key vs open: c=1 p50 overhead ≤ 0.05 ms (alternating pairs)",
        _paired_or_rounds(res, "key", "open"),
        0.05,
        "{:+.3f} ms",
    )
    check(
        "  the same in 1-second rounds (info)",
        _diff(res, "key", "open", "c1_p50"),
        None,
        "{:+.3f} ms",
    )
    check(
        "3 · team key vs open: CPU per request at c=1 (info)",
        _diff(res, "key", "open", "c1_cpu_us"),
        None,
        "{:+.1f} µs",
    )
    wake = _diff(res, "key", "open", "side_wakeups")
    check(
        "3 · no storage round trip per request: storage-thread wake-ups/request, key − open < 0.5 "
        "(a lookup per request adds ≥ 1)",
        wake,
        0.49,
        "{:+.3f}",
    )
    check(
        "4 · audit on vs AUDIT_LOG=false: c=1 p50 overhead ≤ 0.05 ms (alternating pairs)",
        _paired_or_rounds(res, "audit", "open"),
        0.05,
        "{:+.3f} ms",
    )
    check(
        "  the same in 1-second rounds (info)",
        _diff(res, "audit", "open", "c1_p50"),
        None,
        "{:+.3f} ms",
    )
    check(
        "4 · audit on vs off: CPU per request at c=1 (info)",
        _diff(res, "audit", "open", "c1_cpu_us"),
        None,
        "{:+.1f} µs",
    )
    rounds = int(res.get("_", "throughput_rounds") or 1)
    for name, label in (
        ("open", "SQLite, audit off"),
        ("audit", "SQLite"),
        ("audit-pg", "PostgreSQL"),
    ):
        rows, reqs = res.get(name, "rows"), res.get(name, "requests_counted")
        if rows is None or reqs is None:
            if name != "open":
                out.append((f"4 · rows == requests, c=64 ({label})", "–", "n/a"))
            continue
        extra = rows - reqs
        ok = 0 <= extra <= 64 * rounds  # requests in flight when wrk stops are served and recorded
        rps = res.get(name, "rows_per_s") or 0
        out.append(
            (
                f"4 · rows == requests, c=64 ({label}; ≤ +64 a round: in flight at the end)",
                f"{rows:,.0f} rows / {reqs:,.0f} requests ({extra:+.0f}), {rps:,.0f} rows/s",
                "PASS" if ok else "FAIL",
            )
        )
    check(
        "5 · OpenAI → Anthropic: c=1 p50 overhead ≤ 0.2 ms (alternating pairs)",
        _paired_or_rounds(res, "anthropic", "open"),
        0.2,
        "{:+.3f} ms",
    )
    check(
        "  the same in 1-second rounds (info)",
        _diff(res, "anthropic", "open", "c1_p50"),
        None,
        "{:+.3f} ms",
    )
    check(
        "5 · OpenAI → Anthropic: CPU per request at c=1 (info)",
        _diff(res, "anthropic", "open", "c1_cpu_us"),
        None,
        "{:+.1f} µs",
    )
    per_stream = _diff(res, "anthropic", "open", "stream_cpu_us")
    per_chunk = None if per_stream is None else per_stream / ANTHROPIC_CHUNKS
    check(
        f"5 · translation CPU per streamed chunk ≤ 20 µs (Δ CPU per stream ÷ {ANTHROPIC_CHUNKS})",
        per_chunk,
        20,
        "{:+.1f} µs",
    )
    check(
        "5 · first-byte delay per stream, p50 (info)",
        _diff(res, "anthropic", "open", "ttfb_p50"),
        None,
        "{:+.2f} ms",
    )
    for n, where, limit in (
        ("traffic-redis", "Redis", 0.15),
        ("traffic-local", "in-process", 0.03),
    ):
        pairs = res.get(n, "c1_paired_pairs")
        check(
            f"6 · key limit + cache, {where}: c=1 p50 overhead ≤ {limit} ms (vs both off, same "
            f"process, {pairs or 0:,.0f} alternating pairs)",
            res.get(n, "c1_paired_delta"),
            limit,
            "{:+.3f} ms",
        )
        check(
            "6 · the same in 1-second rounds (info: rounds a second apart are noisier)",
            _diff(res, n, f"{n} off", "c1_p50"),
            None,
            "{:+.3f} ms",
        )
        check(
            "6 · the same against the key process, in rounds (info: two processes, see the "
            "A/A control)",
            _diff(res, n, "key", "c1_p50"),
            None,
            "{:+.3f} ms",
        )
        check(
            f"6 · key limit + cache, {where}: CPU per request at c=1 (info, same process)",
            _diff(res, n, f"{n} off", "c1_cpu_us"),
            None,
            "{:+.1f} µs",
        )
    check(
        "6 · A/A control, the same config in two processes, alternating pairs (info: the "
        "noise floor of a Δ between processes)",
        res.get("key-twin", "c1_paired_delta"),
        None,
        "{:+.3f} ms",
    )
    check(
        "6 · the same in 1-second rounds (info)",
        _diff(res, "key-twin", "key", "c1_p50"),
        None,
        "{:+.3f} ms",
    )
    for n in ("traffic-redis hit", "traffic-local hit"):
        hit, direct = res.get(n, "c1_p50"), res.get("direct", "c1_p50")
        if hit is not None and direct is not None:
            hdr = res.values.get(n, {}).get("cache_header", "?")
            out.append(
                (
                    f"6 · {n}: c=1 p50 vs direct upstream (X-Sluice-Cache: {hdr})",
                    f"{hit:.3f} ms vs {direct:.3f} ms ({hit - direct:+.3f})",
                    "info",
                )
            )
    return out


def markdown(res: Results) -> list[str]:
    """The section's lines."""
    names = [n for n in ENTRIES if n in res.values]
    lines = ["## Variants (issues 3–6): each against its baseline, same upstreams, same run", ""]
    lines += [
        "All variant processes run at once (idle ones cost nothing); c=1 and c=64 alternate "
        "between them in short rounds, order rotated each round, and each c=1 p50 is the "
        "median of its rounds; a Δ p50 is the median over the rounds of (variant − baseline) "
        "in the same round (likewise the Δ CPU at c=1 and per stream). Every request body is "
        "unique (the cache, when on, misses), except in the *hit* columns, which repeat one body.",
        "",
        "The *hit* columns' stream figures are the load client's: 50 streams always in flight, "
        "each replayed at once, so first byte ≈ 50 ÷ streams completed/s; read their c=1 p50 "
        "and CPU instead.",
        "",
    ]
    rows = []
    for key, label, fmt in FIGURES:
        cells = [_cell(fmt, res.values[n].get(key)) for n in names]
        if any(c != "–" for c in cells):
            rows.append([label, *cells])
    lines += [*_table(["", *names], rows), ""]
    rows = []
    for n in names:
        base = ENTRIES[n].baseline
        if base is None or base not in res.values:
            continue
        rps, brps = res.get(n, "c64_rps"), res.get(base, "c64_rps")
        rows.append(
            [
                n,
                base,
                WHAT.get(n, ""),
                _cell("{:+.3f}", res.get(n, "c1_paired_delta")),
                _cell("{:+.3f}", _diff(res, n, base, "c1_p50")),
                _cell("{:+.1f}", _diff(res, n, base, "c1_cpu_us")),
                _cell("{:+.1f}", _diff(res, n, base, "c64_cpu_us")),
                "–" if rps is None or brps is None else f"{rps:,.0f} vs {brps:,.0f}",
                _cell("{:+.2f}", _diff(res, n, base, "ttfb_p50")),
                _cell("{:+,.0f}", _diff(res, n, base, "stream_cpu_us")),
            ]
        )
    header = [
        "variant",
        "baseline",
        "what",
        "Δ c=1 p50, alternating pairs (ms)",
        "Δ c=1 p50, rounds (ms)",
        "Δ CPU/request c=1 (µs)",
        "Δ CPU/request c=64 (µs)",
        "c=64 req/s (variant vs baseline)",
        "Δ first byte p50 (ms)",
        "Δ CPU/stream (µs)",
    ]
    lines += ["### Overhead against the baseline", "", *_table(header, rows), ""]
    rows = []
    for n, store in (("open", "SQLite"), ("audit", "SQLite"), ("audit-pg", "PostgreSQL")):
        if res.get(n, "rows") is None:
            continue
        rows.append(
            [
                n,
                store,
                _cell("{:,.0f}", res.get(n, "requests_counted")),
                _cell("{:,.0f}", res.get(n, "rows")),
                _cell("{:,.0f}", res.get(n, "rows_per_s")),
                _cell("{:.2f}", res.get(n, "drain_s")),
            ]
        )
    if rows:
        lines += ["### Usage rows written while serving c=64 (counted in the database)", ""]
        lines += [
            "Rows counted before each c=64 round (after the queue settled) and after it, once "
            "the count has reached the requests wrk completed and stopped moving; rows/s = rows "
            "÷ (load seconds + drain). The rate is the gateway's request rate when the writer "
            "keeps up (drain ≈ the batch linger); a backlog shows as a long drain.",
            "",
        ]
        header = [
            "variant",
            "storage",
            "requests (wrk)",
            "rows written",
            "rows/s",
            "drain after load (s)",
        ]
        lines += [*_table(header, rows), ""]
    lines += ["### Targets (issues 3–6)", ""]
    shown = [list(t) for t in targets(res) if t[1:] != ("–", "n/a")]  # groups not selected
    lines += [*_table(["target", "measured", "result"], shown), ""]
    if res.notes:
        lines += [f"- {n}" for n in res.notes] + [""]
    return lines
