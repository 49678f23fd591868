"""sluice.deadlines.within: asyncio.timeout's meaning — TimeoutError when the block overruns
(late by at most a tick), nothing when it finishes, and other cancellations untouched."""

from __future__ import annotations

import asyncio
import time

import pytest

from sluice.deadlines import _TICK_S, within


async def test_an_overrun_is_a_timeout_error_soon_after_the_deadline() -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError), within(0.05):
        await asyncio.sleep(5)
    took = time.monotonic() - t0
    assert 0.05 <= took < 0.05 + _TICK_S + 0.05
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_block_that_finishes_is_left_alone_and_its_deadline_forgotten() -> None:
    for _ in range(3):
        with within(0.02):
            await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # past those deadlines: nothing fires
    with within(1):
        await asyncio.sleep(0.01)


async def test_many_deadlines_fire_in_order_and_only_those_due() -> None:
    async def guarded(delay: float, work: float) -> str:
        try:
            with within(delay):
                await asyncio.sleep(work)
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.gather(
        guarded(0.03, 1), guarded(0.2, 0.05), guarded(0.01, 1), guarded(5, 0)
    )
    assert results == ["timeout", "done", "timeout", "done"]


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def guarded() -> None:
        with within(5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
