"""Usage records end to end: one row and one audit line per request under every fault, on
SQLite and PostgreSQL; storage cut mid-test and restored (spool drained, nothing lost);
SIGTERM flush; a canary key found nowhere."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from sluice import db
from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.usage_helpers import (
    CuttableProxy,
    metric_value,
    read_rows,
    sqlite_bytes,
    storage_url,
    wait_rows,
)

__all__ = ["storage_url"]  # a fixture: SQLite and PostgreSQL variants

TOKEN = "tok-usage-test-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NATIVE = "/openai/v1/chat/completions"


def _chat(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi there"}], "stream": stream}


def _disconnect_mid_stream(url: str, rid: str) -> None:
    """Read the first bytes of a slow stream, then hang up."""
    with httpx.Client(timeout=10) as c:
        body = _chat("gpt-x-slowstream", stream=True)
        headers = {**AUTH, "X-Request-ID": rid}
        with c.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                break


def _send_every_fault(gw: Gateway) -> dict[str, tuple[int, str | None]]:
    """One request per case; returns request id → the (status, error_code) its row must have."""
    cases: dict[str, tuple[dict[str, Any], int, str | None]] = {
        "ok": ({"json": _chat("gpt-4o-mini")}, 200, None),
        "stream": ({"json": _chat("gpt-4o-mini", True)}, 200, None),
        "nousage": ({"json": _chat("gpt-x-nousage", True)}, 200, None),
        "upstream500": ({"json": _chat("gpt-x-500")}, 500, "EXTERNAL_SERVICE_ERROR"),
        "badjson": ({"content": b"{not json"}, 400, "VALIDATION_ERROR"),
        "nomessages": ({"json": {"model": "gpt-4o-mini"}}, 400, "VALIDATION_ERROR"),
        "badheader": (
            {"json": _chat("gpt-4o-mini"), "headers": {"X-Base-URL": "http://evil"}},
            400,
            "VALIDATION_ERROR",
        ),
        "noauth": ({"json": _chat("gpt-4o-mini"), "headers": {"Authorization": ""}}, 401, None),
        "reset": ({"json": _chat("gpt-x-reset", True)}, 502, "NETWORK_ERROR"),
        "embed": (
            {"json": {"model": "gpt-embed", "input": "hi"}, "path": "/v1/embeddings"},
            200,
            None,
        ),
        # Native pass-through records on its own; refused bodies are recorded by the dispatcher.
        "native": ({"json": _chat("gpt-4o-mini"), "path": NATIVE}, 200, None),
        "native500": ({"json": _chat("gpt-x-500"), "path": NATIVE}, 500, "EXTERNAL_SERVICE_ERROR"),
        "nativebase": (
            {"json": {**_chat("gpt-4o-mini"), "api_base": "http://evil"}, "path": NATIVE},
            400,
            "VALIDATION_ERROR",
        ),
    }
    expected: dict[str, tuple[int, str | None]] = {}
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for name, (kw, status, code) in cases.items():
            rid = f"t-{name}-{time.monotonic_ns()}"
            headers = {**AUTH, "X-Request-ID": rid, **kw.get("headers", {})}
            headers = {k: v for k, v in headers.items() if v}
            path = kw.get("path", "/v1/chat/completions")
            r = c.post(path, json=kw.get("json"), content=kw.get("content"), headers=headers)
            assert r.headers["x-request-id"] == rid
            http_status = 200 if name == "reset" else status  # the stream had already begun
            assert r.status_code == http_status, (name, r.text)
            expected[rid] = (status, code if name != "noauth" else "UNAUTHORIZED")
    rid = f"t-disconnect-{time.monotonic_ns()}"
    _disconnect_mid_stream(gw.url, rid)
    expected[rid] = (499, "CLIENT_DISCONNECTED")
    return expected


def test_a_row_and_an_audit_line_for_every_request(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, storage_url: str
) -> None:
    config = openai_config(fake_openai, auth={"tokens": [TOKEN]}, storage={"url": storage_url})
    gw = start_gateway(config)
    expected = _send_every_fault(gw)
    rows = wait_rows(storage_url, len(expected))
    by_id = {r["request_id"]: r for r in rows}
    assert len(rows) == len(expected) and set(by_id) == set(expected)
    for rid, (status, code) in expected.items():
        assert (by_id[rid]["status"], by_id[rid]["error_code"]) == (status, code), rid
    ok = next(r for rid, r in by_id.items() if rid.startswith("t-ok-"))
    assert ok["provider"] == "openai" and ok["model"] == "gpt-4o-mini"
    assert ok["prompt_tokens"] > 0 and ok["completion_tokens"] == 6 and not ok["tokens_estimated"]
    assert ok["attempts"] == 1 and ok["latency_ms"] > 0 and ok["overhead_ms"] is not None
    stream = next(r for rid, r in by_id.items() if rid.startswith("t-stream-"))
    assert stream["stream"] and stream["completion_tokens"] == 6 and not stream["tokens_estimated"]
    nousage = next(r for rid, r in by_id.items() if rid.startswith("t-nousage-"))
    assert nousage["tokens_estimated"] and nousage["completion_tokens"] > 0
    failed = next(r for rid, r in by_id.items() if rid.startswith("t-upstream500-"))
    assert failed["attempts"] == 3  # two retries of a 5xx
    gone = next(r for rid, r in by_id.items() if rid.startswith("t-disconnect-"))
    assert gone["completion_tokens"] >= 1  # tokens counted so far
    audit = gw.wait_audit(len(expected))
    assert sorted(a["request_id"] for a in audit) == sorted(expected)
    assert all(a["status"] == by_id[a["request_id"]]["status"] for a in audit)
    assert gw.stop() in (0, -signal.SIGTERM)
    assert len(read_rows(storage_url)) == len(expected)  # shutdown added no duplicates
    assert "dropped" not in gw.stderr()


def test_sigterm_flushes_queued_records(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/flush.db"
    # A 60 s linger keeps every record in memory until shutdown.
    logging_conf = {"batch_linger_s": 60}
    gw = start_gateway(openai_config(fake_openai, storage={"url": url}, logging=logging_conf))
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for _ in range(25):
            assert c.post("/v1/chat/completions", json=_chat("gpt-4o-mini")).status_code == 200
    time.sleep(0.3)
    assert read_rows(url) == []  # still queued
    assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert len(read_rows(url)) == 25
    assert len(gw.audit()) == 25


def test_storage_down_then_back_loses_nothing(
    start_gateway: Callable[..., Gateway],
    fake_openai: FakeOpenAI,
    pg_database: str,
    tmp_path: Path,
) -> None:
    db.upgrade(pg_database)
    proxy = CuttableProxy(5432).restore()
    try:
        via_proxy = pg_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        spool = tmp_path / "spool"
        logging_conf = {"spool_dir": str(spool)}
        gw = start_gateway(
            openai_config(fake_openai, storage={"url": via_proxy}, logging=logging_conf)
        )
        with httpx.Client(base_url=gw.url, timeout=30) as c:

            def burst(n: int) -> None:
                for _ in range(n):
                    r = c.post("/v1/chat/completions", json=_chat("gpt-4o-mini"))
                    assert r.status_code == 200  # storage being down never fails a request

            burst(5)
            assert len(wait_rows(pg_database, 5)) == 5
            proxy.cut()
            burst(20)
            deadline = time.monotonic() + 20
            while metric_value(c.get("/metrics").text, "sluice_usage_records_spooled_total") < 20:
                assert time.monotonic() < deadline, "records were not spooled"
                time.sleep(0.2)
            assert list(spool.glob("usage-*"))  # on disk while storage is away
            assert len(read_rows(pg_database)) == 5
            proxy.restore()
            burst(5)
            assert len(wait_rows(pg_database, 30, timeout=30)) == 30
            text = c.get("/metrics").text
        assert metric_value(text, "sluice_usage_records_dropped_total") == 0
        assert not list(spool.glob("usage-*"))  # drained and removed
        assert gw.stop() in (0, -signal.SIGTERM)
        assert len(read_rows(pg_database)) == 30
    finally:
        proxy.close()


def test_storage_down_at_shutdown_spools_then_next_start_drains(
    start_gateway: Callable[..., Gateway],
    fake_openai: FakeOpenAI,
    pg_database: str,
    tmp_path: Path,
) -> None:
    db.upgrade(pg_database)
    proxy = CuttableProxy(5432)  # never listening: storage is down for the first gateway
    try:
        via_proxy = pg_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        # A static token: with storage down at start, open mode cannot be proven and auth
        # fails closed (SPEC §6), so the caller authenticates without storage.
        conf = openai_config(
            fake_openai,
            storage={"url": via_proxy},
            logging={"spool_dir": str(tmp_path / "sp")},
            auth={"tokens": ["tok-usage-static"]},
        )
        gw = start_gateway(conf)
        auth = {"Authorization": "Bearer tok-usage-static"}
        with httpx.Client(base_url=gw.url, timeout=30, headers=auth) as c:
            for _ in range(7):
                assert c.post("/v1/chat/completions", json=_chat("gpt-4o-mini")).status_code == 200
        assert gw.stop() in (0, -signal.SIGTERM)
        assert read_rows(pg_database) == []
        proxy.restore()
        start_gateway(conf)  # a new process finds the dead one's spool and drains it
        assert len(wait_rows(pg_database, 7, timeout=20)) == 7
    finally:
        proxy.close()


def test_audit_off_still_stores_rows(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/quiet.db"
    gw = start_gateway(openai_config(fake_openai, storage={"url": url}), env={"AUDIT_LOG": "false"})
    for _ in range(3):
        httpx.post(gw.url + "/v1/chat/completions", json=_chat("gpt-4o-mini"), timeout=30)
    assert len(wait_rows(url, 3)) == 3
    assert gw.stop() in (0, -signal.SIGTERM)
    assert gw.audit() == []


def test_canary_key_appears_nowhere(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    canary = "canary-7f3e9a1c55d24b0e"  # not key-shaped: only configured-secret scrubbing hides it
    upstream = "sk-canary-upstream-91b2c3d4e5"
    url = f"sqlite:///{tmp_path}/canary.db"
    config = openai_config(fake_openai, auth={"tokens": [canary]}, storage={"url": url})
    config["providers"]["openai"]["api_key"] = upstream
    gw = start_gateway(config)
    sent = 0
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for headers, body in [
            ({"Authorization": f"Bearer {canary}"}, _chat("gpt-4o-mini")),
            ({"X-Auth-Token": canary}, _chat("gpt-x-echokey")),  # upstream echoes its key
            ({"Authorization": f"Bearer {canary}"}, _chat(f"gpt-{canary}")),  # key as model
            ({"Authorization": f"Bearer {canary}", "X-Session-ID": canary}, _chat("gpt-4o")),
            ({"Authorization": f"Bearer wrong-{canary}"}, _chat("gpt-4o-mini")),
        ]:
            c.post("/v1/chat/completions", json=body, headers=headers)
            sent += 1
        c.post(f"/v1/chat/completions?auth_token={canary}", content=b"{bad")
        sent += 1
        rows = wait_rows(url, sent)
        metrics = c.get("/metrics").text  # observed before the rows were written
    assert len(rows) == sent
    assert metric_value(metrics, "sluice_requests_total") == sent
    assert gw.stop() in (0, -signal.SIGTERM)
    db_text = repr(rows) + sqlite_bytes(url).decode("latin-1")
    for secret in (canary, upstream):
        for where, text in [
            ("stdout", gw.stdout()),
            ("stderr", gw.stderr()),
            ("db", db_text),
            ("metrics", metrics),
        ]:
            assert secret not in text, f"{secret} leaked into {where}"
    assert "[REDACTED]" in repr(rows)  # the model name carrying the key was scrubbed, not lost
