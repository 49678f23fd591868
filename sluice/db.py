"""The one storage schema (SQLAlchemy Core) serving SQLite and PostgreSQL.

Migrations in `sluice/migrations` are generated from this metadata; change both together.
"""

from __future__ import annotations

import functools
import operator
import os
import sqlite3
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    event,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData()

teams = Table(
    "teams",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("created_at", Float, nullable=False),  # epoch seconds
    Column("metadata", JSON, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),  # key_<hex>: what admins see and revoke by
    Column("team_id", String(128), ForeignKey("teams.id"), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("prefix", String(16), nullable=False),  # "sk_15f302b2": enough to recognise, not to use
    Column("hash", String(64), nullable=False, unique=True),  # SHA-256 hex of the whole key
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("rotated_to", String(64), nullable=True),
    Column("allowed_models", JSON, nullable=True),  # list of globs; null = any
    Column(
        "limits", JSON, nullable=True
    ),  # {"rpm": .., "tpm": .., "concurrent": .., "budget_usd": ..}
    Column("metadata", JSON, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("request_id", String(160), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(512), nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("model", String(256), nullable=True),
    Column("upstream_model", String(256), nullable=True),
    Column("provider", String(128), nullable=True),
    Column("team", String(128), nullable=True),
    Column("key_id", String(64), nullable=True),
    Column("user", String(256), nullable=True),
    Column("session", String(256), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("tokens_estimated", Boolean, nullable=False, default=False),
    Column("cost_usd", Float, nullable=True),  # null = price unknown, never 0 for unknown
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("ttfb_ms", Float, nullable=True),
    Column("overhead_ms", Float, nullable=True),
    Column("cache_hit", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("stream", Boolean, nullable=False, default=False),
    Index("ix_usage_ts", "ts"),
    Index("ix_usage_request_id", "request_id"),
    Index("ix_usage_team_ts", "team", "ts"),
)


def async_url(url: str) -> str:
    """A storage URL with the async driver SQLAlchemy needs (aiosqlite / asyncpg)."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


# Several workers share one SQLite file: wait this long for its lock instead of failing at once.
_SQLITE_LOCK_WAIT_S = 15


def engine_for(url: str) -> AsyncEngine:
    """The one async engine a gateway opens for `storage.url`, shared by team keys (`Store`),
    the usage writer and the dashboard's queries."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": _SQLITE_LOCK_WAIT_S}
    else:
        # A dropped connection must fail a key lookup fast, not hang a request; callers bound
        # their own statements (the writer 10 s, lookups less), this is the backstop.
        kwargs["connect_args"] = {"timeout": 5, "command_timeout": 30}
        kwargs.update(pool_size=5, max_overflow=5, pool_timeout=3)
    engine = create_async_engine(async_url(url), **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets workers' batches and readers (key lookups, admin queries) proceed side by side."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _as_is(value: Any) -> Any:
    return value


@functools.cache
def _bind_fast() -> None:
    """Registers adapters for None and bool with the standard driver. It binds int, float,
    str and bytes at once, but looks any other value up in its adapter registry, then on the
    value itself: with 3 to 5 Nones and 3 bools in a usage row that cost ~4 of a row's
    ~18 µs (18.0 → 14.2, three runs each, 2026-12-02). A registered adapter is found at the
    first step, and these give the driver the value it would bind anyway (None → NULL, a
    bool → 0 or 1). The registry is the process's, so this runs once."""
    sqlite3.register_adapter(bool, int)
    sqlite3.register_adapter(type(None), _as_is)


class SqliteAppender:
    """Appends rows to one SQLite table with the standard library's driver, in the calling
    thread (the usage writer's worker thread).

    Through the async engine each batch crossed into aiosqlite's thread once per step (a
    checkout ping, BEGIN, the statement, COMMIT) and SQLAlchemy built each row's parameters:
    ~40 µs of CPU per row in batches of 50, against ~6 µs for `executemany` here
    (2026-11-23). The statement is still SQLAlchemy's, compiled once from the schema.
    """

    def __init__(self, url: str, table: Table, columns: tuple[str, ...]) -> None:
        self.path = url.removeprefix("sqlite:///")
        compiled = table.insert().compile(dialect=sqlite_dialect.dialect(), column_keys=columns)
        self.sql = str(compiled)
        self.values = operator.itemgetter(*(compiled.positiontup or columns))
        self._conn: sqlite3.Connection | None = None
        _bind_fast()

    def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` in one transaction (raises sqlite3.Error, after which the next call
        opens a fresh connection)."""
        conn = self._conn
        if conn is None:
            # One batch at a time, but not always from the same pool thread; set up as the
            # engine's connections are.
            conn = sqlite3.connect(self.path, timeout=_SQLITE_LOCK_WAIT_S, check_same_thread=False)
            _sqlite_wal(conn, None)
            self._conn = conn
        try:
            with conn:  # BEGIN … COMMIT, or ROLLBACK on an error
                conn.executemany(self.sql, map(self.values, rows))
        except sqlite3.Error:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (a later insert reopens it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def alembic_config(url: str) -> Any:
    """An Alembic Config pointed at the packaged migrations and `url`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


HEAD = "0001"  # the newest migration's revision (tests/test_serve.py checks it with Alembic)


def is_current(url: str) -> bool:
    """Whether the SQLite database at `url` is already at HEAD. Read with the standard
    library, so that a start with nothing to migrate never imports Alembic (~0.2 s)."""
    import sqlite3

    if not url.startswith("sqlite:///"):
        return False
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(path)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == HEAD


def ensure_current(url: str) -> None:
    """Migrate the database at `url` unless it is a SQLite file already at HEAD."""
    if not is_current(url):
        upgrade(url)


def ensure_current_apart(url: str) -> None:
    """`ensure_current` in a forked child when there is something to migrate: Alembic, Mako
    and the migration scripts then never take memory in the serving process (~14 MB RSS)."""
    if is_current(url):
        return
    if not hasattr(os, "fork"):
        upgrade(url)
        return
    pid = os.fork()
    if pid == 0:  # the child: migrate, then leave without running the parent's atexit hooks
        code = 1
        try:
            upgrade(url)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("storage migration failed (see the error above)")


def upgrade(url: str) -> None:
    """Apply every migration to the database at `url` (blocking; run outside the event loop)."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
