"""The checks and the report of `make soak` (bench/soak.py): PASS/FAIL lines and figures."""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import argparse

    from bench.soak import Result, Timeline
    from bench.soak_procs import Gateway

RSS_GROWTH_MB = 50.0
WARMUP_S = 10.0  # an incarnation's RSS growth is measured from its first sample after this
REFUSED = ("RATE_LIMITED", "BUDGET_EXCEEDED")  # refused at admission: no counter moved


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    @property
    def markdown(self) -> str:
        head = ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
        head += [f"| {n} | **{'PASS' if p else 'FAIL'}** | {d} |" for n, p, d in self.checks]
        verdict = "PASS" if self.ok else "FAIL"
        return "\n".join([*self.lines[:1], "", f"**Overall: {verdict}**", "", *head, "",
                          *self.lines[1:], ""])  # fmt: skip


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def p50_99(values: list[float], digits: int = 1) -> str:
    return f"{pct(values, 50):.{digits}f} / {pct(values, 99):.{digits}f} ms"


def served_by(gateways: list[Gateway]) -> dict[str, str]:
    """request_id → the incarnation whose audit log has it."""
    out: dict[str, str] = {}
    for g in gateways:
        for life in g.lives:
            try:
                text = life.stdout.read_bytes()
            except OSError:
                continue
            for line in text.splitlines():
                if not line.startswith(b"{") or b'"audit"' not in line:
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if obj.get("type") == "audit" and obj.get("request_id"):
                    out[obj["request_id"]] = life.name
    return out


def build(
    *,
    args: argparse.Namespace,
    run_id: str,
    results: list[Result],
    rows: list[dict[str, Any]],
    gateways: list[Gateway],
    timeline: Timeline,
    keys: dict[str, tuple[str, str, int | None]],
    budget: float,
    drain_s: float,
    revoked: tuple[bool, str],
) -> Report:
    rep = Report()
    tl = timeline
    by_rid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_rid[r["request_id"]].append(r)
    where = served_by(gateways)
    sent = {r.rid for r in results}
    rep.add(
        f"# Soak {dt.date.today()} (run {run_id})",
        "",
        f"`python -m bench.soak --seconds {args.seconds:g}"
        + (f" --rate {args.rate:g}" if args.rate != 1 else "")
        + ("  --no-restart" if args.no_restart else "")
        + ("  --no-redis-restart" if args.no_redis_restart else "")
        + f"` on {platform.node()} ({platform.python_version()}), "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. {args.note}",
        "",
        "Three `sluice serve` instances (one worker each) behind nginx, sharing PostgreSQL and a "
        "throwaway Redis; upstream: tests/fakes/openai_fake.py. Keys: alpha/a1, alpha/a2, "
        f"beta/b1 (gpt-pricey; team budget ${budget:g}/day applies to every team), gamma/g1 "
        "(own rpm 40, sent ~90/min), gamma/g2. Config limits: key rpm 600, team rpm 3000. "
        f"`drain_timeout_s` {drain_s:g}; -slowstream streams last ~7 s.",
        "",
        "### Timeline",
        "",
        *[f"- {t:6.1f} s  {text}" for t, text in tl.events],
    )

    # 1. one usage row per answered request -------------------------------------------------
    answered = [r for r in results if r.status is not None and r.from_sluice]
    proxy_made = [r for r in results if r.status is not None and not r.from_sluice]
    no_response = [r for r in results if r.status is None]
    missing = [r for r in answered if len(by_rid.get(r.rid, [])) == 0]
    dupes = [rid for rid, rs in by_rid.items() if len(rs) > 1]
    stray = [rid for rid in by_rid if rid not in sent]
    detail = (
        f"{len(answered)} answered by a gateway: {len(answered) - len(missing)} with one row, "
        f"{len(missing)} without; {len(dupes)} request ids with >1 row; {len(stray)} stray rows"
    )
    if missing:
        detail += "; missing e.g. " + ", ".join(
            f"{r.rid} ({r.status} {r.code or ''} via {where.get(r.rid, '?')})" for r in missing[:5]
        )
    if dupes:
        detail += "; duplicated e.g. " + ", ".join(dupes[:5])
    rep.check("one usage row per answered request", not missing and not dupes and not stray, detail)
    nr_rows = sum(1 for r in no_response if by_rid.get(r.rid))
    detail = (
        f"{len(proxy_made)} responses made by nginx (no X-Request-ID echo), "
        f"{len(no_response)} requests without any HTTP response ({nr_rows} of them have a row)"
    )
    if proxy_made or no_response:
        detail += "; e.g. " + ", ".join(
            f"{r.rid} at {r.t0:.1f}s: {r.status or r.exc}" for r in (proxy_made + no_response)[:4]
        )
    rep.check("every request answered by a gateway", not proxy_made and not no_response, detail)

    # 2. streams: complete, or ended by one error event of a policy -------------------------
    streams = [r for r in results if r.stream and r.status == 200 and r.from_sluice]
    ends: Counter[str] = Counter()
    broken: list[Result] = []
    drain_cuts: list[Result] = []
    for r in streams:
        if r.done and not r.error_events:
            ends["[DONE]"] += 1
            continue
        if r.error_events != 1 or r.done or r.data_after_error:
            broken.append(r)
            ends["broken"] += 1
            continue
        ends[f"error event {r.code}"] += 1
        if r.code == "SERVICE_UNAVAILABLE":
            drain_cuts.append(r)
        elif r.code == "NETWORK_ERROR" and r.model.endswith("-reset"):
            pass  # the upstream reset mid-stream: SPEC §6's mid-stream failure
        elif r.code == "BUDGET_EXCEEDED":
            pass  # a stream past its reservation with no budget left
        else:
            broken.append(r)
    bad_drain = []
    for r in drain_cuts:
        life = where.get(r.rid, "?")
        t_sig = tl.sigterm.get(life)
        if t_sig is None or r.t1 < t_sig + drain_s - 0.5:
            bad_drain.append(r)
    # Expected drain cuts: long streams on the stopped incarnation still running at its deadline.
    expected = 0
    for life, t_sig in tl.sigterm.items():
        for r in streams:
            if (
                where.get(r.rid) == life
                and r.model.endswith("-slowstream")
                and r.t0 < t_sig
                and r.t0 + 6.0 > t_sig + drain_s
            ):
                expected += 1
    detail = (
        f"{len(streams)} streams with a 200: "
        + ", ".join(f"{k} {v}" for k, v in ends.items())
        + f". Drain cuts: {len(drain_cuts)} (all on a SIGTERMed instance at its deadline: "
        f"{'yes' if not bad_drain else 'NO, ' + str(len(bad_drain)) + ' elsewhere'}; "
        f"≈{expected} long streams were still due to run past it)"
    )
    if broken:
        detail += "; broken e.g. " + ", ".join(
            f"{r.rid} {r.model} events={r.error_events} done={r.done} code={r.code} "
            f"via {where.get(r.rid, '?')}"
            for r in broken[:4]
        )
    rep.check("no stream cut except by policy", not broken and not bad_drain, detail)

    # 3. limits and budgets, from the rows -----------------------------------------------------
    down = tl.redis_down
    down_wall = (tl.wall + down[0], tl.wall + down[1] + 1.0) if down else None
    key_of = {kid: (name, team, rpm) for name, (team, kid, rpm) in keys.items()}
    per_window: Counter[tuple[str, str, int]] = Counter()
    for r in rows:
        if r["error_code"] in REFUSED or r["key_id"] not in key_of:
            continue
        w = int(r["ts"] // 60)
        per_window[("key", r["key_id"], w)] += 1
        per_window[("team", r["team"], w)] += 1
    over = []
    peak: dict[str, int] = {}
    for (scope, ident, w), n in sorted(per_window.items()):
        if scope == "key":
            name, _, own = key_of[ident]
            cap = min(600, own or 600)
            label = f"key {name}"
        else:
            cap, label = 3000, f"team {ident}"
        peak[label] = max(peak.get(label, 0), n)
        if n > cap:
            touched = (
                down_wall is not None and w * 60 < down_wall[1] and (w + 1) * 60 > down_wall[0]
            )
            over.append(
                f"{label} admitted {n} > {cap} in minute "
                f"{dt.datetime.fromtimestamp(w * 60, dt.UTC):%H:%M}"
                + (" (the minute of the Redis restart)" if touched else "")
            )
    limited = Counter(r.key for r in results if r.code == "RATE_LIMITED")
    g1 = key_of_name(keys, "g1")
    detail = (
        "peak admitted per minute: "
        + ", ".join(f"{k} {v}" for k, v in sorted(peak.items()) if k.startswith("key"))
        + f" (g1's cap {g1[2]}); RATE_LIMITED by key: {dict(limited) or 'none'}"
    )
    if over:
        detail += "; OVER: " + "; ".join(over)
    if down_wall is not None:
        # While Redis is down each instance counts alone at cap ÷ instances (docs/traffic.md).
        alone: Counter[str] = Counter(
            where.get(r["request_id"], "?")
            for r in rows
            if r["key_id"] == g1[1]
            and r["error_code"] not in REFUSED
            and down_wall[0] <= r["ts"] < down_wall[1]
        )
        detail += (
            f"; g1 admitted while Redis was down (±1 s): {dict(alone) or 'none'} "
            f"(per-instance fallback cap {max(1, (g1[2] or 600) // 3)})"
        )
    rep.check("no rate limit exceeded", not over and limited.get("g1", 0) > 0, detail)

    spend: dict[str, float] = defaultdict(float)
    phases: dict[str, float] = defaultdict(float)
    for r in rows:
        if r["cost_usd"] is None or r["team"] is None:
            continue
        spend[r["team"]] += r["cost_usd"]
        if r["team"] == "beta" and down_wall is not None:
            ph = (
                "before"
                if r["ts"] < down_wall[0]
                else "during"
                if r["ts"] < down_wall[1]
                else "after"
            )
            phases[ph] += r["cost_usd"]
    budget_hit = Counter(r.key for r in results if r.code == "BUDGET_EXCEEDED")
    first_hit = min((r.t0 for r in results if r.code == "BUDGET_EXCEEDED"), default=None)
    over_b = {t: s for t, s in spend.items() if s > budget + 1e-9}
    detail = (
        f"budget ${budget:g} per team; spent "
        + ", ".join(f"{t} ${s:.4f}" for t, s in sorted(spend.items()))
        + f"; BUDGET_EXCEEDED by key: {dict(budget_hit) or 'none'}"
        + (f", first at {first_hit:.1f} s" if first_hit is not None else "")
    )
    if phases:
        detail += "; beta's spend before/during/after the Redis restart: " + "/".join(
            f"${phases[p]:.4f}" for p in ("before", "during", "after")
        )
    if over_b:
        detail += "; OVER: " + ", ".join(f"{t} by ${s - budget:.4f}" for t, s in over_b.items())
    rep.check("no budget exceeded", not over_b and bool(budget_hit), detail)

    rep.check("revocation reaches every instance after the restarts", *revoked)

    # 4. memory ---------------------------------------------------------------------------------
    rss_lines = ["| process | samples | min MB | max MB | final MB | growth MB | every 10 s (MB) |",
                 "|---|---|---|---|---|---|---|"]  # fmt: skip
    grew = []
    for g in gateways:
        for life in g.lives:
            mbs = [mb for _, mb in life.rss]
            if not mbs:
                continue
            t0 = life.rss[0][0]
            base = next((mb for t, mb in life.rss if t - t0 >= WARMUP_S), mbs[0])
            growth = mbs[-1] - base
            if growth > RSS_GROWTH_MB:
                grew.append(f"{life.name} +{growth:.0f} MB")
            curve, nxt = [], t0
            for t, mb in life.rss:
                if t >= nxt:
                    curve.append(f"{mb:.0f}")
                    nxt = t + 10
            rss_lines.append(
                f"| {life.name} | {len(mbs)} | {min(mbs):.1f} | {max(mbs):.1f} | {mbs[-1]:.1f} | "
                f"{growth:+.1f} | {' '.join(curve)} |"
            )
    rep.check(
        f"RSS growth ≤ {RSS_GROWTH_MB:g} MB per instance",
        not grew,
        "growth = final − first sample after 10 s of each process; "
        + (", ".join(grew) if grew else "none above the threshold"),
    )

    # figures -----------------------------------------------------------------------------------
    dur = args.seconds
    lat = [(r.t1 - r.t0) * 1000 for r in answered]
    lat_ns = [(r.t1 - r.t0) * 1000 for r in answered if not r.stream]
    lat_s = [
        (r.t1 - r.t0) * 1000 for r in answered if r.stream and not r.model.endswith("slowstream")
    ]
    clean = ("gpt-cheap", "gpt-pricey")
    lat_ok = [(r.t1 - r.t0) * 1000 for r in answered
              if r.status == 200 and not r.stream and r.model in clean]  # fmt: skip
    ovh = [r.overhead_ms for r in answered if r.overhead_ms is not None]
    ovh_ok = [r.overhead_ms for r in answered if r.overhead_ms is not None and r.status == 200]
    by_code: Counter[str] = Counter()
    for r in results:
        if r.status is None:
            by_code[f"no response ({(r.exc or '').split(':')[0]})"] += 1
        elif r.status != 200:
            by_code[
                f"{r.status} {r.code or ''}".strip() + ("" if r.from_sluice else " (nginx)")
            ] += 1
        elif r.error_events:
            by_code[f"200 stream ended by {r.code}"] += 1
    hits = sum(1 for r in answered if r.cache == "HIT")
    row_hits = sum(1 for r in rows if r["cache_hit"])
    per_life = Counter(where.get(r.rid, "unknown") for r in answered)
    lives = ", ".join(f"{k} {v}" for k, v in sorted(per_life.items()))
    rep.add(
        "",
        "## Figures",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests sent | {len(results)} in {dur:g} s = {len(results) / dur:.1f}/s "
        f"({sum(r.stream for r in results)} streams) |",
        f"| answered by a gateway | {len(answered)} ({lives}) |",
        f"| latency p50 / p99, all answered | {p50_99(lat)} |",
        f"| latency p50 / p99, non-streamed | {p50_99(lat_ns)} |",
        f"| latency p50 / p99, non-streamed 200s, fault-free models | {p50_99(lat_ok)} |",
        f"| latency p50 / p99, streams (not -slowstream) | {p50_99(lat_s)} |",
        f"| X-Sluice-Overhead-Ms p50 / p99, all ({len(ovh)}) | {p50_99(ovh, 2)} |",
        f"| X-Sluice-Overhead-Ms p50 / p99, 200s ({len(ovh_ok)}) | {p50_99(ovh_ok, 2)} |",
        f"| cache hits | {hits} (X-Sluice-Cache: HIT); rows with cache_hit: {row_hits} |",
        f"| 429s by code | RATE_LIMITED {by_code.get('429 RATE_LIMITED', 0)}, "
        f"BUDGET_EXCEEDED {by_code.get('429 BUDGET_EXCEEDED', 0)}, "
        f"upstream 429 (EXTERNAL_SERVICE_ERROR) {by_code.get('429 EXTERNAL_SERVICE_ERROR', 0)} |",
        f"| usage rows | {len(rows)} |",
        "",
        "### Errors by cause",
        "",
        "| status / code | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in by_code.most_common()],
        "",
        "### RSS per instance (sampled every second)",
        "",
        *rss_lines,
    )
    print("\n".join(f"{'PASS' if p else 'FAIL'}  {n}: {d}" for n, p, d in rep.checks))
    return rep


def key_of_name(
    keys: dict[str, tuple[str, str, int | None]], name: str
) -> tuple[str, str, int | None]:
    return keys[name]
