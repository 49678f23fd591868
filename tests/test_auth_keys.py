"""Team keys end to end (seed 003, SPEC §6) on SQLite and PostgreSQL: the /tokens and /admin
APIs, the CLI, the in-process cache, storage outages, and revocation across instances."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import fresh_window

ADMIN = "adm_" + "a1" * 16
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
KEY_RE = re.compile(r"^sk_[0-9a-f]{64}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATIC = "static-token-for-key-tests-0001"


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """Run `python -m sluice ...` and return stdout (fails the test on a non-zero exit)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full.pop("SLUICE_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL; PostgreSQL is migrated by `sluice db upgrade`, SQLite by `serve`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    url = str(request.getfixturevalue("pg_database"))
    cli({"SLUICE_DATABASE_URL": url}, "db", "upgrade", cwd=tmp_path)
    return url


def keys_config(fake: FakeOpenAI, storage: str, **extra: Any) -> dict[str, Any]:
    return openai_config(
        fake,
        storage={"url": storage},
        auth={"admin_key": ADMIN, "tokens": [STATIC], "keys": True},
        **extra,
    )


def chat(gw: Gateway, key: str | None, model: str = "gpt-4o-mini") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=30,
    )


def create(gw: Gateway, team: str = "team_123", name: str = "Acme Corp", **extra: Any) -> Any:
    r = httpx.post(
        gw.url + "/tokens", json={"teamId": team, "name": name, **extra}, headers=ADMIN_H
    )
    assert r.status_code == 200, r.text
    return r.json()


async def _pg_rows(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        out = []
        for table in ("api_keys", "teams", "usage"):
            out += [repr(dict(r)) for r in await conn.fetch(f"SELECT * FROM {table}")]  # noqa: S608
        return "\n".join(out)
    finally:
        await conn.close()


def stored_text(storage: str) -> str:
    """Everything the storage holds, as text (the SQLite files' bytes, or every PG row)."""
    if storage.startswith("sqlite:///"):
        path = Path(storage.removeprefix("sqlite:///"))
        parts = [p.read_bytes() for p in path.parent.glob(path.name + "*")]
        return b"".join(parts).decode("latin-1")
    return asyncio.run(_pg_rows(storage))


def test_tokens_api_in_seed_003_shapes(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, storage: str
) -> None:
    gw = start_gateway(keys_config(fake_openai, storage))
    created = create(gw)
    assert set(created) == {"apiKey", "teamId", "name", "createdAt"}
    key = created["apiKey"]
    assert KEY_RE.match(key) and ISO_RE.match(created["createdAt"])
    assert (created["teamId"], created["name"]) == ("team_123", "Acme Corp")

    assert chat(gw, key).status_code == 200
    audit = [a for a in gw.wait_audit(1) if a["status"] == 200][-1]
    assert audit["team"] == "team_123" and audit["key_id"].startswith("key_")

    info = httpx.get(gw.url + f"/tokens/{key}", headers=ADMIN_H)
    assert info.json() == {
        "teamId": "team_123",
        "name": "Acme Corp",
        "createdAt": created["createdAt"],
    }

    refreshed = httpx.post(gw.url + f"/tokens/{key}/refresh", headers=ADMIN_H).json()
    assert set(refreshed) == {"apiKey", "teamId", "name", "createdAt"}
    new = refreshed["apiKey"]
    assert new != key and KEY_RE.match(new)
    assert (refreshed["teamId"], refreshed["name"], refreshed["createdAt"]) == (
        "team_123",
        "Acme Corp",
        created["createdAt"],
    )
    assert chat(gw, key).status_code == 401  # the old key stops at once
    assert chat(gw, new).status_code == 200
    assert httpx.get(gw.url + f"/tokens/{key}", headers=ADMIN_H).status_code == 404

    listed = httpx.get(gw.url + "/admin/keys", headers=ADMIN_H).json()["keys"]
    assert len(listed) == 2 and all("hash" not in k for k in listed)
    active = next(k for k in listed if k["active"])
    assert active["prefix"] == new[:11]
    gone = httpx.delete(gw.url + f"/admin/keys/{active['id']}", headers=ADMIN_H)
    assert gone.status_code == 200 and gone.json()["revoked"] is True
    assert chat(gw, new).status_code == 401
    teams = httpx.get(gw.url + "/admin/teams", headers=ADMIN_H).json()["teams"]
    assert teams == [
        {
            "id": "team_123",
            "name": "Acme Corp",
            "created_at": teams[0]["created_at"],
            "active_keys": 0,
        }
    ]

    assert new not in json.dumps(listed)
    assert_hashed_and_nowhere(gw, storage, [key, new])


def assert_hashed_and_nowhere(gw: Gateway, storage: str, secrets: list[str]) -> None:
    """Keys are stored hashed: no key in storage or logs, each one's SHA-256 in storage."""
    text = stored_text(storage)
    for secret in secrets:
        assert hashlib.sha256(secret.encode()).hexdigest() in text
        assert secret not in text
        assert secret not in gw.stdout() + gw.stderr()


@pytest.mark.parametrize(
    "path",
    ["/tokens", "/admin/keys", "/admin/teams"],
)
def test_admin_routes_need_the_admin_key(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path, path: str
) -> None:
    gw = start_gateway(keys_config(fake_openai, f"sqlite:///{tmp_path}/a.db"))
    key = create(gw)["apiKey"]
    method = "POST" if path == "/tokens" else "GET"
    for creds in ({}, {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {STATIC}"}):
        r = httpx.request(method, gw.url + path, headers=creds, json={"teamId": "x", "name": "y"})
        assert r.status_code == 401, (creds, r.text)


def raw_get(gw: Gateway, target: str, headers: str = "") -> tuple[int, bytes]:
    """A GET with the request target sent byte for byte (no client-side normalising)."""
    import socket

    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize(
    "target",
    [
        "/admin/keys",
        "/admin%2Fkeys",
        "/ADMIN/keys",
        "//admin/keys",
        "/x/../admin/keys",
        "/%61dmin/keys",
        "/admin/keys/",
        "/tokens/%2e%2e/admin/keys",
        "/admin%252Fteams",
    ],
)
def test_admin_paths_are_authorised_on_the_raw_path(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path, target: str
) -> None:
    gw = start_gateway(keys_config(fake_openai, f"sqlite:///{tmp_path}/a.db"))
    status, body = raw_get(gw, target)
    assert status == 401, body
    ok, _ = raw_get(gw, "/admin/keys", f"Authorization: Bearer {ADMIN}\r\n")
    assert ok == 200


def test_wrong_and_missing_keys_get_the_same_401(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    gw = start_gateway(keys_config(fake_openai, f"sqlite:///{tmp_path}/k.db"))
    create(gw)
    bodies = {
        chat(gw, None).content,
        chat(gw, "sk_" + "0" * 64).content,  # well-formed, unknown
        chat(gw, "sk_nope").content,  # malformed
        chat(gw, "whatever").content,
    }
    assert len(bodies) == 1
    assert b"Invalid or expired token" in bodies.pop()


def test_per_key_models_limits_and_metadata(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    gw = start_gateway(keys_config(fake_openai, f"sqlite:///{tmp_path}/k.db"))
    key = create(gw, models=["gpt-4o*"], limits={"rpm": 5}, metadata={"owner": "ops"})["apiKey"]
    assert chat(gw, key, "gpt-4o-mini").status_code == 200
    denied = chat(gw, key, "gpt-3.5-turbo")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
    row = httpx.get(gw.url + "/admin/keys", headers=ADMIN_H).json()["keys"][0]
    assert row["allowed_models"] == ["gpt-4o*"]
    assert row["limits"] == {"rpm": 5} and row["metadata"] == {"owner": "ops"}


def test_cli_create_list_rotate_revoke(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, storage: str, tmp_path: Path
) -> None:
    gw = start_gateway(keys_config(fake_openai, storage))
    cfg = ["--config", str(gw.config_path)]
    out = cli({}, "keys", "create", "--team", "t_cli", "--name", "CLI team", *cfg, cwd=tmp_path)
    key = re.search(r"sk_[0-9a-f]{64}", out)
    key_id = re.search(r"key_[0-9a-f]+", out)
    assert key and key_id
    assert chat(gw, key.group()).status_code == 200

    listing = cli({}, "keys", "list", *cfg, cwd=tmp_path)
    assert key_id.group() in listing and key.group()[:11] in listing
    assert key.group() not in listing

    rotated = cli({}, "keys", "rotate", key.group(), *cfg, cwd=tmp_path)
    new = re.search(r"sk_[0-9a-f]{64}", rotated)
    assert new and new.group() != key.group()
    assert chat(gw, new.group()).status_code == 200

    cli({}, "keys", "revoke", new.group(), *cfg, cwd=tmp_path)
    fresh = httpx.post(gw.url + f"/tokens/{new.group()}/refresh", headers=ADMIN_H)
    assert fresh.status_code == 404  # storage says revoked (the cache may lag without Redis)
    assert new.group() not in stored_text(storage)


def test_storage_down_cached_key_works_unknown_key_503(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, pg_database: str, tmp_path: Path
) -> None:
    cli({"SLUICE_DATABASE_URL": pg_database}, "db", "upgrade", cwd=tmp_path)
    gw = start_gateway(keys_config(fake_openai, pg_database))
    key = create(gw)["apiKey"]
    assert chat(gw, key).status_code == 200  # now cached

    async def drop() -> None:
        import asyncpg

        admin = pg_database.rsplit("/", 1)[0] + "/postgres"
        conn = await asyncpg.connect(admin)
        try:
            name = pg_database.rsplit("/", 1)[1]
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
    for _ in range(3):
        assert chat(gw, key).status_code == 200
    unknown = chat(gw, "sk_" + "ab" * 32)
    assert unknown.status_code == 503, unknown.text
    assert unknown.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert chat(gw, STATIC).status_code == 200  # static tokens never need storage
    admin = httpx.get(gw.url + "/admin/keys", headers=ADMIN_H)
    assert admin.status_code == 503


@pytest.fixture
def shared(tmp_path: Path, redis_url: str, fake_openai: FakeOpenAI) -> dict[str, Any]:
    return keys_config(fake_openai, f"sqlite:///{tmp_path}/shared.db", redis={"url": redis_url})


def wait_refused(gw: Gateway, key: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within + 2:
        if chat(gw, key).status_code == 401:
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


def test_revocation_reaches_every_instance_within_a_second(
    start_gateway: Callable[..., Gateway], shared: dict[str, Any]
) -> None:
    a, b = start_gateway(shared), start_gateway(shared)
    created = create(a)
    key = created["apiKey"]
    assert chat(a, key).status_code == 200 and chat(b, key).status_code == 200  # both cached
    key_id = httpx.get(a.url + "/admin/keys", headers=ADMIN_H).json()["keys"][0]["id"]
    assert httpx.delete(a.url + f"/admin/keys/{key_id}", headers=ADMIN_H).status_code == 200
    assert chat(a, key).status_code == 401
    assert wait_refused(b, key, 1.0) < 1.0


def test_cli_rotation_reaches_running_instances_within_a_second(
    start_gateway: Callable[..., Gateway], shared: dict[str, Any], tmp_path: Path
) -> None:
    a, b = start_gateway(shared), start_gateway(shared)
    key = create(a)["apiKey"]
    assert chat(a, key).status_code == 200 and chat(b, key).status_code == 200
    out = cli({}, "keys", "rotate", key, "--config", str(a.config_path), cwd=tmp_path)
    new = re.search(r"sk_[0-9a-f]{64}", out)
    assert new
    assert wait_refused(a, key, 1.0) < 1.0
    assert wait_refused(b, key, 1.0) < 1.0
    assert chat(b, new.group()).status_code == 200


def test_open_until_the_first_key_then_closed(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    cfg = openai_config(
        fake_openai, storage={"url": f"sqlite:///{tmp_path}/o.db"}, auth={"admin_key": ADMIN}
    )
    gw = start_gateway(cfg)
    assert "AUTH IS OFF" in gw.stderr()
    assert chat(gw, None).status_code == 200
    assert chat(gw, "sk-any-sdk-placeholder").status_code == 200
    key = create(gw)["apiKey"]
    assert chat(gw, None).status_code == 401  # the first key closes the gateway at once
    assert chat(gw, key).status_code == 200
    # and it stays closed after a restart, even with every key revoked
    key_id = httpx.get(gw.url + "/admin/keys", headers=ADMIN_H).json()["keys"][0]["id"]
    httpx.delete(gw.url + f"/admin/keys/{key_id}", headers=ADMIN_H)
    gw.stop()
    again = start_gateway(cfg)
    assert "AUTH IS OFF" not in again.stderr()
    assert chat(again, None).status_code == 401


def test_admin_rotates_by_id_and_the_old_key_stops(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, storage: str
) -> None:
    gw = start_gateway(keys_config(fake_openai, storage))
    old = create(gw, models=["gpt-4o*"], limits={"rpm": 50})
    assert chat(gw, old["apiKey"]).status_code == 200  # cached
    key_id = httpx.get(gw.url + "/admin/keys", headers=ADMIN_H).json()["keys"][0]["id"]
    url = gw.url + f"/admin/keys/{key_id}/rotate"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": f"Bearer {old['apiKey']}"}).status_code == 401
    r = httpx.post(url, headers=ADMIN_H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"apiKey", "teamId", "name", "createdAt", "id"}
    assert KEY_RE.match(body["apiKey"]) and ISO_RE.match(body["createdAt"])
    assert (body["teamId"], body["name"], body["createdAt"]) == (
        "team_123",
        "Acme Corp",
        old["createdAt"],
    )
    assert chat(gw, old["apiKey"]).status_code == 401  # at once, on this instance
    assert chat(gw, body["apiKey"]).status_code == 200
    listed = {k["id"]: k for k in httpx.get(gw.url + "/admin/keys", headers=ADMIN_H).json()["keys"]}
    assert listed[key_id]["rotated_to"] == body["id"] and not listed[key_id]["active"]
    assert listed[body["id"]]["allowed_models"] == ["gpt-4o*"]
    assert listed[body["id"]]["limits"] == {"rpm": 50}
    # The old id is no longer active; an unknown id or action is a 404.
    assert httpx.post(url, headers=ADMIN_H).status_code == 404
    assert httpx.post(gw.url + "/admin/keys/key_nope/rotate", headers=ADMIN_H).status_code == 404
    assert httpx.post(gw.url + f"/admin/keys/{body['id']}/x", headers=ADMIN_H).status_code == 404
    assert body["apiKey"] not in gw.stdout() + gw.stderr()


def test_patch_applies_at_once_here_and_on_every_instance(
    start_gateway: Callable[..., Gateway], shared: dict[str, Any]
) -> None:
    """New models/limits from PATCH /admin/keys/{id} reach a key already cached, on this
    instance at once and on another one (through Redis) within a second."""
    a, b = start_gateway(shared), start_gateway(shared)
    key = create(a)["apiKey"]
    assert chat(a, key).status_code == 200 and chat(b, key).status_code == 200  # both cached
    key_id = httpx.get(a.url + "/admin/keys", headers=ADMIN_H).json()["keys"][0]["id"]
    r = httpx.patch(
        a.url + f"/admin/keys/{key_id}", json={"allowedModels": ["gpt-4o"]}, headers=ADMIN_H
    )
    assert r.status_code == 200, r.text
    assert chat(a, key).status_code == 403
    started = time.monotonic()
    while chat(b, key).status_code != 403:
        assert time.monotonic() - started < 1.0, "instance b still serves the old models"
        time.sleep(0.05)
    assert chat(b, key, "gpt-4o").status_code == 200


def test_admin_limits_shows_a_keys_live_state_without_reserving(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config = keys_config(
        fake_openai,
        f"sqlite:///{tmp_path}/k.db",
        limits=[{"scope": "team", "rpm": 3000}, {"scope": "ip", "rpm": 100}],
        budgets=[{"scope": "team", "usd": 100, "period": "month"}],
    )
    gw = start_gateway(config)
    fresh_window(20.0)  # rpm windows are UTC minutes: keep the whole test inside one
    limits = {"rpm": 5, "tpm": 100000, "budget_usd": 10, "budget_period": "day"}
    key = create(gw, team="team_lim", limits=limits)["apiKey"]
    key_id = httpx.get(gw.url + "/admin/keys", headers=ADMIN_H).json()["keys"][0]["id"]
    for _ in range(2):
        assert chat(gw, key, "gpt-4o").status_code == 200
    url = gw.url + f"/admin/limits?key={key_id}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    views = [httpx.get(url, headers=ADMIN_H) for _ in range(3)]
    assert all(v.status_code == 200 for v in views), views[0].text
    view = views[0].json()
    assert (view["key"], view["team"], view["active"]) == (key_id, "team_lim", True)
    by = {(x["scope"], x["kind"]): x for x in view["limits"]}
    assert set(by) == {("key", "rpm"), ("key", "tpm"), ("team", "rpm")}  # no ip: no request
    assert (by["key", "rpm"]["limit"], by["key", "rpm"]["remaining"]) == (5, 3)
    assert (by["team", "rpm"]["limit"], by["team", "rpm"]["remaining"]) == (3000, 2998)
    assert 0 < by["key", "rpm"]["reset_s"] <= 60
    assert 0 < by["key", "tpm"]["remaining"] < 100000
    spend = {(b["scope"], b["per"]): b for b in view["budgets"]}
    assert set(spend) == {("key", "day"), ("team", "month")}
    day = spend["key", "day"]
    assert day["usd"] == 10 and 0 < day["spent_usd"] < 0.01
    assert abs(day["spent_usd"] + day["remaining_usd"] - 10) < 1e-9 and day["resets_at"]
    # Peeking reserved nothing: every view is the same, and the key still has its 3 requests.
    for again in (v.json() for v in views[1:]):
        assert [x["remaining"] for x in again["limits"]] == [x["remaining"] for x in view["limits"]]
        assert again["budgets"] == view["budgets"]
    assert [chat(gw, key, "gpt-4o").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert httpx.get(gw.url + "/admin/limits", headers=ADMIN_H).status_code == 400
    missing = httpx.get(gw.url + "/admin/limits?key=key_nope", headers=ADMIN_H)
    assert missing.status_code == 404


async def test_credential_digests_are_remembered_within_a_bound() -> None:
    """A credential's SHA-256 is computed once, not per request; a flood of made-up
    credentials fills at most _DIGESTS_MAX entries, and the real token keeps working."""
    from sluice import auth, config
    from sluice.asgi import Request
    from sluice.errors import GatewayError

    def request(token: str) -> Request:
        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(msg: Any) -> None:
            return None

        headers = [(b"authorization", f"Bearer {token}".encode())]
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        return Request({**scope, "query_string": b""}, receive, send)

    s = config.from_mapping(
        {
            "providers": {"openai": {"kind": "openai", "api_key": "sk-x"}},
            "auth": {"tokens": ["tok-real-0123456789"], "admin_key": "adm-0123456789"},
        }
    )
    a = auth.Authenticator(s)
    first = await a.authenticate(request("tok-real-0123456789"))
    assert first.kind == "static" and a._digests == {
        "tok-real-0123456789": auth._hex("tok-real-0123456789")
    }
    for i in range(auth._DIGESTS_MAX + 10):
        with pytest.raises(GatewayError):
            await a.authenticate(request(f"made-up-{i}"))
        assert len(a._digests) <= auth._DIGESTS_MAX
    again = await a.authenticate(request("tok-real-0123456789"))
    assert again.kind == "static" and again.key_id == first.key_id
    assert a.is_admin(request("adm-0123456789")) and not a.is_admin(request("adm-wrong"))
