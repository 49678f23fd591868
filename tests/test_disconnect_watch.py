"""DisconnectWatch's late start: watches start when due, in one timer per loop; a request
that ends first never starts its watch; a client that leaves cancels the request."""

from __future__ import annotations

import asyncio
from typing import Any

from sluice.asgi import DisconnectWatch


async def test_late_watches_start_when_due_and_stopped_ones_never() -> None:
    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    task = asyncio.current_task()
    stopped = DisconnectWatch(task, never, 0.1)
    stopped.stop()  # answered before it was due
    kept = DisconnectWatch(task, never, 0.1)
    short = DisconnectWatch(task, never, 0.005)  # due before those already waiting
    await asyncio.sleep(0.04)
    assert short._watcher is not None and kept._watcher is None
    await asyncio.sleep(0.1)
    assert kept._watcher is not None and stopped._watcher is None
    assert not kept.gone
    kept.stop()
    short.stop()


async def test_a_client_that_leaves_cancels_the_request() -> None:
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def request() -> None:
        watch = DisconnectWatch(asyncio.current_task(), receive, 0.01)
        try:
            await asyncio.sleep(5)
        finally:
            assert watch.gone
            watch.stop()

    running = asyncio.ensure_future(request())
    await asyncio.sleep(0.03)  # the watch has started
    left.set()
    try:
        await asyncio.wait_for(running, 1)
    except asyncio.CancelledError:
        pass
    assert running.cancelled()
