"""Usage totals grouped by model, provider, team, key, user or day: shared by
`GET /admin/usage` and `sluice usage`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ColumnElement

from sluice import db

GROUPS = ("model", "provider", "team", "key", "user", "day")
_COLUMNS = {
    "model": "model",
    "provider": "provider",
    "team": "team",
    "key": "key_id",
    "user": "user",
}


class QueryError(ValueError):
    """A bad group_by/from/to value; the message names the parameter."""


def parse_time(value: str | None, param: str, end: bool = False) -> float | None:
    """Epoch seconds from epoch seconds or ISO 8601; a bare date as `to` includes that day."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            start = dt.datetime.combine(day, dt.time(), dt.UTC)
            return (start + dt.timedelta(days=1 if end else 0)).timestamp()
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{param}: expected ISO 8601 (2026-01-31 or 2026-01-31T12:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _group_column(group_by: str, dialect: str) -> ColumnElement[Any]:
    u = db.usage.c
    if group_by == "day":
        if dialect == "sqlite":
            return func.date(u.ts, "unixepoch")
        return func.to_char(func.to_timestamp(u.ts).op("AT TIME ZONE")("UTC"), "YYYY-MM-DD")
    if group_by not in _COLUMNS:
        raise QueryError(f"group_by: one of {', '.join(GROUPS)}")
    return u[_COLUMNS[group_by]]


def _aggregates() -> list[ColumnElement[Any]]:
    u = db.usage.c
    return [
        func.count().label("requests"),
        func.sum(case((u.status >= 400, 1), else_=0)).label("errors"),
        func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
        func.sum(u.cost_usd).label("cost_usd"),
        (func.count() - func.count(u.cost_usd)).label("unpriced_requests"),
        func.sum(cast(u.cache_hit, Integer)).label("cache_hits"),
        func.sum(cast(u.tokens_estimated, Integer)).label("estimated_requests"),
        func.avg(u.latency_ms).label("avg_latency_ms"),
    ]


def _row(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requests": int(m["requests"] or 0),
        "errors": int(m["errors"] or 0),
        "prompt_tokens": int(m["prompt_tokens"] or 0),
        "completion_tokens": int(m["completion_tokens"] or 0),
        "cost_usd": None if m["cost_usd"] is None else round(float(m["cost_usd"]), 8),
        "unpriced_requests": int(m["unpriced_requests"] or 0),
        "cache_hits": int(m["cache_hits"] or 0),
        "estimated_requests": int(m["estimated_requests"] or 0),
        "avg_latency_ms": None if m["avg_latency_ms"] is None else round(m["avg_latency_ms"], 3),
    }
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


async def summary(
    engine: AsyncEngine, group_by: str, since: float | None, until: float | None
) -> dict[str, Any]:
    """Totals per group and overall, for rows with since <= ts < until."""
    group = _group_column(group_by, engine.dialect.name).label("group")
    where = []
    if since is not None:
        where.append(db.usage.c.ts >= since)
    if until is not None:
        where.append(db.usage.c.ts < until)
    grouped = select(group, *_aggregates()).where(*where).group_by(group).order_by(group)
    total = select(*_aggregates()).where(*where)
    async with engine.connect() as conn:
        rows = (await conn.execute(grouped)).mappings().all()
        totals = (await conn.execute(total)).mappings().one()
    return {
        "group_by": group_by,
        "from": since,
        "to": until,
        "rows": [{group_by: r["group"], **_row(r)} for r in rows],
        "totals": _row(totals),
    }


def table(result: dict[str, Any]) -> str:
    """A summary as a plain-text table (for `sluice usage`)."""
    g = result["group_by"]
    cols = [g, "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd"]
    cols += ["cache_hits", "avg_latency_ms"]
    lines = [[str(c) for c in cols]]
    for r in [*result["rows"], {g: "TOTAL", **result["totals"]}]:
        lines.append(["-" if r.get(c) is None else _fmt(r[c]) for c in cols])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join(
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"
    return str(v)
