"""Usage logging cost: the hot-path `record()` (µs per record), the background cost per
record with the audit log on and off, and sustained batch-write throughput (rows/s) to
SQLite and (when reachable) PostgreSQL.

    python -m bench.usage_bench [--records 50000] [--postgres postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from sluice import db
from sluice.config import from_mapping
from sluice.providers.base import Usage
from sluice.usage import UsageRecord, UsageSink, new_record


def _records(n: int) -> list[UsageRecord]:
    out = []
    for i in range(n):
        rec = new_record(f"req_{i}_{uuid.uuid4().hex[:12]}", "POST", "/v1/chat/completions")
        rec.model, rec.upstream_model, rec.provider = "gpt-4o-mini", "gpt-4o-mini", "openai"
        rec.team, rec.key_id = f"team-{i % 10}", f"key_{i % 50}"
        rec.set_usage(Usage(prompt_tokens=120, completion_tokens=40), None)
        rec.latency_ms, rec.ttfb_ms, rec.overhead_ms, rec.attempts = 310.0, 95.0, 0.4, 1
        out.append(rec)
    return out


def _sink(url: str, audit: bool, spool: str) -> UsageSink:
    settings = from_mapping(
        {
            "storage": {"url": url},
            "providers": {"openai": {"kind": "openai", "api_key": "sk-bench-000000000000"}},
            "logging": {"audit": audit, "spool_dir": spool},
        }
    )
    sink = UsageSink(settings)
    devnull = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the sink
    sink.writer.audit_out = devnull.write
    return sink


def bench_record(n: int, spool: str) -> float:
    """µs per `record()` call: what the request path pays."""
    sink = _sink("sqlite:///" + os.path.join(spool, "unused.db"), True, spool)
    recs = _records(n)
    t = time.perf_counter()
    for r in recs:
        sink.record(r)
    return (time.perf_counter() - t) / n * 1e6


def bench_background(n: int, audit: bool, spool: str) -> float:
    """µs per record spent by the writer before the INSERT: row + scrub, metrics, audit line."""
    from sluice.usage_store import to_row

    sink = _sink("sqlite:///" + os.path.join(spool, "unused.db"), audit, spool)
    recs = _records(n)
    t = time.perf_counter()
    for i in range(0, n, 1000):
        batch = recs[i : i + 1000]
        rows = [to_row(r, sink.writer.clean) for r in batch]
        data = sink._observe(batch, rows)
        sink.writer.audit_out(data)  # type: ignore[misc]
    return (time.perf_counter() - t) / n * 1e6


def bench_metrics(n: int, spool: str) -> float:
    """µs per record for the Prometheus updates alone (part of the writer's work)."""
    from sluice.usage_store import to_row

    sink = _sink("sqlite:///" + os.path.join(spool, "unused.db"), False, spool)
    rows = [to_row(r, sink.writer.clean) for r in _records(n)]
    t = time.perf_counter()
    for i in range(0, n, 1000):  # in the writer's batches
        sink.metrics.observe_batch(rows[i : i + 1000])
    return (time.perf_counter() - t) / n * 1e6


async def bench_throughput(url: str, n: int, spool: str) -> float:
    """Rows/s written by the background writer, queue to committed rows."""
    sink = _sink(url, True, spool)
    await sink.start()
    recs = _records(n)
    t = time.perf_counter()
    for r in recs:
        sink.record(r)
    while sink.writer.written < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t
    await sink.close()
    assert sink.writer.dropped == 0 and sink.writer.spooled == 0
    return n / elapsed


async def _pg_database(base: str) -> tuple[str, str]:
    import asyncpg

    name = f"sluice_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base + "/postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return base + "/" + name, name


async def _pg_drop(base: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base + "/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def main() -> None:
    """Print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    args = ap.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        # Best of three: the figures are for an idle machine, not for the neighbours' load.
        rec = min(bench_record(n, tmp) for _ in range(3))
        print(f"record() on the request path:      {rec:7.2f} µs/record")
        on = min(bench_background(n, True, tmp) for _ in range(3))
        off = min(bench_background(n, False, tmp) for _ in range(3))
        print(f"writer work, audit log on:         {on:7.2f} µs/record")
        print(f"writer work, audit log off:        {off:7.2f} µs/record")
        prom = min(bench_metrics(n, tmp) for _ in range(3))
        print(f"  of which Prometheus updates:     {prom:7.2f} µs/record")
        sqlite = "sqlite:///" + str(Path(tmp) / "bench.db")
        db.upgrade(sqlite)
        rate = asyncio.run(bench_throughput(sqlite, n, tmp))
        print(f"sustained writes, SQLite:          {rate:9,.0f} rows/s")
        try:
            url, name = asyncio.run(_pg_database(args.postgres))
        except OSError as exc:
            print(f"PostgreSQL skipped: {exc}")
            return
        try:
            db.upgrade(url)
            rate = asyncio.run(bench_throughput(url, n, tmp))
            print(f"sustained writes, PostgreSQL:      {rate:9,.0f} rows/s")
        finally:
            asyncio.run(_pg_drop(args.postgres, name))


if __name__ == "__main__":
    main()
