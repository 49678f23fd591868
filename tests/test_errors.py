"""Every error path of SPEC §5–6 over raw HTTP: validation, limits of size, upstream faults,
retries and fallbacks, mid-stream failures, and keys that never leak."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Gateway, free_port, launch_gateway
from tests.fakes.openai_fake import FakeOpenAI

MSG = [{"role": "user", "content": "hi"}]
UPSTREAM_KEY = "sk-test-upstream-key-0001"


@pytest.fixture(scope="module")
def gw(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    dead = free_port()  # nothing listens here: connect errors
    config: dict[str, Any] = {
        "server": {"max_request_bytes": 4096, "upstream_timeout_s": 5, "retry_after_cap_s": 2},
        "providers": {
            "openai": {
                "kind": "openai",
                "api_key": UPSTREAM_KEY,
                "base_url": fake_openai.url,
                "max_retries": 2,
                "timeout_s": 0.8,
            },
            "dead": {
                "kind": "openai",
                "api_key": "sk-dead-0000000001",
                "base_url": f"http://127.0.0.1:{dead}/v1",
                "max_retries": 1,
            },
            "nokey": {"kind": "openai", "base_url": fake_openai.url},
        },
        "models": [
            {"match": "gpt-*", "provider": "openai"},
            {"match": "dead-*", "provider": "dead"},
            {"match": "nokey-*", "provider": "nokey"},
            {
                "name": "fo-400",
                "targets": [
                    {"provider": "openai", "model": "gpt-x-400"},
                    {"provider": "openai", "model": "gpt-4o"},
                ],
            },
            {
                "name": "fo-dead",
                "targets": [
                    {"provider": "dead", "model": "m"},
                    {"provider": "openai", "model": "gpt-4o"},
                ],
            },
        ],
    }
    g = launch_gateway(tmp_path_factory.mktemp("gw"), config)
    yield g
    g.stop()


def post(gw: Gateway, body: Any, path: str = "/v1/chat/completions", **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(gw.url + path, content=content, timeout=15, **kw)


def err(r: httpx.Response) -> dict[str, Any]:
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return dict(e)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", "body"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "body"),
        (b"[" * 2000 + b"]" * 2000, "body"),
        (b"[1, 2]", "body"),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "gpt-4o", "messages": MSG, "temperature": 2.5}, "temperature"),
        ({"model": "gpt-4o", "messages": MSG, "temperature": "hot"}, "temperature"),
        ({"model": "gpt-4o", "messages": MSG, "top_p": 1.5}, "top_p"),
        ({"model": "gpt-4o", "messages": MSG, "presence_penalty": -3}, "presence_penalty"),
        ({"model": "gpt-4o", "messages": MSG, "frequency_penalty": 2.1}, "frequency_penalty"),
        ({"model": "gpt-4o", "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o", "messages": MSG, "stream": "yes"}, "stream"),
        ({"model": 42, "messages": MSG}, "model"),
        ({"model": "gpt-4o", "messages": MSG, "api_base": "http://evil"}, "api_base"),
        (
            {"model": "gpt-4o", "messages": MSG, "metadata": {"x": [{"base_url": "http://evil"}]}},
            "metadata.x[0].base_url",
        ),
        (
            {"model": "gpt-4o", "messages": MSG, "extra": {"custom\\u005fhost": "evil"}},
            "extra.custom_host",
        ),
    ],
    ids=[
        "malformed",
        "bad-utf8",
        "deep-nesting",
        "not-object",
        "no-messages",
        "empty-messages",
        "no-role",
        "bad-role",
        "content-type",
        "temperature-range",
        "temperature-type",
        "top_p",
        "presence",
        "frequency",
        "max_tokens",
        "stream-type",
        "model-type",
        "api_base",
        "nested-base_url",
        "escaped-custom_host",
    ],
)
def test_validation_names_the_field(
    gw: Gateway, fake_openai: FakeOpenAI, body: Any, param: str
) -> None:
    before = len(fake_openai.requests)
    if isinstance(body, dict) and "extra" in body:
        body = orjson.dumps(body).replace(b"custom\\\\u005fhost", b"custom\\u005fhost")
    r = post(gw, body)
    assert r.status_code == 400, r.text
    e = err(r)
    assert e["code"] == "VALIDATION_ERROR" and e["param"] == param, e
    assert len(fake_openai.requests) == before  # reached no provider


def test_upstream_choosing_headers_rejected(gw: Gateway) -> None:
    for h in ("X-Base-URL", "X-Api-Base", "x-portkey-custom-host"):
        r = post(gw, {"model": "gpt-4o", "messages": MSG}, headers={h: "http://evil.example"})
        assert r.status_code == 400 and err(r)["param"] == h.lower()


def test_payload_too_large_by_content_length_and_chunked(gw: Gateway) -> None:
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
    r = post(gw, big)
    assert r.status_code == 413 and err(r)["code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    r = httpx.post(gw.url + "/v1/chat/completions", content=chunks(), timeout=10)
    assert r.status_code == 413


def test_413_without_reading_the_rest(gw: Gateway) -> None:
    """The answer comes as soon as Content-Length passes the limit, before the body is sent."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 99999999\r\n\r\n"
        )
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 413")


def test_upstream_4xx_kept_and_not_retried(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    r = post(gw, {"model": "gpt-x-400", "messages": MSG})
    assert r.status_code == 400
    # SPEC §5: a routed error answer still names the provider and the gateway's own time.
    assert r.headers["x-sluice-provider"] == "openai"
    assert 0 <= float(r.headers["x-sluice-overhead-ms"]) < 1000
    e = err(r)
    assert e["code"] == "EXTERNAL_SERVICE_ERROR" and "Invalid value for 'foo'" in e["message"]
    assert len(fake_openai.requests) == before + 1


def test_no_failover_on_4xx(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    r = post(gw, {"model": "fo-400", "messages": MSG})
    assert r.status_code == 400 and len(fake_openai.requests) == before + 1


def test_5xx_retried_then_reported(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    r = post(gw, {"model": "gpt-x-500", "messages": MSG})
    assert r.status_code == 500 and err(r)["code"] == "EXTERNAL_SERVICE_ERROR"
    assert len(fake_openai.requests) == before + 3  # max_retries=2


def test_flaky_succeeds_on_retry(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    r = post(gw, {"model": "gpt-x-flaky", "messages": MSG, "user": f"u{time.time_ns()}"})
    assert r.status_code == 200


def test_a_whole_answer_that_breaks_midway_is_retried(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    """SPEC §6: retries happen before the client's first byte; a non-streamed answer whose
    body breaks has sent the client nothing yet, so it is retried like a 5xx."""
    before = len(fake_openai.requests)
    r = post(gw, {"model": "gpt-x-bodyreset", "messages": MSG, "user": f"u{time.time_ns()}"})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert len(fake_openai.requests) == before + 2


def test_429_retry_after_honoured_or_returned(gw: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    t0 = time.monotonic()
    r = post(gw, {"model": "gpt-x-429", "messages": MSG})
    assert r.status_code == 429 and err(r)["code"] == "EXTERNAL_SERVICE_ERROR"
    assert (
        len(fake_openai.requests) == before + 3 and time.monotonic() - t0 >= 1.9
    )  # slept Retry-After: 1 twice
    t0 = time.monotonic()
    r = post(gw, {"model": "gpt-x-429long", "messages": MSG})  # Retry-After 120 > cap: not slept on
    assert (
        r.status_code == 429 and r.headers["retry-after"] == "120" and time.monotonic() - t0 < 1.5
    )


def test_connect_error_is_network_error_and_fails_over(gw: Gateway) -> None:
    r = post(gw, {"model": "dead-1", "messages": MSG})
    assert r.status_code == 502 and err(r)["code"] == "NETWORK_ERROR"
    r = post(gw, {"model": "fo-dead", "messages": MSG})
    assert r.status_code == 200


def test_hang_is_upstream_timeout(gw: Gateway) -> None:
    t0 = time.monotonic()
    r = post(gw, {"model": "gpt-x-hang", "messages": MSG})
    assert r.status_code == 504 and err(r)["code"] == "UPSTREAM_TIMEOUT"
    assert time.monotonic() - t0 < 5.5  # inside the one deadline


def test_provider_without_credentials_503(gw: Gateway) -> None:
    r = post(gw, {"model": "nokey-1", "messages": MSG})
    assert r.status_code == 503 and err(r)["code"] == "PROVIDER_UNAVAILABLE"


def test_unknown_model_404(gw: Gateway) -> None:
    r = post(gw, {"model": "llama-nowhere", "messages": MSG})
    assert r.status_code == 404 and err(r)["code"] == "MODEL_NOT_FOUND"
    assert "x-sluice-provider" not in r.headers and "x-sluice-overhead-ms" in r.headers


def test_key_never_in_error_message(gw: Gateway) -> None:
    r = post(gw, {"model": "gpt-x-echokey", "messages": MSG})
    assert r.status_code == 401
    assert UPSTREAM_KEY not in r.text and "sk-test" not in r.text and "REDACTED" in r.text
    assert UPSTREAM_KEY not in gw.stdout() and UPSTREAM_KEY not in gw.stderr()


def _sse(gw: Gateway, model: str) -> list[bytes]:
    body = {"model": model, "messages": MSG, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        data = b"".join(r.iter_raw())
    return [b for b in data.split(b"\n\n") if b]


@pytest.mark.parametrize("model", ["gpt-x-reset", "gpt-x-truncate"])
def test_mid_stream_failure_one_error_event_no_done(gw: Gateway, model: str) -> None:
    events = _sse(gw, model)
    assert b"[DONE]" not in b"".join(events)
    errors = [e for e in events if b'"error"' in e]
    assert len(errors) == 1 and errors[0] == events[-1]
    assert orjson.loads(errors[0].removeprefix(b"data: "))["error"]["code"] == "NETWORK_ERROR"
    contents = [e for e in events if b'"content"' in e]
    assert len(contents) == len(set(contents))  # nothing sent twice


def test_a_stream_that_goes_quiet_ends_with_upstream_timeout(gw: Gateway) -> None:
    """A stream whose upstream stops sending (connection open) is ended once it has been
    quiet for the provider's timeout_s (0.8 s here), not at the 5 s request deadline."""
    t0 = time.monotonic()
    events = _sse(gw, "gpt-x-stall")
    assert time.monotonic() - t0 < 2.5
    assert b"[DONE]" not in b"".join(events)
    error = orjson.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "UPSTREAM_TIMEOUT"
    # what came before the stall was relayed: the role chunk and two words
    assert sum(b'"content"' in e for e in events) == 3


def test_client_disconnect_cancels_upstream_and_records_499(gw: Gateway) -> None:
    body = {"model": "gpt-x-hang", "messages": MSG}
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        raw = orjson.dumps(body)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: gone-1\r\nContent-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    rec = None
    while time.monotonic() < deadline and rec is None:
        rec = next((a for a in gw.audit() if a["request_id"] == "gone-1"), None)
        time.sleep(0.05)
    assert rec is not None and rec["status"] == 499
    assert rec["latency_ms"] < 700  # cancelled at once, not after the 0.8 s attempt timeout
