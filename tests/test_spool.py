"""The spool on its own (claims, orphans, torn lines) and the queue spilling to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from sluice.spool import Spool
from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.usage_helpers import metric_value, read_rows, wait_rows


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_own_and_orphaned_files_but_not_a_live_workers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.append([{"request_id": "a"}, {"request_id": "b"}]) == 2
    orphan = tmp_path / f"usage-{_dead_pid()}.jsonl"
    orphan.write_bytes(b'{"request_id": "c"}\n{"request_id": "torn')  # crashed mid-line
    live_other = tmp_path / f"usage-{os.getppid()}.jsonl"  # a live process's file
    live_other.write_bytes(b'{"request_id": "z"}\n')
    assert spool.pending()
    claimed = spool.claim()
    assert len(claimed) == 2 and all(p.suffix == ".claimed" for p in claimed)
    ids = sorted(r["request_id"] for p in claimed for r in spool.read(p))
    assert ids == ["a", "b", "c"] and spool.unreadable == 1
    spool.append([{"request_id": "d"}])  # appends after a claim go to a fresh file
    assert [r["request_id"] for r in spool.read(spool.live)] == ["d"]
    for p in claimed:
        spool.done(p)
    assert live_other.exists() and not orphan.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live_other.name, spool.live.name])


def test_full_queue_spills_to_disk_and_nothing_is_lost(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/spill.db"
    logging_conf = {"queue_size": 2, "batch_linger_s": 0.5, "spool_dir": str(tmp_path / "sp")}
    gw = start_gateway(openai_config(fake_openai, storage={"url": url}, logging=logging_conf))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for _ in range(20):
            assert c.post("/v1/chat/completions", json=body).status_code == 200
        rows = wait_rows(url, 20)
        text = c.get("/metrics").text
    assert len(rows) == 20 and len({r["request_id"] for r in rows}) == 20
    assert metric_value(text, "sluice_usage_records_spooled_total") > 0  # the spill happened
    assert metric_value(text, "sluice_usage_records_dropped_total") == 0
    # Spilled records are audited and counted once, when drained.
    assert metric_value(text, "sluice_requests_total") == 20
    assert sorted(a["request_id"] for a in gw.wait_audit(20)) == sorted(
        r["request_id"] for r in rows
    )


async def _ids_once_written(writer: Any, n: int, url: str, spool: Path) -> list[str]:
    """Wait (≤ 10 s) until `writer` has written `n` rows, close it, and return the request
    ids stored, sorted; its spool must be empty by then."""
    import asyncio

    for _ in range(200):
        if writer.written >= n:
            break
        await asyncio.sleep(0.05)
    await writer.close()
    rows = await asyncio.to_thread(read_rows, url)
    assert not list(spool.glob("usage-*"))
    return sorted(r["request_id"] for r in rows)


async def test_a_record_after_shutdown_is_spooled_and_the_next_start_drains_it(
    tmp_path: Path,
) -> None:
    import asyncio

    from sluice import db
    from sluice.usage import new_record
    from sluice.usage_store import UsageWriter

    url = f"sqlite:///{tmp_path}/late.db"
    await asyncio.to_thread(db.upgrade, url)

    def writer() -> UsageWriter:
        return UsageWriter(url, Spool(tmp_path / "sp"), lambda b, rows: b"", lambda s: s)

    first = writer()
    await first.start()
    first.put(new_record("in-time", "POST", "/v1/chat/completions"))
    await first.close()
    first.put(new_record("late", "POST", "/v1/chat/completions"))  # e.g. a drained stream
    assert (first.written, first.spooled, first.dropped) == (1, 1, 0)
    second = writer()
    await second.start()
    assert await _ids_once_written(second, 1, url, tmp_path / "sp") == ["in-time", "late"]


async def test_sqlite_unwritable_spools_then_drains_once_it_is_back(tmp_path: Path) -> None:
    """SQLite rows go through the standard driver (db.SqliteAppender): a file that cannot be
    written sends the batch to the spool, and the rows arrive once it can."""
    import asyncio

    from sluice import db
    from sluice.usage import new_record
    from sluice.usage_store import UsageWriter

    url = f"sqlite:///{tmp_path}/later/usage.db"  # its folder does not exist yet
    writer = UsageWriter(
        url, Spool(tmp_path / "sp"), lambda b, rows: b"", lambda s: s, linger_s=0.01
    )
    await writer.start()
    writer.put(new_record("while-down", "POST", "/v1/chat/completions"))
    for _ in range(100):
        if writer.spooled:
            break
        await asyncio.sleep(0.02)
    assert (writer.written, writer.spooled, writer.dropped) == (0, 1, 0)
    (tmp_path / "later").mkdir()
    await asyncio.to_thread(db.upgrade, url)
    writer.put(new_record("after", "POST", "/v1/chat/completions"))
    # Backoff 0.5 s, then the new row and the spooled one.
    assert await _ids_once_written(writer, 2, url, tmp_path / "sp") == ["after", "while-down"]


async def test_records_arriving_during_an_insert_wait_for_the_next_linger(tmp_path: Path) -> None:
    """A steady trickle (one record a millisecond, as at concurrency 1) is written in one
    batch per linger, not as a chain of one-row transactions (one fsync each) started
    whenever a batch took longer than the gap between records (here a slow observer; on a
    real disk, the fsync)."""
    import asyncio
    import time

    from sluice import db
    from sluice.usage import new_record
    from sluice.usage_store import UsageWriter

    url = f"sqlite:///{tmp_path}/trickle.db"
    await asyncio.to_thread(db.upgrade, url)
    sizes: list[int] = []

    def on_batch(batch: object, rows: list[dict[str, Any]]) -> bytes:
        sizes.append(len(rows))
        time.sleep(0.004)  # in the writer's thread: a batch takes longer than the gap
        return b""

    writer = UsageWriter(url, Spool(tmp_path / "sp"), on_batch, lambda s: s, linger_s=0.05)
    await writer.start()
    for i in range(300):  # ~0.35 s at one a millisecond
        writer.put(new_record(f"r{i}", "POST", "/v1/chat/completions"))
        await asyncio.sleep(0.001)
    ids = await _ids_once_written(writer, 300, url, tmp_path / "sp")
    assert len(ids) == 300 and sum(sizes) == 300
    assert len(sizes) <= 20, sizes  # ~0.35 s / 0.05 s lingers (the old drain loop: ~100)


def test_sqlite_rows_keep_nulls_and_flags(tmp_path: Path) -> None:
    """db.SqliteAppender binds None and bools through registered adapters (the driver's
    fast path): they must still land as SQL NULL and as the integers 0 and 1."""
    import sqlite3

    from sluice import db
    from sluice.usage import new_record
    from sluice.usage_store import ROW_FIELDS, to_row

    url = f"sqlite:///{tmp_path}/flags.db"
    db.upgrade(url)
    rec = new_record("req_flags", "POST", "/v1/chat/completions")
    rec.stream, rec.cache_hit, rec.tokens_estimated = True, False, True
    appender = db.SqliteAppender(url, db.usage, ROW_FIELDS)
    appender.insert([to_row(rec, lambda s: s)])
    appender.close()
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    got = conn.execute(
        "SELECT typeof(error_code), typeof(cost_usd), typeof(user), stream, cache_hit,"
        " tokens_estimated, typeof(stream) FROM usage WHERE request_id = 'req_flags'"
    ).fetchone()
    conn.close()
    assert got == ("null", "null", "null", 1, 0, 1, "integer")
