"""`within(seconds)`: asyncio.timeout's meaning for the hot path, at a fraction of its cost.

Every upstream attempt and every wait for a stream's next piece is bounded. With uvloop,
`async with asyncio.timeout(s)` costs ~6.6 µs (a Timeout object, two coroutines for the
`async with`, a timer handle made, rescheduled and cancelled), and a stream of 20 pieces
pays it 21 times. Here a plain `with` block puts its deadline in a slot of a coarse wheel,
one dict per `_TICK_S` of time, and takes it out on leaving: ~1.6 µs (both measured by
`python -m bench.experiments.timers`, 2026-12-02). One timer per event loop, armed for the
earliest slot, expires what is due. A deadline fires up to `_TICK_S` late, which no timeout
here (whole seconds, or tenths in tests) notices.

On expiry the task is cancelled, and leaving the block turns that CancelledError into
TimeoutError, as asyncio.timeout does; a cancellation from elsewhere (a client gone, a
shutdown) passes through untouched.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from types import TracebackType
from typing import Protocol

_TICK_S = 0.01


class within:  # lower case: used like asyncio.timeout
    """`with within(seconds):` — TimeoutError when the block runs longer (in a task)."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_key", "_task", "_wheel")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False
        self._key = 0  # its slot, set by the wheel

    def __enter__(self) -> within:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("within() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        wheel = self._wheel = Wheel.of(task.get_loop())
        wheel.add(self, self._delay)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wheel.remove(self)
        if (
            self._expired
            and exc_type is asyncio.CancelledError
            and self._task.uncancel() <= self._cancelling
        ):
            raise TimeoutError from exc

    def _expire(self) -> None:
        if not self._expired and not self._task.done():
            self._expired = True
            self._task.cancel()


class Due(Protocol):
    """What waits on the wheel: its slot, and what to do when due."""

    _key: int

    def _expire(self) -> None: ...


class Wheel:
    """The deadlines of one event loop, by slot (`ceil(at / _TICK_S)`), with a heap of slot
    numbers and one timer for the earliest. Entries are `within` blocks and the disconnect
    watches' late starts (sluice.asgi). One that ends first removes itself from its slot; a
    slot's number stays in the heap until its time (the timer then finds it empty)."""

    _current: Wheel | None = None  # the serving loop's (a process serves one loop)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, dict[Due, None]] = {}
        self.heap: list[int] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_slot = math.inf

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Wheel:
        current = cls._current
        if current is None or current.loop is not loop:
            current = cls._current = cls(loop)  # a new loop (tests): the old one's are gone
        return current

    def add(self, w: Due, delay: float) -> None:
        key = math.ceil((self.loop.time() + delay) / _TICK_S)
        w._key = key
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = {}
            heapq.heappush(self.heap, key)
            if key < self.timer_slot:
                self._arm(key)
        slot[w] = None

    def remove(self, w: Due) -> None:
        slot = self.slots.get(w._key)
        if slot is not None:
            slot.pop(w, None)
            if not slot:
                del self.slots[w._key]

    def _arm(self, key: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_slot = key
        self.timer = self.loop.call_at(key * _TICK_S, self._run)

    def _run(self) -> None:
        self.timer, self.timer_slot = None, math.inf
        now = math.floor(self.loop.time() / _TICK_S)
        heap = self.heap
        while heap and heap[0] <= now:
            slot = self.slots.pop(heapq.heappop(heap), None)
            if slot:
                for w in slot:
                    w._expire()
        while heap and heap[0] not in self.slots:  # emptied slots: no timer for them
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0])
