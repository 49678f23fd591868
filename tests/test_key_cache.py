"""The in-process key cache against a real SQLite store: what reaches storage and what not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sluice import db
from sluice.auth import keys as keys_mod
from sluice.auth.keys import KeyAuth
from sluice.errors import GatewayError
from sluice.store import Store, hash_key, new_key


@pytest.fixture
def store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path}/cache.db"
    db.upgrade(url)
    return Store(url)


async def test_a_cached_key_touches_no_storage(store: Store) -> None:
    auth = KeyAuth(store, None)
    key, rec = await store.create_key("t1", "one")
    assert (await auth.lookup(key)) == rec
    before = auth.lookups
    for _ in range(100):
        assert (await auth.lookup(key)) is not None
    assert auth.lookups == before
    await store.close()


async def test_negative_lookups_are_bounded(store: Store) -> None:
    auth = KeyAuth(store, None)
    assert await auth.lookup("sk_short") is None
    assert await auth.lookup("sk_" + "G" * 64) is None
    assert auth.lookups == 0  # malformed keys never reach storage
    unknown = new_key()
    results = await asyncio.gather(*(auth.lookup(unknown) for _ in range(20)))
    assert results == [None] * 20
    assert auth.lookups == 1  # concurrent misses share one lookup
    for _ in range(20):
        assert await auth.lookup(unknown) is None
    assert auth.lookups == 1  # and the answer is remembered
    await store.close()


async def test_negative_cache_has_a_size_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_mod, "NEGATIVE_MAX", 8)
    auth = KeyAuth(store, None)
    for _ in range(30):
        await auth.lookup(new_key())
    assert len(auth._neg) <= 8
    await store.close()


async def test_revocation_applies_at_once_and_storage_outage_keeps_cached_keys(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = KeyAuth(store, None)
    key, _rec = await store.create_key("t1", "one")
    other, _ = await store.create_key("t1", "two")
    assert await auth.lookup(key) is not None
    await store.engine.dispose()
    # Storage gone: point the engine at a path that cannot be opened.
    monkeypatch.setattr(store, "engine", Store("sqlite:////nonexistent/dir/x.db").engine)
    monkeypatch.setattr(keys_mod, "REVALIDATE_S", 0.0)
    assert await auth.lookup(key) is not None  # stale entry served, re-read fails quietly
    await asyncio.sleep(0.05)
    assert await auth.lookup(key) is not None
    with pytest.raises(GatewayError) as err:
        await auth.lookup(other)
    assert err.value.status == 503 and err.value.code == "SERVICE_UNAVAILABLE"
    auth.apply("revoke", hash_key(key))
    assert await auth.lookup(key) is None


async def test_background_revalidation_notices_a_revocation_made_elsewhere(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = KeyAuth(store, None)
    key, rec = await store.create_key("t1", "one")
    assert await auth.lookup(key) is not None
    await store.revoke(rec.id)  # e.g. by the CLI, with no Redis to announce it
    monkeypatch.setattr(keys_mod, "REVALIDATE_S", 0.0)
    assert await auth.lookup(key) is not None  # served stale once while re-reading
    deadline = time.monotonic() + 5
    while await auth.lookup(key) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await store.close()


async def test_state_unknown_at_start_is_closed_then_learnt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/late.db"
    store = Store(url)
    auth = KeyAuth(store, None)
    await auth.start()  # not migrated yet: fail closed
    assert auth.any_keys is True
    await asyncio.to_thread(db.upgrade, url)
    deadline = time.monotonic() + 10
    while auth.any_keys:  # migrated, no key: the background check opens it within seconds
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await auth.close()
    await store.close()
