"""Sluice variants (issues 3–6), each against its baseline, in the same run as the core table.

    python -m bench.run --variants [auth,logging,translation,traffic]   (make bench: all)

Every variant is a `sluice serve` pinned to the gateway core, with a config from
bench/configs/ and the same upstreams as the core comparison. All of them are started at
once (an idle one costs nothing) so the measurements can alternate between them: the c=1
runs go round-robin in short rounds (order rotated each round) and each p50 is the median of
its rounds, so a neighbour's burst of load hits every variant alike rather than one of them.
Every request body is unique (a counter in the prompt), so the cache, when on, always misses;
the "hit" entries repeat one body instead.

The traffic features are measured against themselves switched off *in the same process*
(another key without limits, sending `Cache-Control: no-store`, so the cache is neither read
nor written): two like processes differ
by as much as ±0.05 ms at c=1 on this VM (the A/A control), more than the in-process target.
Their Δ against the `key` process is kept beside it. Every target's pair (PAIRS, and the A/A
control) is also timed request by request, alternating (`loadgen.paired`): the median
difference of neighbouring requests is steady to a few µs, where rounds a second apart are
not; two like processes differ by ±7 µs that way.

| variant | process (config, environment) | baseline |
|---|---|---|
| open | sluice-open.yaml, AUDIT_LOG=false | — |
| key | sluice-key.yaml, AUDIT_LOG=false, a team key as Bearer | open |
| audit | sluice-open.yaml (audit on), usage rows in SQLite | open |
| audit-pg | sluice-open.yaml (audit on), usage rows in PostgreSQL | open |
| anthropic | the `open` process, model claude-bench → fake Anthropic upstream | open |
| key-twin | as key, in a second process: an A/A control (what two like processes differ by) | key |
| traffic-local off | sluice-traffic.yaml (in-process); a team key, no limits, no-store | — |
| traffic-local | the same process; a team key with a limit; the cache misses | …-local off, key |
| traffic-redis off | sluice-traffic.yaml + SLUICE_REDIS_URL, as traffic-local off | — |
| traffic-redis | the same process, as traffic-local | …-redis off, key |
| traffic-… hit | the same process, one body repeated: every request after the first hits | direct |
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen
from bench.loadgen import Target
from bench.systems import Upstreams
from bench.variant_setup import (
    PROCESSES,
    Running,
    prepare_postgres,
    redis_cleanup,
    redis_ok,
    redis_prefix,
    settled_rows,
    side_threads,
    start,
)

GROUPS = {
    "auth": ("open", "key"),
    "logging": ("open", "audit", "audit-pg"),
    "translation": ("open", "anthropic"),
    "traffic": (
        *("key", "key-twin", "traffic-local off", "traffic-local"),
        *("traffic-redis off", "traffic-redis", "traffic-local hit", "traffic-redis hit"),
    ),
}
# Measured request by request, alternating (entry, the entry it is compared with).
PAIRS = (
    ("key", "open"),
    ("audit", "open"),
    ("anthropic", "open"),
    ("traffic-local", "traffic-local off"),
    ("traffic-redis", "traffic-redis off"),
    ("key-twin", "key"),
)
ANTHROPIC_CHUNKS = 20  # content writes per stream (bench/anthropic_fake.py), for µs per chunk


@dataclass(frozen=True)
class Entry:
    """One measured column: a process, the model family it asks for, unique bodies or not."""

    process: str | None  # None: direct (the upstream itself)
    baseline: str | None
    anthropic: bool = False
    unique: bool = True
    count_rows: bool = False
    # The process's second key (no limits of its own) and Cache-Control: no-store.
    plain: bool = False
    also: str | None = None  # a second baseline, reported beside the first


ENTRIES = {
    "direct": Entry(None, None, unique=False),
    "open": Entry("open", None, count_rows=True),
    "key": Entry("key", "open"),
    "audit": Entry("audit", "open", count_rows=True),
    "audit-pg": Entry("audit-pg", "open", count_rows=True),
    "anthropic": Entry("open", "open", anthropic=True),
    "key-twin": Entry("key-twin", "key"),
    "traffic-local off": Entry("traffic-local", None, plain=True),
    "traffic-local": Entry("traffic-local", "traffic-local off", also="key"),
    "traffic-redis off": Entry("traffic-redis", None, plain=True),
    "traffic-redis": Entry("traffic-redis", "traffic-redis off", also="key"),
    "traffic-local hit": Entry("traffic-local", "direct", unique=False),
    "traffic-redis hit": Entry("traffic-redis", "direct", unique=False),
}


@dataclass(frozen=True)
class Durations:
    """Variant run lengths: rounds × seconds for c=1 and c=64, seconds of streams."""

    warm: float
    latency_rounds: int
    latency: float
    throughput_rounds: int
    throughput: float
    stream_rounds: int
    streams: float
    paired: float  # seconds of alternating requests per pair (PAIRS)

    @classmethod
    def pick(cls, quick: bool) -> Durations:
        """Quick: a harness check (≈ 1 min); full: ≈ 3 min for every group, with 9 c=1
        rounds (a Δ is the median of 9 paired rounds: this VM's noise is ±0.05 ms)."""
        return cls(1, 2, 1, 1, 2, 2, 1, 1) if quick else cls(1, 9, 1, 2, 2, 3, 1, 5)


@dataclass
class Results:
    """Per entry: figures by key, plus notes and errors for the report."""

    values: dict[str, dict[str, object]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, entry: str, key: str, value: object) -> None:
        """Record one figure."""
        self.values.setdefault(entry, {})[key] = value

    def get(self, entry: str, key: str) -> float | None:
        """A numeric figure or None."""
        v = self.values.get(entry, {}).get(key)
        return float(v) if isinstance(v, int | float) and v == v else None


def selected(groups: str) -> list[str]:
    """The entries the comma-separated `groups` need ("all": every one), direct first."""
    names = list(GROUPS) if groups in ("", "all") else [g.strip() for g in groups.split(",")]
    bad = [g for g in names if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown variant group(s) {bad}; choose from {', '.join(GROUPS)}")
    wanted = {"direct"} | {e for g in names for e in GROUPS[g]}
    return [e for e in ENTRIES if e in wanted]


def target(name: str, entry: Entry, running: Running | None, up: Upstreams) -> Target:
    """The load generators' view of an entry."""
    if running is None:
        t = up.direct()
        t.name = name
        return t
    key = running.plain_key if entry.plain else running.key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if entry.plain:
        headers["Cache-Control"] = "no-store"
    t = Target(name, running.url, running.url, headers, unique=entry.unique)
    if entry.anthropic:
        t.json_model, t.sse_model = "claude-bench", "claude-bench-stream"
    return t


def check_hit(t: Target) -> str:
    """X-Sluice-Cache of the repeated body's second request (expect HIT)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(t.json_url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=10)
    hdr = ""
    try:
        for _ in range(2):
            conn.request(
                "POST", u.path, t.body(False), {"content-type": "application/json", **t.headers}
            )
            r = conn.getresponse()
            r.read()
            hdr = r.getheader("x-sluice-cache", "")
    finally:
        conn.close()
    return hdr or "(no header)"


# ---- measuring ---------------------------------------------------------------------------


@dataclass
class Measured:
    """What the measuring loop needs of one entry."""

    name: str
    entry: Entry
    target: Target
    running: Running | None


def _rotated(items: list[Measured], r: int) -> list[Measured]:
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def delta_key(key: str, entry: str, base: str | None) -> str:
    """Where `_paired` keeps `entry`'s Δ `key` against `base` (its baseline, or `also`)."""
    return key + "_delta" if base == ENTRIES[entry].baseline else f"{key}_delta@{base}"


def _paired(res: Results, items: list[Measured], key: str, rounds: dict[str, list[float]]) -> None:
    """`key`_delta: the median over rounds of (entry − its baseline, same round); likewise
    against the second baseline (`also`), kept as `key`_delta@<name>."""
    for m in items:
        for base in (m.entry.baseline, m.entry.also):
            mine, theirs = rounds.get(m.name, []), rounds.get(base or "", [])
            if base is not None and mine and len(mine) == len(theirs):
                deltas = [a - b for a, b in zip(mine, theirs, strict=True)]
                res.put(m.name, delta_key(key, m.name, base), statistics.median(deltas))


def _latency(res: Results, items: list[Measured], d: Durations) -> None:
    """c=1 in alternating rounds; p50/p99 are the medians of the rounds' figures. The
    gateway's CPU per request at c=1 (nothing to amortise over: each request alone) is the
    cleanest per-request cost; at c=64 it falls as the rate rises (fewer wake-ups a request)."""
    p50s: dict[str, list[float]] = {m.name: [] for m in items}
    p99s: dict[str, list[float]] = {m.name: [] for m in items}
    cpu = {m.name: [0.0, 0] for m in items}
    cpu_rounds: dict[str, list[float]] = {m.name: [] for m in items if m.running is not None}
    for r in range(d.latency_rounds):
        for m in _rotated(items, r):
            cpu0 = m.running.proc.cpu_seconds() if m.running else 0.0
            out = loadgen.http_load(m.target, 1, d.latency)
            if m.running is not None:
                used = m.running.proc.cpu_seconds() - cpu0
                cpu[m.name][0] += used
                cpu[m.name][1] += out.requests
                cpu_rounds[m.name].append(1e6 * used / max(1, out.requests))
            p50s[m.name].append(out.p50_ms)
            p99s[m.name].append(out.p99_ms)
            res.put(m.name, "failed", int(res.get(m.name, "failed") or 0) + out.failed)
    for m in items:
        res.put(m.name, "c1_p50", statistics.median(p50s[m.name]))
        res.put(m.name, "c1_p99", statistics.median(p99s[m.name]))
        res.put(m.name, "c1_p50_rounds", " / ".join(f"{x:.3f}" for x in p50s[m.name]))
        if cpu[m.name][1]:
            res.put(m.name, "c1_cpu_us", 1e6 * cpu[m.name][0] / cpu[m.name][1])
    _paired(res, items, "c1_p50", p50s)
    _paired(res, items, "c1_cpu_us", cpu_rounds)


def _alternating(res: Results, items: list[Measured], d: Durations) -> None:
    """PAIRS timed request by request, alternating: `c1_paired_delta` is the median of the
    differences between neighbouring requests (see `loadgen.paired`)."""
    by_name = {m.name: m for m in items}
    for a, b in PAIRS:
        if a in by_name and b in by_name:
            out = loadgen.paired(by_name[a].target, by_name[b].target, d.paired)
            res.put(a, "c1_paired_delta", out.delta_p50_ms)
            res.put(a, "c1_paired_pairs", out.pairs)
            res.put(a, "failed", int(res.get(a, "failed") or 0) + out.failed)


def _throughput(res: Results, items: list[Measured], d: Durations) -> None:
    """c=64 in alternating rounds: requests/s, gateway CPU per request, storage-thread wake-ups
    per request, and for the logging entries the usage rows written (queue drained)."""
    acc: dict[str, list[float]] = {m.name: [0, 0, 0, 0, 0, 0, 0, 0] for m in items}
    for r in range(d.throughput_rounds):
        for m in _rotated(items, r):
            run, a = m.running, acc[m.name]
            rows0 = None
            if run is not None and m.entry.count_rows:
                rows0, _ = settled_rows(run.storage_url)
            cpu0 = run.proc.cpu_seconds() if run else 0.0
            side0 = side_threads(run.proc.pid) if run else (0.0, 0)
            out = loadgen.http_load(m.target, 64, d.throughput)
            cpu1 = run.proc.cpu_seconds() if run else 0.0
            side1 = side_threads(run.proc.pid) if run else (0.0, 0)
            a[0] += out.requests
            a[1] += out.seconds
            a[2] += cpu1 - cpu0
            a[3] += side1[1] - side0[1]
            a[4] += side1[0] - side0[0]
            res.put(m.name, "failed", int(res.get(m.name, "failed") or 0) + out.failed)
            if run is not None and rows0 is not None:
                rows1, drain = settled_rows(run.storage_url, rows0 + out.requests)
                a[5] += rows1 - rows0
                a[6] += out.seconds + drain
                a[7] = max(a[7], drain)
                res.put(
                    m.name,
                    "requests_counted",
                    int(res.get(m.name, "requests_counted") or 0) + out.requests,
                )
    for m in items:
        n, secs, cpu, switches, side_cpu, rows, row_secs, drain = acc[m.name]
        if not n:
            continue
        res.put(m.name, "c64_rps", n / secs)
        if m.running is not None:
            res.put(m.name, "c64_cpu_us", 1e6 * cpu / n)
            res.put(m.name, "side_wakeups", switches / n)
            res.put(m.name, "side_cpu_us", 1e6 * side_cpu / n)
        if m.entry.count_rows and row_secs:
            res.put(m.name, "rows", int(rows))
            res.put(m.name, "rows_per_s", rows / row_secs)
            res.put(m.name, "drain_s", drain)


def _streams(res: Results, items: list[Measured], d: Durations) -> None:
    """50 streams kept in flight, entries alternating in rounds: first byte, total (pooled
    over the rounds), gateway CPU per stream."""
    acc: dict[str, list[loadgen.StreamResult]] = {m.name: [] for m in items}
    cpu: dict[str, float] = {m.name: 0.0 for m in items}
    cpu_rounds: dict[str, list[float]] = {m.name: [] for m in items if m.running is not None}
    for m in items:
        loadgen.streams(m.target, 50, 1)  # warm: connections open when timing starts
    for r in range(d.stream_rounds):
        for m in _rotated(items, r):
            run = m.running
            cpu0 = run.proc.cpu_seconds() if run else 0.0
            acc[m.name].append(loadgen.streams(m.target, 50, seconds=d.streams))
            if run is not None:
                used = run.proc.cpu_seconds() - cpu0
                cpu[m.name] += used
                cpu_rounds[m.name].append(1e6 * used / max(1, acc[m.name][-1].streams))
    _paired(res, items, "stream_cpu_us", cpu_rounds)
    for m in items:
        parts = acc[m.name]
        s = loadgen.StreamResult(
            sum(x.streams for x in parts),
            sum(x.failed for x in parts),
            [v for x in parts for v in x.ttfb_ms],
            [v for x in parts for v in x.total_ms],
            [v for x in parts for v in x.problems],
        )
        if m.running is not None and s.streams:
            res.put(m.name, "stream_cpu_us", 1e6 * cpu[m.name] / s.streams)
        res.put(m.name, "ttfb_p50", s.p("ttfb", 0.5))
        res.put(m.name, "ttfb_p99", s.p("ttfb", 0.99))
        res.put(m.name, "total_p50", s.p("total", 0.5))
        res.put(m.name, "streams_intact", f"{s.streams - s.failed}/{s.streams}")
        res.put(m.name, "failed", int(res.get(m.name, "failed") or 0) + s.failed)
        if s.problems:
            res.errors[f"{m.name} streams"] = "; ".join(s.problems[:3])[:300]


def measure(
    groups: str,
    only: set[str],
    d: Durations,
    workdir: Path,
    up: Upstreams,
    pg_base: str,
    redis_url: str,
) -> Results:
    """Start the variants' processes, measure every selected entry, stop them."""
    res = Results()
    names = selected(groups)
    needed = {ENTRIES[n].process for n in names} - {None}
    pg_url = rd_url = None
    if "audit-pg" in needed:
        try:
            pg_url = prepare_postgres(pg_base)
        except Exception as exc:
            res.errors["PostgreSQL"] = f"{type(exc).__name__}: {exc}"[:300]
    if "traffic-redis" in needed:
        rd_url = redis_url if redis_ok(redis_url) else None
    running: dict[str, Running] = {}
    try:
        for p in [p for p in PROCESSES if p in needed]:
            print(f"· starting variant {p} …", flush=True)
            try:
                running[p] = start(p, workdir, up, pg_url, rd_url)
            except Exception as exc:
                res.errors[f"variant {p}"] = str(exc).replace("\n", " ")[:400]
                print(f"  variant {p}: not started: {exc}", flush=True)
        items = []
        for n in names:
            e = ENTRIES[n]
            if e.process is not None and e.process not in running:
                continue
            run = running.get(e.process) if e.process else None
            items.append(Measured(n, e, target(n, e, run, up), run))
        for m in items:
            if m.running is not None:
                loadgen.http_load(m.target, 16, d.warm)
                if not m.entry.unique:
                    res.put(m.name, "cache_header", check_hit(m.target))
        t0 = time.monotonic()
        if "latency" in only:
            _latency(res, items, d)
            _alternating(res, items, d)
        if "throughput" in only:
            _throughput(res, [m for m in items if m.running is not None], d)
            res.put("_", "throughput_rounds", d.throughput_rounds)
        if "streams" in only:
            _streams(res, items, d)
        print(f"  variants measured in {time.monotonic() - t0:.0f}s", flush=True)
        for p, run in running.items():
            rss = run.proc.peak_rss_mb()
            for m in items:
                if m.entry.process == p and rss is not None:
                    res.put(m.name, "rss_mb", rss)
    finally:
        for run in running.values():
            run.proc.stop()
        if rd_url and "traffic-redis" in running:
            try:
                n = redis_cleanup(rd_url, redis_prefix(workdir))
                res.notes.append(f"Redis: {n} keys under this run's prefix deleted")
            except Exception as exc:
                res.errors["Redis cleanup"] = str(exc)[:200]
    return res
