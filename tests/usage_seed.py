"""Test-only: put usage, team and key rows straight into a gateway's storage.

Until the batched usage writer lands, the dashboard tests build their data this way: the
rows are `UsageRecord`s, exactly what the pipeline produces for each request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import yaml
from sqlalchemy import create_engine, insert

from sluice import db
from sluice.usage import UsageRecord


def storage_url(config_path: Path) -> str:
    """The storage URL a test gateway was started with."""
    return str(yaml.safe_load(config_path.read_text())["storage"]["url"])


def insert_usage(url: str, records: Iterable[UsageRecord]) -> None:
    """Migrate the database at `url` if needed, then insert the records."""
    db.upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(db.usage), [r.as_dict() for r in records])
    engine.dispose()


def insert_key(url: str, key_id: str, team: str, name: str, secret: str, now: float) -> None:
    """A team and one of its keys, stored the way SPEC §6 says (hash and prefix only)."""
    db.upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(db.teams).prefix_with("OR IGNORE"), [{"id": team, "name": team, "created_at": now}]
        )
        conn.execute(
            insert(db.api_keys),
            [
                {
                    "id": key_id,
                    "team_id": team,
                    "name": name,
                    "prefix": secret[:11],
                    "hash": hashlib.sha256(secret.encode()).hexdigest(),
                    "created_at": now,
                }
            ],
        )
    engine.dispose()
