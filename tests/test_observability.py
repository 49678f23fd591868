"""/metrics (one worker and several), GET /admin/usage, `sluice usage`, retention."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice import db
from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.usage_helpers import insert_rows, metric_value, read_rows, storage_url, wait_rows

__all__ = ["storage_url"]  # a fixture: SQLite and PostgreSQL variants

ADMIN = "admin-key-observability-01"


def _chat(model: str, stream: bool = False, user: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    if user:
        body["user"] = user
    return body


def _wait_metric(url: str, name: str, want: float, **labels: str) -> str:
    """/metrics once `name` (summed over matching samples) reaches `want`."""
    end = time.monotonic() + 15
    while True:
        text = httpx.get(url + "/metrics", timeout=10).text
        if metric_value(text, name, **labels) >= want or time.monotonic() > end:
            return text
        time.sleep(0.1)


def test_metrics_count_requests_tokens_latency_and_attempts(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI
) -> None:
    gw = start_gateway(openai_config(fake_openai))
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for _ in range(3):
            assert c.post("/v1/chat/completions", json=_chat("gpt-4o-mini")).status_code == 200
        assert c.post("/v1/chat/completions", json=_chat("gpt-4o-mini", True)).status_code == 200
        assert c.post("/v1/chat/completions", json=_chat("gpt-x-400")).status_code == 400
        assert c.post("/v1/chat/completions", content=b"[").status_code == 400
        flaky = _chat("gpt-x-flaky", user=f"u{time.monotonic_ns()}")
        assert c.post("/v1/chat/completions", json=flaky).status_code == 200
    # Rows are counted as written only after their whole batch was observed.
    text = _wait_metric(gw.url, "sluice_usage_records_written_total", 7)
    r = {"provider": "openai", "model": "gpt-4o-mini"}
    assert metric_value(text, "sluice_requests_total", status="200", **r) == 4
    assert metric_value(text, "sluice_requests_total", status="400") == 2
    assert metric_value(text, "sluice_errors_total", code="EXTERNAL_SERVICE_ERROR") == 1
    assert metric_value(text, "sluice_errors_total", code="VALIDATION_ERROR") == 1
    assert metric_value(text, "sluice_tokens_total", type="completion", **r) == 24
    assert metric_value(text, "sluice_tokens_total", type="prompt", **r) > 0
    assert metric_value(text, "sluice_request_duration_seconds_count", **r) == 4
    assert metric_value(text, "sluice_first_byte_seconds_count", **r) == 4
    assert metric_value(text, "sluice_overhead_seconds_count", provider="openai") >= 4
    assert metric_value(text, "sluice_upstream_attempts_total", provider="openai") == 7
    assert metric_value(text, "sluice_upstream_retries_total", provider="openai") == 1
    assert metric_value(text, "sluice_provider_available", provider="openai") == 1
    assert metric_value(text, "sluice_usage_records_queued_total") == 7
    assert metric_value(text, "sluice_usage_records_dropped_total") == 0
    assert "request_id" not in text and "req_" not in text  # no per-request labels


def test_priced_model_cost_metric(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config = openai_config(fake_openai)
    config["models"].insert(
        0,
        {
            "name": "gpt-priced",
            "provider": "openai",
            "price": {"input_per_mtok": 1000000, "output_per_mtok": 2000000},
        },
    )
    url = f"sqlite:///{tmp_path}/priced.db"
    config["storage"] = {"url": url}
    gw = start_gateway(config)
    httpx.post(gw.url + "/v1/chat/completions", json=_chat("gpt-priced"), timeout=30)
    rows = wait_rows(url, 1)
    cost = rows[0]["cost_usd"]
    assert cost == rows[0]["prompt_tokens"] * 1 + rows[0]["completion_tokens"] * 2
    text = _wait_metric(gw.url, "sluice_cost_usd_total", cost)
    assert metric_value(text, "sluice_cost_usd_total", model="gpt-priced") == pytest.approx(cost)


def test_metrics_aggregate_over_workers(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    gw = start_gateway(openai_config(fake_openai), args=["--workers", "2"])
    n = 40
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for _ in range(n):
            # A fresh connection each time, so both workers get requests.
            r = c.post(
                "/v1/chat/completions", json=_chat("gpt-4o-mini"), headers={"Connection": "close"}
            )
            assert r.status_code == 200
    text = _wait_metric(gw.url, "sluice_usage_records_written_total", n)
    assert metric_value(text, "sluice_requests_total", status="200") == n
    assert metric_value(text, "sluice_tokens_total", type="completion") == 6 * n
    # Each scrape may land on either worker; both see the same aggregated totals.
    for _ in range(4):
        again = httpx.get(gw.url + "/metrics", headers={"Connection": "close"}, timeout=10).text
        assert metric_value(again, "sluice_requests_total", status="200") == n
    assert len(gw.wait_audit(n)) == n
    # Both workers wrote their batches to the one SQLite file.
    assert len(wait_rows(f"sqlite:///{tmp_path}/sluice-{gw.port}.db", n)) == n


def _usage_cli(gw: Gateway, cwd: Path, *args: str) -> str:
    """`sluice usage` against the gateway's config, as a user would run it."""
    cmd = [sys.executable, "-m", "sluice", "usage", "--config", str(gw.config_path), *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=gw.env, cwd=cwd, timeout=60, check=True
    )
    return done.stdout


def test_admin_usage_and_cli(
    start_gateway: Callable[..., Gateway],
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    storage_url: str,
) -> None:
    url = storage_url
    config = openai_config(fake_openai, storage={"url": url}, auth={"admin_key": ADMIN})
    gw = start_gateway(config)
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for model, n in (("gpt-4o-mini", 3), ("gpt-4o", 2), ("gpt-x-500", 1)):
            for _ in range(n):
                c.post("/v1/chat/completions", json=_chat(model))
        wait_rows(url, 6)
        assert c.get("/admin/usage").status_code == 401
        assert c.get("/admin/usage", headers={"Authorization": "Bearer nope"}).status_code == 401
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = c.get("/admin/usage", params={"group_by": "model"}, headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        by_model = {row["model"]: row for row in body["rows"]}
        assert by_model["gpt-4o-mini"]["requests"] == 3
        assert by_model["gpt-4o-mini"]["completion_tokens"] == 18
        assert by_model["gpt-4o"]["requests"] == 2
        assert by_model["gpt-x-500"]["errors"] == 1
        assert body["totals"]["requests"] == 6 and body["totals"]["errors"] == 1
        priced = by_model["gpt-4o-mini"]["cost_usd"] + by_model["gpt-4o"]["cost_usd"]
        assert body["totals"]["cost_usd"] == pytest.approx(priced) and priced > 0
        assert by_model["gpt-x-500"]["cost_usd"] is None  # unknown, never $0
        assert body["totals"]["unpriced_requests"] == 1
        today = time.strftime("%Y-%m-%d", time.gmtime())
        day = c.get("/admin/usage", params={"group_by": "day", "from": today}, headers=admin)
        assert [(row["day"], row["requests"]) for row in day.json()["rows"]] == [(today, 6)]
        past = c.get("/admin/usage", params={"to": "2020-01-01"}, headers=admin).json()
        assert past["totals"]["requests"] == 0 and past["rows"] == []
        bad = c.get("/admin/usage", params={"group_by": "colour"}, headers=admin)
        assert bad.status_code == 400 and "group_by" in bad.text
        assert c.get("/admin/usage", params={"from": "yesterday"}, headers=admin).status_code == 400
    out = _usage_cli(gw, tmp_path)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "requests", "errors"]
    table = {line.split()[0]: line.split() for line in lines[1:]}
    assert table["gpt-4o-mini"][1] == "3" and table["TOTAL"][1] == "6" and table["TOTAL"][2] == "1"
    out = _usage_cli(gw, tmp_path, "--group-by", "provider", "--from", "2020-01-01")
    assert out.splitlines()[1].split()[:2] == ["openai", "6"]


def test_retention_deletes_old_rows(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/retention.db"
    db.upgrade(url)
    now = time.time()
    base = {"method": "POST", "path": "/v1/chat/completions", "status": 200, "prompt_tokens": 1}
    base |= {"completion_tokens": 1, "cached_tokens": 0, "reasoning_tokens": 0}
    base |= {"tokens_estimated": False, "latency_ms": 1.0, "cache_hit": False, "attempts": 1}
    base |= {"stream": False}
    insert_rows(
        url,
        [
            {**base, "ts": now - 40 * 86400, "request_id": "old-1"},
            {**base, "ts": now - 31 * 86400, "request_id": "old-2"},
            {**base, "ts": now - 5 * 86400, "request_id": "recent"},
        ],
    )
    config = openai_config(fake_openai, storage={"url": url}, logging={"retention_days": 30})
    gw = start_gateway(config)
    httpx.post(gw.url + "/v1/chat/completions", json=_chat("gpt-4o-mini"), timeout=30)
    end = time.monotonic() + 15
    while True:
        ids = {r["request_id"] for r in read_rows(url)}
        if (len(ids) == 2 and "recent" in ids) or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert "recent" in ids and not ids & {"old-1", "old-2"} and len(ids) == 2
