"""A Redis restart or outage never re-grants what a window or budget period already spent
(found by `make soak`: an empty Redis after a restart let a team spend its budget twice)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sluice.state import Counter, MemoryState
from sluice.state_redis import RedisState
from tests.traffic_util import RedisServer, redis_server

HOUR_MS = 3_600_000


def _budget(amount: int) -> list[Counter]:
    return [Counter("b:team:t1:2026-11", amount, 100, HOUR_MS)]


async def _until_up(state: RedisState, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while state.down:
        assert time.monotonic() < end, "the probe did not reconnect"
        await asyncio.sleep(0.1)


async def test_restart_resumes_from_what_was_seen(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        state = RedisState(server.url, "t:", 1, MemoryState())
        await state.start()
        try:
            assert (await state.reserve(_budget(90))).ok
            server.stop()
            server.proc = None
            server.start()  # empty: no persistence
            # The first call after the restart may meet the dead connection: it falls back to
            # the local counter, which starts from the 90 already spent.
            first = await state.reserve(_budget(20))
            assert not first.ok
            await _until_up(state)
            assert not (await state.reserve(_budget(20))).ok  # 90 + 20 > 100
            assert (await state.reserve(_budget(10))).ok
            assert int(server.client().get("t:b:team:t1:2026-11") or 0) == 100
        finally:
            await state.close()


async def test_outage_spend_joins_the_shared_counter(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        state = RedisState(server.url, "t:", 2, MemoryState())  # two instances: half each
        await state.start()
        try:
            assert (await state.reserve(_budget(40))).ok
            server.stop()
            # Down: this instance's share is 100 // 2 = 50, starting from 40 // 2 = 20.
            assert (await state.reserve(_budget(30))).ok
            assert not (await state.reserve(_budget(1))).ok
            server.proc = None
            server.start()
            await _until_up(state)
            # Back, empty: the shared counter resumes at 40 + 30 = 70.
            assert (await state.reserve(_budget(30))).ok
            assert not (await state.reserve(_budget(1))).ok
        finally:
            await state.close()


async def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _two_instances_saw_30_and_60(
    server: RedisServer,
) -> AsyncIterator[tuple[RedisState, RedisState]]:
    """Two instances sharing `server`, each past its first heartbeat (the epoch is known),
    that reserved 30 on one budget counter each: a last saw it at 30, b at 60."""
    a = RedisState(server.url, "t:", 2, MemoryState())
    b = RedisState(server.url, "t:", 2, MemoryState())
    for st in (a, b):
        await st.start()
    try:
        await _until(lambda: bool(a.epoch and b.epoch), "no heartbeat set the epoch")
        assert (await a.reserve(_budget(30))).ok
        assert (await b.reserve(_budget(30))).ok
        yield a, b
    finally:
        for st in (a, b):
            await st.close()


async def test_an_empty_restart_resumes_from_the_largest_view(tmp_path: Path) -> None:
    """Two instances saw one counter at different values (each saw it after its own
    reservation); Redis goes away and comes back empty. Whichever instance rejoins first,
    the counter resumes from the larger view plus what each spent meanwhile (found by
    `make soak`: a key's rpm passed by 1-3 in the minute of an empty restart, because the
    counter was recreated from the first instance's smaller view)."""
    with redis_server(tmp_path) as server:
        async with _two_instances_saw_30_and_60(server) as (a, b):
            old = a.epoch
            server.stop()
            # Down: each spends on its own share (100 // 2 = 50, from its view // 2).
            assert (await a.reserve(_budget(1))).ok and a.down
            assert (await b.reserve(_budget(1))).ok and b.down
            server.proc = None
            server.start()  # empty: no persistence
            await _until_up(a)
            await _until_up(b)
            assert a.epoch == b.epoch != old
            assert int(server.client().get("t:b:team:t1:2026-11") or 0) == 60 + 1 + 1
            assert not (await a.reserve(_budget(39))).ok
            assert (await b.reserve(_budget(38))).ok


async def test_a_flush_is_noticed_by_the_next_reservation(tmp_path: Path) -> None:
    """Redis loses its data while every instance is connected and before any heartbeat
    notices: each instance's next reservation finds another epoch and brings its views back
    before counting. Before, the first to reserve recreated the counter from its own view
    (30) and the other counted on from there, losing its larger view (60) for good."""
    with redis_server(tmp_path) as server:
        async with _two_instances_saw_30_and_60(server) as (a, b):
            for st in (a, b):  # no heartbeat: only a reservation can notice the flush
                assert st._loop_task is not None
                st._loop_task.cancel()
            old = a.epoch
            server.client().flushall()
            assert (await a.reserve(_budget(1))).ok
            assert (await b.reserve(_budget(1))).ok
            assert not a.down and not b.down and a.epoch == b.epoch != old
            assert int(server.client().get("t:b:team:t1:2026-11") or 0) == 60 + 1 + 1
            assert not (await a.reserve(_budget(39))).ok
            assert (await b.reserve(_budget(38))).ok


async def test_a_flush_is_noticed_by_the_heartbeat(tmp_path: Path) -> None:
    """Redis loses its data while every instance is connected (here FLUSHALL): the next
    heartbeat sees a new epoch and each instance brings its views back."""
    with redis_server(tmp_path) as server:
        async with _two_instances_saw_30_and_60(server) as (a, b):
            old = a.epoch
            server.client().flushall()
            await _until(lambda: a.epoch == b.epoch != old, "the heartbeats missed the flush")
            await _until(
                lambda: int(server.client().get("t:b:team:t1:2026-11") or 0) == 60,
                "the views did not come back",
                timeout=2,
            )
            assert not a.down and not b.down
            assert not (await a.reserve(_budget(41))).ok
            assert (await b.reserve(_budget(40))).ok
