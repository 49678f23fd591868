"""The results as markdown: per-system figures, overheads against direct, the targets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# (key, label, format) in table order.
METRICS = [
    ("c1_p50", "c=1 latency p50 (ms)", "{:.3f}"),
    ("c1_p99", "c=1 latency p99 (ms)", "{:.3f}"),
    ("c64_rps", "c=64 requests/s", "{:,.0f}"),
    ("c64_p99", "c=64 latency p99 (ms)", "{:.2f}"),
    ("c64_cpu_us", "c=64 gateway CPU per request (µs)", "{:.0f}"),
    ("core_rps", "requests/s per busy core (1e6 ÷ CPU µs)", "{:,.0f}"),
    ("ttfb_p50", "50 streams in flight: first byte p50 (ms)", "{:.2f}"),
    ("ttfb_p99", "50 streams in flight: first byte p99 (ms)", "{:.2f}"),
    ("total_p50", "50 streams in flight: total p50 (ms)", "{:.1f}"),
    ("total_p99", "50 streams in flight: total p99 (ms)", "{:.1f}"),
    ("streams_per_s", "50 streams in flight: streams completed/s", "{:,.0f}"),
    ("stream_cpu_us", "gateway CPU per stream (µs)", "{:,.0f}"),
    ("burst_ttfb_p50", "burst of 50 starts: first byte p50 (ms)", "{:.2f}"),
    ("burst_ttfb_p99", "burst of 50 starts: first byte p99 (ms)", "{:.2f}"),
    ("streams_intact", "streams intact", "{}"),
    ("rss_mb", "peak RSS (MB, VmHWM)", "{:.1f}"),
    ("failed", "failed requests", "{}"),
]

# Overheads: (label, key, kind) — kind "diff" is system − direct, "ratio" is system / direct.
OVERHEADS = [
    ("c=1 p50 overhead (ms)", "c1_p50", "diff"),
    ("c=1 p99 overhead (ms)", "c1_p99", "diff"),
    ("c=64 requests/s vs direct", "c64_rps", "ratio"),
    ("c=64 p99 overhead (ms)", "c64_p99", "diff"),
    ("first byte p50 overhead (ms)", "ttfb_p50", "diff"),
    ("first byte p99 overhead (ms)", "ttfb_p99", "diff"),
    ("stream total p50 overhead (ms)", "total_p50", "diff"),
    ("burst first byte p50 overhead (ms)", "burst_ttfb_p50", "diff"),
]


@dataclass
class Run:
    """Everything one benchmark run measured."""

    title: str
    notes: list[str]
    systems: list[str] = field(default_factory=list)
    values: dict[str, dict[str, object]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)  # extra markdown (the variants)

    def put(self, system: str, key: str, value: object) -> None:
        """Record one figure."""
        if system not in self.systems:
            self.systems.append(system)
        self.values.setdefault(system, {})[key] = value

    def get(self, system: str, key: str) -> float | None:
        """A numeric figure, or None when it was not measured."""
        v = self.values.get(system, {}).get(key)
        return float(v) if isinstance(v, int | float) and not math.isnan(v) else None


def _cell(fmt: str, v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return fmt.format(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def targets(run: Run) -> list[tuple[str, str, str]]:
    """SPEC targets for Sluice: (target, measured, PASS/FAIL/n/a)."""
    s, d = "sluice", "direct"
    out: list[tuple[str, str, str]] = []

    def check(name: str, measured: float | None, ok: bool | None, fmt: str) -> None:
        shown = "–" if measured is None else fmt.format(measured)
        out.append((name, shown, "n/a" if ok is None else ("PASS" if ok else "FAIL")))

    rps, hop = run.get(s, "c64_rps"), run.get("nginx hop", "c64_rps")
    ratio = rps / hop if rps is not None and hop else None
    ok = None if ratio is None else ratio >= 0.12
    check("requests/s on one core ≥ 0.12 × nginx hop's", ratio, ok, "{:.3f} ×")
    rps, hop = run.get(s, "core_rps"), run.get("nginx hop", "core_rps")
    cpu_ratio = rps / hop if rps is not None and hop else None
    if cpu_ratio is not None:  # informative: the same ratio from CPU time, robust to noise
        shown = f"{cpu_ratio:.3f} × ({rps:,.0f} vs {hop:,.0f} req/s per core)"
        out.append(("  the same from CPU time per request (info)", shown, "info"))
    p50 = _diff(run, s, d, "c1_p50")
    check("c=1 p50 overhead ≤ 0.4 ms", p50, None if p50 is None else p50 <= 0.4, "{:.3f} ms")
    ttfb = _diff(run, s, d, "ttfb_p50")
    intact = run.values.get(s, {}).get("streams_intact") or "–"
    all_intact = isinstance(intact, str) and intact.split("/")[0] == intact.split("/")[-1]
    ok = None if ttfb is None else (ttfb <= 2.0 and all_intact)
    check(
        f"first byte (50 streams) ≤ 2 ms over direct, all intact ({intact})", ttfb, ok, "{:.2f} ms"
    )
    rss = run.get(s, "rss_mb")
    check("peak RSS ≤ 80 MB", rss, None if rss is None else rss <= 80, "{:.1f} MB")
    failed = run.get(s, "failed")
    check("no failed request", failed, None if failed is None else failed == 0, "{:.0f}")
    return out


def _diff(run: Run, system: str, base: str, key: str) -> float | None:
    a, b = run.get(system, key), run.get(base, key)
    return None if a is None or b is None else a - b


def _ceiling_warnings(run: Run, others: list[str]) -> list[str]:
    """wrk and the upstream share one core: a system near the direct rate is bounded by it."""
    ceiling = run.get("direct", "c64_rps")
    out = []
    for s in others:
        rps = run.get(s, "c64_rps")
        if ceiling and rps is not None and rps >= 0.7 * ceiling:
            out.append(
                f"- ⚠ {s} reached {rps / ceiling:.0%} of the direct rate ({ceiling:,.0f}/s, the "
                "ceiling of wrk + upstream on the load core): its requests/s is a lower bound; "
                "its CPU time per request is the better figure."
            )
    return [*out, ""] if out else []


def markdown(run: Run) -> str:
    """The whole report."""
    lines = [f"# {run.title}", ""]
    lines += [f"- {n}" for n in run.notes]
    lines.append("")
    shown = [m for m in METRICS if any(k == m[0] for s in run.values.values() for k in s)]
    rows = [
        [label] + [_cell(fmt, run.values[s].get(key)) for s in run.systems]
        for key, label, fmt in shown
    ]
    lines += ["## Figures", "", *_table(["", *run.systems], rows), ""]
    others = [s for s in run.systems if s != "direct"]
    lines += _ceiling_warnings(run, others)
    if "direct" in run.systems and others:
        rows = []
        for label, key, kind in OVERHEADS:
            cells = []
            for s in others:
                if kind == "diff":
                    cells.append(_cell("{:+.3f}", _diff(run, s, "direct", key)))
                else:
                    a, b = run.get(s, key), run.get("direct", key)
                    cells.append(_cell("{:.3f}", a / b if a is not None and b else None))
            if any(c != "–" for c in cells):
                rows.append([label, *cells])
        lines += ["## Against direct (system − direct, or system ÷ direct)", ""]
        lines += [*_table(["", *others], rows), ""]
    if "sluice" in run.systems:
        lines += ["## Targets (Sluice)", ""]
        lines += [*_table(["target", "measured", "result"], [list(t) for t in targets(run)]), ""]
    lines += run.sections
    if run.errors:
        lines += ["## Not measured", ""]
        lines += [f"- **{s}**: {e}" for s, e in run.errors.items()] + [""]
    return "\n".join(lines)
