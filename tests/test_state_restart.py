"""A Redis restart or outage never re-grants what a window or budget period already spent
(found by `make soak`: an empty Redis after a restart let a team spend its budget twice)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sluice.state import Counter, MemoryState
from sluice.state_redis import RedisState
from tests.traffic_util import redis_server

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
