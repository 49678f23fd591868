"""Graceful drain (SPEC §6): what the gateway adds to uvicorn's own shutdown.

On SIGTERM (or SIGINT) uvicorn stops accepting, closes idle keep-alive connections and waits
for in-flight responses; past its `timeout_graceful_shutdown` it cancels whatever is left,
cutting streams without a word. `Drain` marks the gateway as draining the moment the signal
arrives (so /health/ready answers 503) and, `timeout_s` later, ends each in-flight routed
request itself: a stream with one SSE error event and no [DONE], a request with a 503.
uvicorn's own timeout is set a little longer (`BACKSTOP_S`) so that it only ever reaps what
this could not end.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

from sluice.errors import GatewayError

log = logging.getLogger("sluice")

BACKSTOP_S = 3.0  # uvicorn's graceful timeout = drain_timeout_s + this
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """The draining state of one gateway process and its in-flight routed requests."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.expired = False
        self._inflight: set[asyncio.Task[Any]] = set()
        self._ended: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Chain onto the server's SIGTERM/SIGINT handlers (call from the running loop)."""
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; an embedding host drains via begin()
        for sig in _SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Give the signals back to whoever had them."""
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, handler)
        self._previous.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self.draining:
            self._loop.call_soon_threadsafe(self.begin)
        previous = self._previous.get(sig)
        if callable(previous):
            previous(sig, frame)

    def begin(self) -> None:
        """Start draining: not ready any more; in-flight requests end `timeout_s` from now."""
        if self.draining:
            return
        self.draining = True
        log.warning(
            "draining: %d request(s) in flight, %.0f s to finish",
            len(self._inflight),
            self.timeout_s,
        )
        self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._inflight:
            log.warning("drain timeout: ending %d request(s) still in flight", len(self._inflight))
        for task in self._inflight:
            self._ended.add(task)
            task.cancel("sluice drain timeout")

    def track(self, task: asyncio.Task[Any] | None) -> None:
        """Count a routed request as in flight (ended at the drain deadline)."""
        if task is None:
            return
        if self.expired:
            self._ended.add(task)
            task.cancel("sluice drain timeout")
        self._inflight.add(task)

    def untrack(self, task: asyncio.Task[Any] | None) -> None:
        """The request is finished."""
        self._inflight.discard(task)
        self._ended.discard(task)

    def claim(self, task: asyncio.Task[Any] | None) -> bool:
        """True (once) if `task` was cancelled by the drain deadline; its cancel is undone so
        the request can still write its ending."""
        if task is None or task not in self._ended:
            return False
        self._ended.discard(task)
        task.uncancel()
        return True


def ended_error() -> GatewayError:
    """What a request still in flight at the drain deadline gets (503, or one SSE event)."""
    return GatewayError(
        "SERVICE_UNAVAILABLE", "the gateway is shutting down; retry the request on another instance"
    )


def run_workers(config: Any) -> None:
    """uvicorn's multi-process supervisor (`--workers N`), except that on SIGTERM/SIGINT it
    closes its own copy of the listening socket before signalling the workers: otherwise the
    socket stays open in the supervisor while the workers drain, and new connections are
    accepted by the kernel and left unanswered instead of being refused."""
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_term(self) -> None:
            self._stop_listening()
            super().handle_term()

        def handle_int(self) -> None:
            self._stop_listening()
            super().handle_int()

        def _stop_listening(self) -> None:
            for sock in self.sockets:
                sock.close()

    Supervisor(config, sockets=[config.bind_socket()]).run()
