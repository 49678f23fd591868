"""Test-only: put usage, team and key rows straight into a gateway's storage.

For tests that need rows no real request can produce (fixed past timestamps, chosen
latencies) — the dashboard API's bucket and percentile checks. The rows are `UsageRecord`s,
exactly what the pipeline produces for each request; anything else should send real requests.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from sluice import db
from sluice.usage import UsageRecord


def storage_url(config_path: Path) -> str:
    """The storage URL a test gateway was started with."""
    return str(yaml.safe_load(config_path.read_text())["storage"]["url"])


def _insert(url: str, *statements: tuple[Any, list[dict[str, Any]]]) -> None:
    """Migrate the database at `url` if needed, then run the inserts (blocking)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # a loop runs here (e.g. Playwright's sync API): do the work on a fresh thread
        with ThreadPoolExecutor(1) as pool:
            pool.submit(_insert, url, *statements).result()
        return
    db.upgrade(url)

    async def run() -> None:
        engine = create_async_engine(db.async_url(url))
        async with engine.begin() as conn:
            for stmt, rows in statements:
                await conn.execute(stmt, rows)
        await engine.dispose()

    asyncio.run(run())


def insert_usage(url: str, records: Iterable[UsageRecord]) -> None:
    """Insert usage records (blocking; from async code run it in a thread)."""
    _insert(url, (insert(db.usage), [r.as_dict() for r in records]))


def insert_key(url: str, key_id: str, team: str, name: str, secret: str, now: float) -> None:
    """A team and one of its keys, stored the way SPEC §6 says (hash and prefix only)."""
    team_row = {"id": team, "name": team, "created_at": now}
    key_row = {
        "id": key_id,
        "team_id": team,
        "name": name,
        "prefix": secret[:11],
        "hash": hashlib.sha256(secret.encode()).hexdigest(),
        "created_at": now,
    }
    _insert(
        url,
        (insert(db.teams).prefix_with("OR IGNORE"), [team_row]),
        (insert(db.api_keys), [key_row]),
    )
