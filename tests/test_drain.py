"""Graceful drain on SIGTERM (SPEC §6), against the real gateway process.

Streams come from the fake's `-slowstream` mode: `chunks` chunks, `stream_interval` apart.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Gateway, launch_gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI


@pytest.fixture(scope="module")
def paced_fake() -> Iterator[FakeOpenAI]:
    """A fake of its own: these tests change its chunk count and pacing."""
    fake = FakeOpenAI().start()
    fake.stream_interval = 0.1
    yield fake
    fake.stop()


class Call(threading.Thread):
    """One request in a background thread: the status, the SSE data lines, the time taken."""

    def __init__(self, url: str, model: str, stream: bool = True, path: str = "") -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.stream = url, model, stream
        self.path = path or "/v1/chat/completions"
        self.status = 0
        self.data: list[str] = []
        self.body: dict[str, Any] = {}
        self.error: Exception | None = None
        self.first = threading.Event()  # the first SSE event (or the response) arrived
        self.elapsed = 0.0

    def run(self) -> None:
        payload = {
            "model": self.model,
            "stream": self.stream,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 100,
        }
        started = time.monotonic()
        try:
            with httpx.stream("POST", self.url + self.path, json=payload, timeout=60) as resp:
                self.status = resp.status_code
                if not self.stream:
                    self.body = orjson.loads(resp.read())
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line[6:])
                        self.first.set()
        except Exception as exc:
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - started
            self.first.set()


def _gateway(tmp: Path, fake: FakeOpenAI, drain_s: float, args: list[str] | None = None) -> Gateway:
    return launch_gateway(tmp, openai_config(fake, server={"drain_timeout_s": drain_s}), args=args)


def _wait_exit(gw: Gateway, timeout: float) -> int:
    """0 for a clean exit. uvicorn re-raises SIGTERM once its graceful shutdown is done (so a
    supervisor sees the signal's usual status, 143); that counts as clean too."""
    gw.proc.wait(timeout)
    return 0 if gw.proc.returncode == -signal.SIGTERM else int(gw.proc.returncode)


def test_stream_that_fits_the_drain_window_completes_intact(
    tmp_path: Path, paced_fake: FakeOpenAI
) -> None:
    paced_fake.chunks = 15  # ~1.5 s of stream
    gw = _gateway(tmp_path, paced_fake, drain_s=10)
    try:
        call = Call(gw.url, "gpt-4o-slowstream")
        call.start()
        assert call.first.wait(10)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.4)
        # Stop accepting: a new connection is refused while the stream is still running.
        with pytest.raises(httpx.ConnectError):
            httpx.get(gw.url + "/health/live", timeout=2)
        assert call.is_alive(), "the stream should still be in flight"
        call.join(15)
        assert call.error is None
        assert call.status == 200
        assert call.data[-1] == "[DONE]"
        words = [
            orjson.loads(d)["choices"][0]["delta"].get("content")
            for d in call.data[:-1]
            if orjson.loads(d)["choices"]
        ]
        assert len([w for w in words if w]) == 15
        assert not any("error" in orjson.loads(d) for d in call.data[:-1])
        assert _wait_exit(gw, 10) == 0
        audit = [a for a in gw.audit() if a["path"] == "/v1/chat/completions"]
        assert [a["status"] for a in audit] == [200]  # shutdown flushed the record
    finally:
        gw.stop()


def test_requests_past_the_drain_window_end_with_one_error(
    tmp_path: Path, paced_fake: FakeOpenAI
) -> None:
    paced_fake.chunks = 200  # ~20 s: cannot fit
    gw = _gateway(tmp_path, paced_fake, drain_s=1.5)
    try:
        stream = Call(gw.url, "gpt-4o-slowstream")
        hanging = Call(gw.url, "gpt-4o-hang", stream=False)  # upstream answers after 60 s
        messages = Call(gw.url, "gpt-4o-slowstream", path="/v1/messages")  # Anthropic's shape
        for call in (stream, hanging, messages):
            call.start()
        assert stream.first.wait(10) and messages.first.wait(10)
        time.sleep(0.3)  # let the non-streamed one reach the upstream
        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        for call in (stream, hanging, messages):
            call.join(15)
        took = time.monotonic() - signalled
        assert 1.3 < took < 4.5, took
        # The stream: data so far intact, then exactly one error event, and no [DONE].
        assert stream.error is None
        assert stream.status == 200
        assert "[DONE]" not in stream.data
        events = [orjson.loads(d) for d in stream.data]
        errors_ = [e for e in events if "error" in e]
        assert len(errors_) == 1 and events[-1] is errors_[0]
        assert errors_[0]["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert len(events) > 3  # it was streaming before the deadline
        # The plain request: a 503 in OpenAI's error shape.
        assert hanging.error is None
        assert hanging.status == 503
        assert hanging.body["error"]["code"] == "SERVICE_UNAVAILABLE"
        # /v1/messages: its stream ends with Anthropic's one `error` event.
        assert messages.error is None and messages.status == 200
        last = orjson.loads(messages.data[-1])
        assert last["type"] == "error" and last["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert sum(1 for d in messages.data if orjson.loads(d)["type"] == "error") == 1
        assert _wait_exit(gw, 10) == 0
        statuses = sorted(
            (a["path"], a["stream"], a["status"], a["error_code"]) for a in gw.audit()
        )
        assert statuses == [
            ("/v1/chat/completions", False, 503, "SERVICE_UNAVAILABLE"),
            ("/v1/chat/completions", True, 503, "SERVICE_UNAVAILABLE"),
            ("/v1/messages", True, 503, "SERVICE_UNAVAILABLE"),
        ]
    finally:
        gw.stop()


def test_idle_gateway_exits_at_once_on_sigterm(tmp_path: Path, paced_fake: FakeOpenAI) -> None:
    gw = _gateway(tmp_path, paced_fake, drain_s=30)
    try:
        assert httpx.get(gw.url + "/health/ready", timeout=5).status_code == 200
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert _wait_exit(gw, 10) == 0
        assert time.monotonic() - started < 3  # nothing in flight: no waiting for the window
    finally:
        gw.stop()
