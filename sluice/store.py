"""Team and key storage on SQLAlchemy async (SQLite by default, PostgreSQL via storage.url).

Keys are `sk_` + 64 hex characters, returned once by `create_key`/`rotate` and stored only as
their SHA-256 (looked up by it) plus a short prefix for recognition. Nothing here is on the
request hot path: `sluice.auth.keys` caches what it reads.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.db import api_keys, engine_for, teams

KEY_SHAPE = re.compile(r"^sk_[0-9a-f]{64}$")
PREFIX_LEN = 11  # "sk_" + 8 hex: enough to recognise a key, useless to use it


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256 hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh team key: sk_ + 64 hex (256 random bits)."""
    return "sk_" + secrets.token_hex(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key, without its secret."""

    id: str
    team_id: str
    name: str
    prefix: str
    hash: str
    created_at: float
    revoked_at: float | None
    rotated_to: str | None
    allowed_models: tuple[str, ...] | None
    limits: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def active(self) -> bool:
        """Whether the key may be used."""
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """The admin view: everything but the hash."""
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "rotated_to": self.rotated_to,
            "active": self.active,
            "allowed_models": list(self.allowed_models) if self.allowed_models else None,
            "limits": self.limits,
            "metadata": self.metadata,
        }


def _record(row: Any) -> KeyRecord:
    m = row._mapping
    models = m["allowed_models"]
    return KeyRecord(
        id=m["id"],
        team_id=m["team_id"],
        name=m["name"],
        prefix=m["prefix"],
        hash=m["hash"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        rotated_to=m["rotated_to"],
        allowed_models=tuple(models) if models is not None else None,
        limits=dict(m["limits"] or {}),
        metadata=dict(m["metadata"] or {}),
    )


class Store:
    """Teams and keys in the configured database."""

    def __init__(self, url: str) -> None:
        self.url = url
        # The gateway's one engine for this URL: the usage writer and the dashboard use it too.
        self.engine: AsyncEngine = engine_for(url)

    async def close(self) -> None:
        """Release the connection pool."""
        await self.engine.dispose()

    async def ensure_team(self, team_id: str, name: str) -> float:
        """Create the team if it does not exist; its created_at either way."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(teams.c.created_at).where(teams.c.id == team_id))
            ).first()
            if row is not None:
                return float(row[0])
            now = time.time()
            await conn.execute(insert(teams).values(id=team_id, name=name, created_at=now))
            return now

    async def create_key(
        self,
        team_id: str,
        name: str,
        *,
        allowed_models: list[str] | None = None,
        limits: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: float | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key for `team_id` (the team is created if needed): (the key, its record)."""
        await self.ensure_team(team_id, name)
        key = new_key()
        values = {
            "id": "key_" + secrets.token_hex(8),
            "team_id": team_id,
            "name": name,
            "prefix": key[:PREFIX_LEN],
            "hash": hash_key(key),
            "created_at": created_at if created_at is not None else time.time(),
            "allowed_models": allowed_models,
            "limits": limits or {},
            "metadata": metadata or {},
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**values))
        return key, await self._must_get(str(values["id"]))

    async def by_hash(self, digest: str) -> KeyRecord | None:
        """The key stored under this SHA-256 hex, revoked or not."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.hash == digest))).first()
        return _record(row) if row is not None else None

    async def by_id(self, key_id: str) -> KeyRecord | None:
        """The key with this id."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _record(row) if row is not None else None

    async def resolve(self, key_or_id: str) -> KeyRecord | None:
        """A key given as its secret (sk_…) or its id (key_…)."""
        if key_or_id.startswith("sk_"):
            return await self.by_hash(hash_key(key_or_id))
        return await self.by_id(key_or_id)

    async def _must_get(self, key_id: str) -> KeyRecord:
        rec = await self.by_id(key_id)
        assert rec is not None
        return rec

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke a key (idempotent); None when no such key."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return await self.by_id(key_id)

    async def rotate(self, old: KeyRecord) -> tuple[str, KeyRecord]:
        """Replace an active key: the old one is revoked, the new keeps its team info."""
        key, new = await self.create_key(
            old.team_id,
            old.name,
            allowed_models=list(old.allowed_models) if old.allowed_models is not None else None,
            limits=old.limits,
            metadata=old.metadata,
            created_at=old.created_at,  # seed 003: refresh preserves the token's info
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == old.id)
                .values(revoked_at=time.time(), rotated_to=new.id)
            )
        return key, new

    async def list_keys(self, team_id: str | None = None) -> list[KeyRecord]:
        """Every key (optionally of one team), newest first."""
        q = select(api_keys).order_by(api_keys.c.created_at.desc())
        if team_id is not None:
            q = q.where(api_keys.c.team_id == team_id)
        async with self.engine.connect() as conn:
            return [_record(r) for r in (await conn.execute(q)).all()]

    async def list_teams(self) -> list[dict[str, Any]]:
        """Every team with its number of active keys."""
        active = (
            select(api_keys.c.team_id, func.count().label("n"))
            .where(api_keys.c.revoked_at.is_(None))
            .group_by(api_keys.c.team_id)
            .subquery()
        )
        q = (
            select(teams.c.id, teams.c.name, teams.c.created_at, active.c.n)
            .outerjoin(active, active.c.team_id == teams.c.id)
            .order_by(teams.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [
            {"id": r.id, "name": r.name, "created_at": r.created_at, "active_keys": r.n or 0}
            for r in rows
        ]

    async def count_keys(self) -> int:
        """How many keys were ever issued (revoked ones included)."""
        async with self.engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
            )
