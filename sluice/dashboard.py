"""Read models for the dashboard: usage over time, recent requests, per-key settings.

Everything is computed in the database from the `usage` table (SQLAlchemy Core, so SQLite
and PostgreSQL answer the same queries). Percentiles are exact nearest-rank values taken
with window functions, so no latency list is ever pulled into the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, literal, or_, select, true, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from sluice.db import api_keys, usage
from sluice.errors import GatewayError

BUCKETS = {"hour": 3600, "day": 86400}
MAX_BUCKETS = 2000
DIMENSIONS = {"model": usage.c.model, "provider": usage.c.provider, "team": usage.c.team}
DIMENSIONS["key"] = usage.c.key_id
# Columns of a recent-request row: accounting only, never content or credentials.
REQUEST_COLUMNS = [
    "id",
    "ts",
    "request_id",
    "method",
    "path",
    "status",
    "error_code",
    "model",
    "upstream_model",
    "provider",
    "team",
    "key_id",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "tokens_estimated",
    "cost_usd",
    "latency_ms",
    "ttfb_ms",
    "overhead_ms",
    "cache_hit",
    "attempts",
    "stream",
]
LIMIT_FIELDS = ("rpm", "tpm", "concurrent", "budget_usd")
BUDGET_PERIODS = ("day", "week", "month", "total")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which usage rows a query covers: a time range and optional exact dimension values."""

    start: float
    end: float
    model: str | None = None
    provider: str | None = None
    team: str | None = None
    key: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        """The SQL conditions for these filters."""
        conds: list[ColumnElement[bool]] = [usage.c.ts >= self.start, usage.c.ts < self.end]
        for name, col in DIMENSIONS.items():
            value = getattr(self, name)
            if value is not None:
                conds.append(col == value)
        return conds


def _storage_down(exc: Exception) -> GatewayError:
    return GatewayError("SERVICE_UNAVAILABLE", f"storage unavailable ({type(exc).__name__})")


def _aggregates() -> list[Any]:
    """Per-group sums: requests, errors, tokens, spend, cache hits."""
    c = usage.c
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(case((c.status >= 400, 1), else_=0)), 0).label("errors"),
        func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
        func.sum(c.cost_usd).label("spend_usd"),
        func.coalesce(func.sum(case((c.cost_usd.is_(None), 1), else_=0)), 0).label("unpriced"),
        func.coalesce(func.sum(case((c.cache_hit == true(), 1), else_=0)), 0).label("cache_hits"),
    ]


def _stats(row: Any) -> dict[str, Any]:
    m = row._mapping
    prompt, completion = int(m["prompt_tokens"]), int(m["completion_tokens"])
    spend = m["spend_usd"]
    return {
        "requests": int(m["requests"]),
        "errors": int(m["errors"]),
        "tokens": prompt + completion,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "spend_usd": None if spend is None else round(float(spend), 8),
        "unpriced": int(m["unpriced"]),  # requests whose cost is unknown (no price)
        "cache_hits": int(m["cache_hits"]),
        "p50_ms": None,
        "p95_ms": None,
    }


def _empty() -> dict[str, Any]:
    return {
        "requests": 0,
        "errors": 0,
        "tokens": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "spend_usd": None,
        "unpriced": 0,
        "cache_hits": 0,
        "p50_ms": None,
        "p95_ms": None,
    }


class UsageQueries:
    """The dashboard's queries, through the gateway's engine for `storage.url` (its owner,
    `Store`, disposes of it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    def _bucket(self, size: int, offset: int) -> ColumnElement[Any]:
        """The start (epoch s) of the bucket a row falls in; `offset` shifts to local days."""
        shifted = (usage.c.ts + offset) / size
        index = func.floor(shifted) if self.postgres else cast(shifted, Integer)
        return cast(index, Integer) * size - offset

    async def timeseries(
        self, f: Filters, bucket: str, offset_s: int = 0, top_n: int = 10
    ) -> dict[str, Any]:
        """Per-bucket stats, totals, the top-N of each dimension and the values to filter by."""
        size = BUCKETS[bucket]
        first = int((f.start + offset_s) // size) * size - offset_s
        if (f.end - first) / size > MAX_BUCKETS:
            raise GatewayError(
                "VALIDATION_ERROR", f"range too long for bucket={bucket}", param="bucket"
            )
        where = f.where()
        b = self._bucket(size, offset_s).label("b")
        try:
            async with self.engine.connect() as conn:
                rows = await conn.execute(select(b, *_aggregates()).where(*where).group_by(b))
                by_bucket = {int(r.b): _stats(r) for r in rows}
                self._merge(by_bucket, await self._percentiles(conn, b, where))
                total_row = (await conn.execute(select(*_aggregates()).where(*where))).one()
                totals = _stats(total_row)
                p = (await self._percentiles(conn, None, where)).get(None)
                if p:
                    totals["p50_ms"], totals["p95_ms"] = p
                top = {
                    name: await self._top(conn, col, where, top_n)
                    for name, col in DIMENSIONS.items()
                }
                options = {
                    name: await self._distinct(conn, col, where) for name, col in DIMENSIONS.items()
                }
        except SQLAlchemyError as exc:
            raise _storage_down(exc) from exc
        series = []
        for ts in range(first, int(f.end), size):
            series.append({"ts": ts, **by_bucket.get(ts, _empty())})
        return {
            "bucket": bucket,
            "from": f.start,
            "to": f.end,
            "series": series,
            "totals": totals,
            "top": top,
            "options": options,
        }

    @staticmethod
    def _merge(stats: dict[Any, dict[str, Any]], pct: dict[Any, tuple[float, float]]) -> None:
        for key, (p50, p95) in pct.items():
            if key in stats:
                stats[key]["p50_ms"], stats[key]["p95_ms"] = p50, p95

    async def _percentiles(
        self, conn: AsyncConnection, group: ColumnElement[Any] | None, where: list[Any]
    ) -> dict[Any, tuple[float, float]]:
        """Nearest-rank p50 and p95 of latency per group (one window query, two rows a group)."""
        lat = usage.c.latency_ms
        g = group if group is not None else literal(0)
        parts = [group] if group is not None else None
        rn = func.row_number().over(partition_by=parts, order_by=lat).label("rn")
        n = func.count().over(partition_by=parts).label("n")
        sub = select(g.label("g"), lat.label("v"), rn, n).where(*where).subquery()
        k50, k95 = (sub.c.n + 1) // 2, (sub.c.n * 95 + 99) // 100
        rows = await conn.execute(
            select(sub.c.g, sub.c.v, sub.c.rn, k50.label("k50"), k95.label("k95")).where(
                or_(sub.c.rn == k50, sub.c.rn == k95)
            )
        )
        out: dict[Any, list[float]] = {}
        for r in rows:
            key = None if group is None else (int(r.g) if isinstance(r.g, float) else r.g)
            slot = out.setdefault(key, [0.0, 0.0])
            if r.rn == r.k50:
                slot[0] = round(float(r.v), 2)
            if r.rn == r.k95:
                slot[1] = round(float(r.v), 2)
        return {k: (v[0], v[1]) for k, v in out.items()}

    async def _top(
        self, conn: AsyncConnection, col: Any, where: list[Any], n: int
    ) -> list[dict[str, Any]]:
        """The `n` busiest values of one dimension, with their stats and latency percentiles."""
        q = (
            select(col.label("name"), *_aggregates())
            .where(*where)
            .group_by(col)
            .order_by(func.count().desc(), col)
            .limit(n)
        )
        top = {r.name: {"name": r.name, **_stats(r)} for r in await conn.execute(q)}
        self._merge(top, await self._percentiles(conn, col, where))
        return list(top.values())

    @staticmethod
    async def _distinct(conn: AsyncConnection, col: Any, where: list[Any]) -> list[str]:
        q = select(col).where(*where, col.is_not(None)).distinct().order_by(col).limit(500)
        return [r[0] for r in await conn.execute(q)]

    async def recent(
        self,
        limit: int,
        status: str | None = None,
        team: str | None = None,
        since_id: int | None = None,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """The newest usage rows (newest first), accounting fields only."""
        c = usage.c
        conds: list[ColumnElement[bool]] = []
        if status:
            conds.append(_status_filter(status))
        if team:
            conds.append(c.team == team)
        if since_id is not None:
            conds.append(c.id > since_id)
        if before_id is not None:
            conds.append(c.id < before_id)
        cols = [getattr(c, name) for name in REQUEST_COLUMNS]
        q = select(*cols).where(and_(true(), *conds)).order_by(c.id.desc()).limit(limit)
        try:
            async with self.engine.connect() as conn:
                rows = await conn.execute(q)
                return [_request_row(r._mapping) for r in rows]
        except SQLAlchemyError as exc:
            raise _storage_down(exc) from exc

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Set a key's `allowed_models` and/or `limits`; the key's public view, or None."""
        try:
            async with self.engine.begin() as conn:
                if changes:
                    await conn.execute(
                        update(api_keys).where(api_keys.c.id == key_id).values(**changes)
                    )
                row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        except SQLAlchemyError as exc:
            raise _storage_down(exc) from exc
        return None if row is None else public_key(row._mapping)


def _status_filter(status: str) -> ColumnElement[bool]:
    """`ok`, `error`, `4xx`/`5xx` or an exact status code."""
    s = usage.c.status
    if status == "ok":
        return s < 400
    if status == "error":
        return s >= 400
    if len(status) == 3 and status[0] in "12345" and status[1:] == "xx":
        low = int(status[0]) * 100
        return and_(s >= low, s < low + 100)
    if status.isdigit() and len(status) == 3:
        return s == int(status)
    raise GatewayError(
        "VALIDATION_ERROR",
        "status: one of ok, error, 4xx, 5xx or a status code",
        param="status",
    )


def _request_row(m: Any) -> dict[str, Any]:
    row = {name: m[name] for name in REQUEST_COLUMNS}
    row["cache_hit"] = bool(row["cache_hit"])
    row["stream"] = bool(row["stream"])
    row["tokens_estimated"] = bool(row["tokens_estimated"])
    if str(row["path"]).startswith("/tokens/"):
        row["path"] = "/tokens/…"  # that path would carry a team key
    return row


def public_key(m: Any) -> dict[str, Any]:
    """A key as admins see it (seed 003's camelCase): never the secret, never its hash."""
    return {
        "id": m["id"],
        "teamId": m["team_id"],
        "name": m["name"],
        "prefix": m["prefix"],
        "createdAt": m["created_at"],
        "revokedAt": m["revoked_at"],
        "allowedModels": m["allowed_models"],
        "limits": m["limits"],
    }


def default_range(bucket: str, now: float | None = None) -> tuple[float, float]:
    """The last 24 hours for hourly buckets, the last 30 days for daily ones."""
    now = time.time() if now is None else now
    return (now - (86400 if bucket == "hour" else 30 * 86400), now)
