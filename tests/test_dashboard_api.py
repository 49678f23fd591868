"""The dashboard's HTTP side: /ui without credentials, the admin read endpoints, PATCH keys.

Usage rows are inserted straight into the gateway's SQLite file (tests/usage_seed.py): the
bucket and percentile checks need rows at fixed past times and latencies, which real requests
cannot give. The queries also run against PostgreSQL. Real traffic is the browser test's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sluice import db
from sluice.dashboard import Filters, UsageQueries
from sluice.usage import UsageRecord
from tests.conftest import Gateway, launch_gateway
from tests.usage_seed import insert_key, insert_usage, storage_url

ADMIN = "adm-dashboard-test-5f1e2d"
STATIC = "static-token-for-clients-77"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a bucket boundary for hours and days
SECRET = "sk_dash0001_" + "a" * 40


def _records() -> list[UsageRecord]:
    """Ten rows in hour 0 and four in hour 2 (none in hour 1), over two models and teams."""
    recs = []
    for i in range(10):  # hour 0: latencies 100..1000, one 502, gpt-4o for team red
        recs.append(
            UsageRecord(
                ts=T0 + 60 * i,
                request_id=f"req_a{i}",
                method="POST",
                path="/v1/chat/completions",
                status=502 if i == 9 else 200,
                error_code="EXTERNAL_SERVICE_ERROR" if i == 9 else None,
                model="gpt-4o",
                provider="openai",
                team="red",
                key_id="key_red1",
                prompt_tokens=10,
                completion_tokens=5,
                cost_usd=0.5,
                latency_ms=100.0 * (i + 1),
                cache_hit=i == 0,
            )
        )
    for i in range(4):  # hour 2: unpriced gpt-4o-mini for team blue, one 429
        recs.append(
            UsageRecord(
                ts=T0 + 7200 + 60 * i,
                request_id=f"req_b{i}",
                method="POST",
                path="/v1/chat/completions",
                status=429 if i == 3 else 200,
                error_code="RATE_LIMITED" if i == 3 else None,
                model="gpt-4o-mini",
                provider="openai",
                team="blue",
                key_id="key_blue1",
                prompt_tokens=100,
                completion_tokens=50,
                cost_usd=None,
                latency_ms=20.0 + i,
            )
        )
    return recs


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config: dict[str, Any] = {"auth": {"admin_key": ADMIN, "tokens": [STATIC]}}
    g = launch_gateway(tmp_path_factory.mktemp("dash"), config)
    url = storage_url(g.config_path)
    insert_usage(url, _records())
    insert_key(url, "key_red1", "red", "red ci", SECRET, T0)
    yield g
    g.stop()


def get(gw: Gateway, path: str, **params: Any) -> httpx.Response:
    r = httpx.get(gw.url + path, params=params, headers=AUTH, timeout=10)
    assert ADMIN not in r.text and SECRET not in r.text
    return r


def series(gw: Gateway, **params: Any) -> dict[str, Any]:
    r = get(gw, "/admin/timeseries", **{"from": T0, "to": T0 + 4 * 3600, **params})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


def test_ui_loads_without_credentials(gw: Gateway) -> None:
    r = httpx.get(gw.url + "/ui")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'type="password"' in r.text and 'id="admin-key"' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    for name, ctype in [("main.js", "text/javascript"), ("app.css", "text/css")]:
        asset = httpx.get(f"{gw.url}/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(ctype)
    assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN


@pytest.mark.parametrize(
    "path", ["/ui/nope.js", "/ui/..%2Fdb.py", "/ui/../db.py", "/ui/migrations/env.py"]
)
def test_ui_serves_only_its_own_files(gw: Gateway, path: str) -> None:
    assert httpx.get(gw.url + path).status_code == 404


@pytest.mark.parametrize("path", ["/admin/timeseries", "/admin/requests"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Bearer {STATIC}"}],
    ids=["none", "wrong", "static-token"],
)
def test_admin_key_required(gw: Gateway, path: str, headers: dict[str, str]) -> None:
    r = httpx.get(gw.url + path, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"


def test_admin_key_in_other_carriers(gw: Gateway) -> None:
    r = httpx.get(gw.url + "/admin/requests", headers={"x-api-key": ADMIN})
    assert r.status_code == 200 and ADMIN not in r.text


def test_timeseries_buckets_totals_and_percentiles(gw: Gateway) -> None:
    d = series(gw)
    assert [p["ts"] for p in d["series"]] == [T0 + 3600 * i for i in range(4)]
    h0, h1, h2, _ = d["series"]
    assert (h0["requests"], h0["errors"], h0["tokens"], h0["cache_hits"]) == (10, 1, 150, 1)
    assert h0["spend_usd"] == pytest.approx(5.0) and h0["unpriced"] == 0
    assert (h0["p50_ms"], h0["p95_ms"]) == (500.0, 1000.0)  # nearest rank of 100..1000
    assert h1["requests"] == 0 and h1["p50_ms"] is None
    assert (h2["requests"], h2["errors"], h2["spend_usd"], h2["unpriced"]) == (4, 1, None, 4)
    assert (h2["p50_ms"], h2["p95_ms"]) == (21.0, 23.0)
    t = d["totals"]
    assert (t["requests"], t["errors"], t["tokens"], t["unpriced"]) == (14, 2, 750, 4)
    assert (t["prompt_tokens"], t["completion_tokens"]) == (500, 250)
    assert (t["p50_ms"], t["p95_ms"]) == (300.0, 1000.0)  # 7th of 14
    assert d["options"] == {
        "model": ["gpt-4o", "gpt-4o-mini"],
        "provider": ["openai"],
        "team": ["blue", "red"],
        "key": ["key_blue1", "key_red1"],
    }


def test_timeseries_top_n(gw: Gateway) -> None:
    top = series(gw)["top"]
    assert [m["name"] for m in top["model"]] == ["gpt-4o", "gpt-4o-mini"]
    red = top["team"][0]
    assert (red["name"], red["requests"], red["errors"], red["p95_ms"]) == ("red", 10, 1, 1000.0)
    assert top["provider"] == [
        {**top["provider"][0], "name": "openai", "requests": 14, "errors": 2}
    ]
    assert [k["name"] for k in series(gw, top=1)["top"]["key"]] == ["key_red1"]


@pytest.mark.parametrize(
    ("params", "requests"),
    [
        ({"model": "gpt-4o-mini"}, 4),
        ({"provider": "openai"}, 14),
        ({"provider": "anthropic"}, 0),
        ({"team": "red"}, 10),
        ({"key": "key_blue1"}, 4),
        ({"team": "red", "model": "gpt-4o-mini"}, 0),
        ({"from": T0 + 3600}, 4),
        ({"to": "2026-01-01T01:00:00Z"}, 10),
        ({"to": "2026-01-01T01:00:00"}, 10),  # naive ISO times are UTC
    ],
    ids=lambda v: str(v),
)
def test_timeseries_filters(gw: Gateway, params: dict[str, Any], requests: int) -> None:
    assert series(gw, **params)["totals"]["requests"] == requests


def test_timeseries_days_and_local_offset(gw: Gateway) -> None:
    d = series(gw, bucket="day", to=T0 + 2 * 86400)
    assert [p["requests"] for p in d["series"]] == [14, 0]
    # UTC+01:00: local midnight is 23:00 UTC the day before; all rows fall on Jan 1 local.
    d = series(gw, bucket="day", tz_offset_min=60, to=T0 + 86400)
    assert d["series"][0]["ts"] == T0 - 3600 and d["series"][0]["requests"] == 14


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"bucket": "week"}, "bucket"),
        ({"from": "yesterday"}, "from"),
        ({"from": T0 + 10, "to": T0}, "to"),
        ({"bucket": "hour", "from": 0}, "bucket"),  # 490k hourly buckets: refused
        ({"top": 0}, "top"),
        ({"tz_offset_min": 5000}, "tz_offset_min"),
    ],
)
def test_timeseries_validation(gw: Gateway, params: dict[str, Any], param: str) -> None:
    r = get(gw, "/admin/timeseries", **{"from": T0, "to": T0 + 3600, **params})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_requests_newest_first_without_content(gw: Gateway) -> None:
    r = get(gw, "/admin/requests", limit=3)
    assert r.status_code == 200
    body = r.json()
    rows = body["data"]
    assert [x["request_id"] for x in rows] == ["req_b3", "req_b2", "req_b1"]
    assert body["last_id"] == rows[0]["id"]
    first = rows[0]
    assert (first["status"], first["error_code"], first["cache_hit"]) == (
        429,
        "RATE_LIMITED",
        False,
    )
    assert first["cost_usd"] is None and first["latency_ms"] == 23.0
    assert not {"messages", "prompt", "content", "user", "session"} & set(first)


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({"status": "error"}, ["req_b3", "req_a9"]),
        ({"status": "5xx"}, ["req_a9"]),
        ({"status": "429"}, ["req_b3"]),
        ({"status": "ok", "team": "blue"}, ["req_b2", "req_b1", "req_b0"]),
        ({"team": "green"}, []),
    ],
    ids=lambda v: str(v),
)
def test_requests_filters(gw: Gateway, params: dict[str, Any], ids: list[str]) -> None:
    rows = get(gw, "/admin/requests", **params).json()["data"]
    assert [x["request_id"] for x in rows] == ids


def test_requests_since_and_before(gw: Gateway) -> None:
    rows = get(gw, "/admin/requests", limit=500).json()["data"]
    assert len(rows) == 14
    newest, oldest = rows[0]["id"], rows[-1]["id"]
    since = get(gw, "/admin/requests", since_id=newest - 2).json()
    assert [x["id"] for x in since["data"]] == [newest, newest - 1]
    empty = get(gw, "/admin/requests", since_id=newest).json()
    assert empty["data"] == [] and empty["last_id"] == newest
    before = get(gw, "/admin/requests", before_id=oldest + 2).json()["data"]
    assert [x["id"] for x in before] == [oldest + 1, oldest]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"status": "bad"}, {"since_id": "x"}]
)
def test_requests_validation(gw: Gateway, params: dict[str, Any]) -> None:
    assert get(gw, "/admin/requests", **params).status_code == 400


def test_patch_key_limits_and_models(gw: Gateway) -> None:
    url = gw.url + "/admin/keys/key_red1"
    body = {
        "allowedModels": ["gpt-4o*"],
        "limits": {"rpm": 60, "budget_usd": 12.5, "tpm": None, "budget_period": "day"},
    }
    assert httpx.patch(url, json=body).status_code == 401
    r = httpx.patch(url, json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    key = r.json()
    assert key["allowedModels"] == ["gpt-4o*"]
    assert key["limits"] == {"rpm": 60, "budget_usd": 12.5, "budget_period": "day"}
    assert (key["id"], key["teamId"], key["prefix"]) == ("key_red1", "red", SECRET[:11])
    assert "hash" not in key and SECRET not in r.text
    r = httpx.patch(url, json={"allowedModels": None, "limits": {}}, headers=AUTH)
    assert r.json()["allowedModels"] is None and r.json()["limits"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"allowedModels": "gpt-4o"}, "allowedModels"),
        ({"limits": {"rpm": -1}}, "limits.rpm"),
        ({"limits": {"rpm": True}}, "limits.rpm"),
        ({"limits": {"qps": 1}}, "limits.qps"),
        ({"limits": {"budget_period": "year"}}, "limits.budget_period"),
        ({"revoked": True}, "revoked"),
        ([], "body"),
    ],
)
def test_patch_key_validation(gw: Gateway, body: Any, param: str) -> None:
    r = httpx.patch(gw.url + "/admin/keys/key_red1", json=body, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_patch_unknown_key(gw: Gateway) -> None:
    r = httpx.patch(gw.url + "/admin/keys/key_nope", json={"limits": None}, headers=AUTH)
    assert r.status_code == 404


async def test_queries_on_postgres(pg_database: str) -> None:
    """The same bucket and percentile SQL on PostgreSQL (floor, window functions)."""
    import asyncio

    await asyncio.to_thread(insert_usage, pg_database, _records())
    engine = db.engine_for(pg_database)
    q = UsageQueries(engine)
    try:
        d = await q.timeseries(Filters(T0, T0 + 4 * 3600), "hour")
        assert [p["requests"] for p in d["series"]] == [10, 0, 4, 0]
        assert (d["series"][0]["p50_ms"], d["series"][0]["p95_ms"]) == (500.0, 1000.0)
        assert (d["totals"]["p50_ms"], d["totals"]["errors"]) == (300.0, 2)
        day = await q.timeseries(Filters(T0, T0 + 86400), "day", offset_s=3600)
        assert day["series"][0]["ts"] == T0 - 3600 and day["series"][0]["requests"] == 14
        rows = await q.recent(5, status="4xx")
        assert [r["request_id"] for r in rows] == ["req_b3"]
    finally:
        await engine.dispose()


def test_routes_sharing_a_prefix_are_chosen_by_method() -> None:
    """PATCH /admin/keys/{id} (here) and DELETE /admin/keys/{id} (access) share a prefix."""
    from sluice.app import App
    from sluice.routes import Route

    async def handler(gw: Any, req: Any) -> None:
        return None

    delete = Route(("DELETE",), "/admin/keys/", handler, prefix=True)
    patch = Route(("PATCH",), "/admin/keys/", handler, prefix=True)
    app = App.__new__(App)
    app.exact, app.prefixes = {}, [delete, patch]
    assert app.route("/admin/keys/key_1", "PATCH") is patch
    assert app.route("/admin/keys/key_1", "DELETE") is delete
    assert app.route("/admin/keys/key_1", "PUT") is delete  # then 405 names the method
    assert app.route("/admin/other", "PATCH") is None
