"""The variants' processes and storage: PostgreSQL database, usage row counts, team keys,
Redis prefix clean-up, `sluice serve` with a variant's config (see bench/variants.py)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.procs import Proc
from bench.systems import CHAT, CONFIGS, ROOT, Upstreams


@dataclass(frozen=True)
class Process:
    """One gateway process the variants run on."""

    config: str
    env: dict[str, str]
    team_key: bool = False
    storage: str = "sqlite"  # sqlite | postgres
    redis: bool = False
    key_limits: str | None = None  # the team key's own limits (`keys create --limits`)
    plain_key: bool = False  # a second team key, without limits


def _traffic(redis: bool) -> Process:
    """A traffic variant: cache on, a team key with a key limit and a plain one."""
    limits = '{"rpm": 100000000, "tpm": 10000000000}'
    env = {"AUDIT_LOG": "false"}
    return Process("sluice-traffic.yaml", env, True, redis=redis, key_limits=limits, plain_key=True)


PROCESSES = {
    "open": Process("sluice-open.yaml", {"AUDIT_LOG": "false"}),
    "audit": Process("sluice-open.yaml", {"AUDIT_LOG": "true"}),
    "audit-pg": Process("sluice-open.yaml", {"AUDIT_LOG": "true"}, storage="postgres"),
    "key": Process("sluice-key.yaml", {"AUDIT_LOG": "false"}, team_key=True),
    # The same as "key" in a second process: an A/A control for the traffic Δs
    "key-twin": Process("sluice-key.yaml", {"AUDIT_LOG": "false"}, team_key=True),
    # Limits far above the load (checked, never biting), set on the key itself so that the
    # plain key in the same process has none: the features on and off in one process.
    "traffic-local": _traffic(redis=False),
    "traffic-redis": _traffic(redis=True),
}


# ---- storage: PostgreSQL database, row counts --------------------------------------------


def _pg(base: str, db: str, sql: str, *args: str) -> int:
    """Run one statement on PostgreSQL database `db`; a SELECT's first value (else 0)."""
    import asyncpg

    async def go() -> int:
        conn = await asyncpg.connect(f"{base}/{db}", timeout=5)
        try:
            if sql.startswith("SELECT"):
                return int(await conn.fetchval(sql, *args))
            await conn.execute(sql, *args)
            return 0
        finally:
            await conn.close()

    return asyncio.run(go())


def prepare_postgres(base: str, name: str = "sluice_bench") -> str:
    """Create database `name` if missing, migrate it, empty its usage table; its URL."""
    exists = _pg(base, "postgres", "SELECT count(*) FROM pg_database WHERE datname = $1", name)
    if not exists:
        _pg(base, "postgres", f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    _sluice(
        ["db", "upgrade", "--config", str(CONFIGS / "sluice-open.yaml")],
        {"SLUICE_DATABASE_URL": url},
    )
    _pg(base, name, "TRUNCATE usage")
    return url


def count_rows(url: str) -> int:
    """Rows in the usage table of a sqlite:/// or postgresql:// storage."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM usage").fetchone()[0])
    base, _, db = url.rpartition("/")
    return _pg(base, db, "SELECT count(*) FROM usage")


def settled_rows(url: str, expect: int | None = None, quiet_s: float = 0.4, limit_s: float = 15):
    """Wait for the background writer to drain: the count has reached `expect` (if given) and
    not moved for `quiet_s`. Returns (rows, seconds until the count last changed)."""
    t0 = time.monotonic()
    last, changed = count_rows(url), t0
    while time.monotonic() - t0 < limit_s:
        time.sleep(0.05)
        n = count_rows(url)
        if n != last:
            last, changed = n, time.monotonic()
        elif time.monotonic() - changed >= quiet_s and (expect is None or n >= expect):
            break
    return last, changed - t0


# ---- processes ---------------------------------------------------------------------------


def _sluice(args: list[str], env: dict[str, str], root: Path = ROOT) -> str:
    """Run the sluice CLI (from the repository `root`) and return its output."""
    out = subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), **env},
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sluice {' '.join(args[:2])} failed: {out.stderr.strip()[-400:]}")
    return out.stdout


def side_threads(pid: int) -> tuple[float, int]:
    """CPU seconds and context switches of the storage side's threads: every thread but the
    event loop's (and any `tokio` thread, which a Rust-based client would add: Sluice's own
    client runs on the loop since 2026-12-02). A storage query per request shows here."""
    ticks, switches = 0, 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            if (task / "comm").read_text().startswith("tokio"):
                continue
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        ticks += int(stat[11]) + int(stat[12])
        switches += sum(int(n) for n in re.findall(r"ctxt_switches:\s*(\d+)", status))
    return ticks / os.sysconf("SC_CLK_TCK"), switches


@dataclass
class Running:
    """A started variant process with what its targets need."""

    proc: Proc
    url: str
    storage_url: str
    key: str | None
    plain_key: str | None = None


def start(
    name: str,
    workdir: Path,
    up: Upstreams,
    pg_url: str | None,
    redis_url: str | None,
    root: Path = ROOT,
) -> Running:
    """Create the storage (and a team key), then start one variant process (its sluice
    package from the checkout at `root`; its config from this one)."""
    spec = PROCESSES[name]
    env = {
        **spec.env,
        "BENCH_DB": str(workdir / f"variant-{name}.db"),
        "BENCH_JSON_BASE": up.json_base,
        "BENCH_SSE_BASE": up.sse_base,
        "BENCH_ANTHROPIC_JSON_BASE": up.json_base.removesuffix("/v1"),
        "BENCH_ANTHROPIC_SSE_BASE": up.sse_base.removesuffix("/v1"),
    }
    storage_url = "sqlite:///" + env["BENCH_DB"]
    if spec.storage == "postgres":
        if pg_url is None:
            raise RuntimeError("PostgreSQL is not reachable")
        env["SLUICE_DATABASE_URL"] = storage_url = pg_url
    if spec.redis:
        if redis_url is None:
            raise RuntimeError("Redis is not reachable")
        env["SLUICE_REDIS_URL"] = redis_url
        env["BENCH_REDIS_PREFIX"] = redis_prefix(workdir)
    config = str(CONFIGS / spec.config)
    key = plain = None
    if spec.team_key:
        limits = ["--limits", spec.key_limits] if spec.key_limits else []
        key = _team_key(["--name", "bench", *limits], config, env, root)
    if spec.plain_key:
        plain = _team_key(["--name", "bench-plain"], config, env, root)
    port = procs.free_port()
    cmd = [sys.executable, "-m", "sluice", "serve", "--config", config, "--port", str(port)]
    env["PYTHONPATH"] = str(root)
    proc = procs.start(f"variant-{name}", cmd, port, workdir, procs.GATEWAY_CORE, env, cwd=root)
    return Running(proc, f"http://127.0.0.1:{port}{CHAT}", storage_url, key, plain)


def _team_key(args: list[str], config: str, env: dict[str, str], root: Path) -> str:
    """A new key of team "bench" (`sluice keys create` with `args`)."""
    out = _sluice(["keys", "create", "--team", "bench", *args, "--config", config], env, root)
    return re.search(r"^key:\s*(\S+)", out, re.M).group(1)  # type: ignore[union-attr]


def redis_prefix(workdir: Path) -> str:
    """This run's Redis key prefix (the shared Redis: deleted at the end)."""
    return f"sluicebench:{workdir.name}:"


def redis_cleanup(url: str, prefix: str) -> int:
    """Delete this run's keys from the shared Redis; how many."""
    import redis

    r = redis.Redis.from_url(url, socket_timeout=5)
    n = 0
    batch = []
    for k in r.scan_iter(match=prefix + "*", count=1000):
        batch.append(k)
        if len(batch) >= 1000:
            n += r.delete(*batch)
            batch = []
    if batch:
        n += r.delete(*batch)
    return n


def redis_ok(url: str) -> bool:
    """Whether Redis answers PING."""
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:
        return False
