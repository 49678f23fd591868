"""`make soak`: a bounded soak of three Sluice instances behind nginx (issue 8, item 5).

    python -m bench.soak [--seconds 180] [--rate 1.0] [--no-restart] [--no-redis-restart]
                         [--keep] [--note TEXT]

On 127.0.0.1 only: a fresh PostgreSQL database and a throwaway redis-server shared by three
`sluice serve` instances, a local nginx in front (deploy/nginx.conf's proxy settings), and the
test suite's fake OpenAI upstream. An aiohttp load generator sends mixed traffic through nginx
with several team keys over three teams: streams and not, repeated bodies (cache hits), a key
with its own rpm limit that it passes every minute, a team that spends its budget, and
upstream faults (-500, -429, -reset, long -slowstream streams). Mid-run one instance gets
SIGTERM (and is restarted once it has drained) and the Redis is restarted (its data lost).
Every request carries a unique X-Request-ID.

At the end every instance gets SIGTERM (flushing its usage records), the rows are read back
from PostgreSQL, and the checks print PASS/FAIL (bench/soak_report.py); the exit status is 1 on
any FAIL. The report goes to bench/results/<date>-soak.md; work files (configs, gateway audit
logs, nginx and Redis logs) to bench/.work/soak-<run>/ (removed unless --keep or a FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import soak_procs as sp
from bench import soak_report

HERE = Path(__file__).resolve().parent
ADMIN_KEY = "sk-soak-admin-" + uuid.uuid4().hex[:16]
DRAIN_S = 3.0  # server.drain_timeout_s: shorter than a -slowstream stream, so some are cut
SLOW_INTERVAL_S = 1.0  # the fake's pause between -slowstream chunks (7 chunks ≈ 7 s)
CHEAP = {"input_per_mtok": 0.5, "output_per_mtok": 1.5}
PRICEY = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
PRICEY_REQUEST_USD = 0.022  # ≈ what the fake's answer to one gpt-pricey request costs
GAMMA_RPM = 40  # key g1's own rpm limit; it is sent ~90 a minute
MAX_TOKENS = 64


@dataclass
class Result:
    """One client request and what the client saw."""

    rid: str
    scenario: str
    team: str
    key: str
    model: str
    stream: bool
    t0: float
    t1: float = 0.0
    status: int | None = None
    code: str | None = None  # error code from the JSON body or the stream's error event
    exc: str | None = None  # no HTTP response (connection error, timeout)
    from_sluice: bool = False  # the response echoes our X-Request-ID (else nginx made it)
    cache: str | None = None
    overhead_ms: float | None = None
    done: bool = False  # a stream ended with data: [DONE]
    error_events: int = 0
    data_after_error: bool = False
    chunks: int = 0


@dataclass
class Timeline:
    start: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)  # the same instant on the UTC clock
    events: list[tuple[float, str]] = field(default_factory=list)
    redis_down: tuple[float, float] | None = None  # run seconds: stopped, answering again
    sigterm: dict[str, float] = field(default_factory=dict)  # incarnation → run second

    def now(self) -> float:
        return time.monotonic() - self.start

    def note(self, text: str) -> None:
        t = self.now()
        self.events.append((t, text))
        print(f"  [{t:6.1f}s] {text}", flush=True)


@dataclass
class Key:
    name: str
    team: str
    secret: str = ""
    key_id: str = ""
    rpm: int | None = None


def config(workdir: Path, db_url: str, redis_url: str, fake_port: int, budget: float) -> Any:
    return {
        "server": {
            "host": "127.0.0.1",
            "upstream_timeout_s": 30,
            "drain_timeout_s": DRAIN_S,
            "cooldown_s": 5,
        },
        "storage": {"url": db_url},
        "redis": {"url": redis_url, "prefix": "soak:"},
        "providers": {
            "openai": {
                "kind": "openai",
                "api_key": "sk-soak-upstream-key",
                "base_url": f"http://127.0.0.1:{fake_port}/v1",
                "max_retries": 1,
            }
        },
        "models": [
            {"match": "gpt-pricey*", "provider": "openai", "price": PRICEY},
            {"match": "gpt-*", "provider": "openai", "price": CHEAP},
        ],
        "auth": {"admin_key": ADMIN_KEY, "keys": True},
        "limits": [{"scope": "key", "rpm": 600}, {"scope": "team", "rpm": 3000}],
        "budgets": [{"scope": "team", "usd": budget, "period": "day"}],
        "cache": {"enabled": True, "ttl_s": 900},
        "logging": {"audit": True, "spool_dir": str(workdir / "spool")},
    }


# -- the load --------------------------------------------------------------------------------


@dataclass
class Scenario:
    """Requests of one shape sent at `rate` per second (exponential gaps) with one key."""

    name: str
    rate: float
    key: str
    pick: Callable[[random.Random], tuple[str, bool, bool]]  # → model, stream, repeated body


REPEATS = [f"soak repeated question number {i}: what is a sluice?" for i in range(4)]


def scenarios(rate: float) -> list[Scenario]:
    def alpha(r: random.Random) -> tuple[str, bool, bool]:
        x = r.random()
        if x < 0.40:
            return "gpt-cheap", False, False
        if x < 0.60:
            return "gpt-cheap", True, False
        if x < 0.78:
            return "gpt-cheap", r.random() < 0.5, True  # cache hits after the first
        if x < 0.84:
            return "gpt-cheap-500", False, False
        if x < 0.90:
            return "gpt-cheap-reset", True, False
        if x < 0.96:
            return "gpt-cheap-slowstream", True, False
        return "gpt-cheap-429", r.random() < 0.5, False

    def beta(r: random.Random) -> tuple[str, bool, bool]:
        return "gpt-pricey", r.random() < 0.5, False

    def gamma(r: random.Random) -> tuple[str, bool, bool]:
        return "gpt-cheap", r.random() < 0.3, r.random() < 0.2

    return [
        Scenario("alpha/a1", 6.0 * rate, "a1", alpha),
        Scenario("alpha/a2", 4.0 * rate, "a2", alpha),
        Scenario("beta/b1 (budget)", 2.5 * rate, "b1", beta),
        Scenario("gamma/g1 (rpm 40)", 1.5 * rate, "g1", gamma),
        Scenario("gamma/g2", 1.0 * rate, "g2", gamma),
    ]


def parse_sse(res: Result, buf: bytes) -> None:
    """Count [DONE] and error events in a stream's bytes."""
    for raw in buf.split(b"\n\n"):
        for line in raw.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if res.error_events:
                res.data_after_error = True
            if data == b"[DONE]":
                res.done = True
                continue
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "error" in obj:
                res.error_events += 1
                err = obj["error"]
                res.code = err.get("code") if isinstance(err, dict) else str(err)
            else:
                res.chunks += 1


async def one_request(
    session: aiohttp.ClientSession,
    url: str,
    key: Key,
    res: Result,
    body: dict[str, Any],
    tl: Timeline,
) -> None:
    headers = {"Authorization": f"Bearer {key.secret}", "X-Request-ID": res.rid}
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            res.status = resp.status
            res.from_sluice = resp.headers.get("X-Request-ID") == res.rid
            res.cache = resp.headers.get("X-Sluice-Cache")
            ov = resp.headers.get("X-Sluice-Overhead-Ms")
            res.overhead_ms = float(ov) if ov else None
            raw = await resp.read()
            if res.stream and resp.status == 200:
                parse_sse(res, raw)
            elif resp.status >= 400:
                try:
                    err = orjson.loads(raw).get("error")
                    res.code = err.get("code") if isinstance(err, dict) else None
                except (orjson.JSONDecodeError, AttributeError):
                    res.code = "non-JSON body"
    except (TimeoutError, aiohttp.ClientError) as exc:
        res.exc = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    res.t1 = tl.now()


async def run_load(
    args: argparse.Namespace,
    url: str,
    keys: dict[str, Key],
    tl: Timeline,
    results: list[Result],
    run_id: str,
    events: list[tuple[float, Callable[[], Any]]],
    sampler: Callable[[], None],
    probes: list[tuple[float, str, int]],
) -> None:
    """Send the scenarios' traffic for args.seconds; run `events` at their times; sample RSS.

    `probes` (time, gateway URL, count): that many long streams sent straight to one gateway
    just before it gets SIGTERM, so that the drain deadline surely finds some in flight."""
    end = args.seconds
    seq = 0
    tasks: set[asyncio.Task[None]] = set()
    sem = asyncio.Semaphore(400)
    conn = aiohttp.TCPConnector(limit=400)
    timeout = aiohttp.ClientTimeout(total=60)
    rng = random.Random(args.seed)

    async def send(sc: Scenario) -> None:
        nonlocal seq
        key = keys[sc.key]
        while True:
            await asyncio.sleep(rng.expovariate(sc.rate))
            if tl.now() >= end:
                return
            seq += 1
            model, stream, repeated = sc.pick(rng)
            rid = f"soak-{run_id}-{seq:06d}"
            text = rng.choice(REPEATS) if repeated else f"soak {rid}: tell me about sluices"
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": MAX_TOKENS,
            }
            if stream:
                body["stream"] = True
            res = Result(rid, sc.name, key.team, key.name, model, stream, tl.now())
            results.append(res)

            async def go(res: Result = res, body: dict[str, Any] = body) -> None:
                async with sem:
                    await one_request(session, url, key, res, body, tl)

            t = asyncio.ensure_future(go())
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    async def probe(at: float, gw_url: str, count: int) -> None:
        nonlocal seq
        await asyncio.sleep(max(0.0, at - tl.now()))
        key = keys["a2"]
        for _ in range(count):
            seq += 1
            rid = f"soak-{run_id}-{seq:06d}"
            body = {
                "model": "gpt-cheap-slowstream",
                "messages": [{"role": "user", "content": f"soak {rid}: a long answer"}],
                "max_tokens": MAX_TOKENS,
                "stream": True,
            }
            res = Result(rid, "drain probe (straight to gw2)", key.team, key.name,
                         body["model"], True, tl.now())  # fmt: skip
            results.append(res)
            t = asyncio.ensure_future(one_request(session, gw_url, key, res, body, tl))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    async def sample() -> None:
        while tl.now() < end + 40:
            sampler()
            await asyncio.sleep(1.0)

    async def fire() -> None:
        for at, action in sorted(events, key=lambda e: e[0]):
            await asyncio.sleep(max(0.0, at - tl.now()))
            await action()

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        sampling = asyncio.ensure_future(sample())
        firing = asyncio.ensure_future(fire())
        await asyncio.gather(
            *(send(sc) for sc in scenarios(args.rate)), *(probe(*p) for p in probes)
        )
        await firing
        if tasks:
            tl.note(f"load stopped; waiting for {len(tasks)} requests in flight")
            await asyncio.wait(list(tasks), timeout=45)
        sampling.cancel()


async def create_keys(url: str, keys: dict[str, Key]) -> None:
    async with aiohttp.ClientSession() as s:
        for k in keys.values():
            body: dict[str, Any] = {"teamId": k.team, "name": k.name}
            if k.rpm:
                body["limits"] = {"rpm": k.rpm}
            async with s.post(
                url + "/tokens", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"POST /tokens: {r.status} {await r.text()}")
                k.secret = (await r.json())["apiKey"]
        async with s.get(
            url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as r:
            listed = (await r.json())["keys"]
    by_name = {(x["team_id"], x["name"]): x["id"] for x in listed}
    for k in keys.values():
        k.key_id = by_name[(k.team, k.name)]


def revocation_check(nginx: str, gateways: list[sp.Gateway], run_id: str) -> tuple[bool, str]:
    """After the restarts: a key cached by every instance, revoked through one, must be refused
    by all within a second (SPEC §7) — the restarted instance and the Redis pub/sub included."""
    import httpx

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"model": "gpt-cheap", "messages": [{"role": "user", "content": "revocation"}]}
    with httpx.Client(timeout=10) as c:
        r = c.post(nginx + "/tokens", json={"teamId": "delta", "name": "rv"}, headers=admin)
        secret = r.json()["apiKey"]
        kid = next(
            k["id"] for k in c.get(nginx + "/admin/keys?team=delta", headers=admin).json()["keys"]
        )
        time.sleep(0.5)

        def ask(g: sp.Gateway, n: int) -> int:
            hdr = {"Authorization": f"Bearer {secret}", "X-Request-ID": f"rv-{run_id}-{n}"}
            url = f"http://127.0.0.1:{g.port}/v1/chat/completions"
            return c.post(url, json=body, headers=hdr).status_code

        before = [ask(g, i) for i, g in enumerate(gateways)]
        r = c.delete(f"http://127.0.0.1:{gateways[0].port}/admin/keys/{kid}", headers=admin)
        time.sleep(1.0)
        after = [ask(g, 10 + i) for i, g in enumerate(gateways)]
    names = [g.current.name for g in gateways]
    ok = before == [200] * 3 and after == [401] * 3
    return ok, (
        f"key used on {', '.join(names)}: {before}; revoked on {names[0]} "
        f"(DELETE {r.status_code}); 1 s later: {after}"
    )


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="load duration (default 180)")
    ap.add_argument("--rate", type=float, default=1.0, help="scale every scenario's rate")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--no-restart", action="store_true", help="no SIGTERM/restart of gw2")
    ap.add_argument("--no-redis-restart", action="store_true", help="keep Redis up")
    ap.add_argument("--keep", action="store_true", help="keep the work dir and the database")
    ap.add_argument("--note", default="", help="a line for the report")
    ap.add_argument("--out", default=None, help="report path (default bench/results/...)")
    ap.add_argument("--fake", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fake-interval", type=float, default=SLOW_INTERVAL_S, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fake is not None:
        sp.fake_main(args.fake, args.fake_interval)
        return 0
    if not 10 <= args.seconds <= 1800:
        ap.error("--seconds: between 10 and 1800")

    run_id = uuid.uuid4().hex[:8]
    workdir = HERE / ".work" / f"soak-{run_id}"
    workdir.mkdir(parents=True)
    (workdir / "spool").mkdir()
    db_name = f"sluice_soak_{run_id}"
    beta_rate = 2.5 * args.rate
    # The budget lets beta spend for ~30 % of the run; then it gets BUDGET_EXCEEDED.
    budget = round(max(0.3 * args.seconds * beta_rate * PRICEY_REQUEST_USD, 0.5), 2)
    keys = {
        "a1": Key("a1", "alpha"),
        "a2": Key("a2", "alpha"),
        "b1": Key("b1", "beta"),
        "g1": Key("g1", "gamma", rpm=GAMMA_RPM),
        "g2": Key("g2", "gamma"),
    }
    print(f"soak {run_id}: {args.seconds:.0f} s, work dir {workdir}", flush=True)
    tl = Timeline()
    results: list[Result] = []
    gateways: list[sp.Gateway] = []
    started: list[Any] = []  # processes to stop at the end (by PID)
    redis = sp.Redis(workdir)
    db_url = ""
    ok = False
    try:
        db_url = sp.create_database(db_name)
        redis.start()
        fake, fake_port = sp.start_fake(workdir, SLOW_INTERVAL_S)
        started.append(fake)
        cfg = workdir / "sluice.yaml"
        sp.write_config(cfg, config(workdir, db_url, redis.url, fake_port, budget))
        sp.db_upgrade(cfg)
        gateways = [sp.Gateway(i, cfg, workdir) for i in (1, 2, 3)]
        for g in gateways:
            g.start()
        nginx, nginx_port = sp.start_nginx(workdir, [g.port for g in gateways])
        started.append(nginx)
        url = f"http://127.0.0.1:{nginx_port}"
        asyncio.run(create_keys(url, keys))
        time.sleep(1.5)  # the other instances leave open mode (Redis pub/sub, ≤ 1 s)
        tl = Timeline()
        tl.note(f"3 gateways behind nginx :{nginx_port}; team budget ${budget}/day")

        def sampler() -> None:
            t = tl.now()
            for g in gateways:
                life = g.current
                if life.proc.poll() is None:
                    mb = sp.rss_mb(life.proc.pid)
                    if mb is not None:
                        life.rss.append((t, mb))

        async def restart_gw2() -> None:
            g = gateways[1]
            tl.note(f"SIGTERM {g.current.name} (pid {g.current.proc.pid})")
            tl.sigterm[g.current.name] = tl.now()
            status = await asyncio.to_thread(g.stop, DRAIN_S + 15)
            tl.note(f"{g.current.name} exited with status {status}")
            life = await asyncio.to_thread(g.start)
            tl.note(f"{life.name} ready (pid {life.proc.pid})")

        async def restart_redis() -> None:
            tl.note("Redis: SIGTERM (no persistence: every counter and cache entry is lost)")
            t0 = tl.now()
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(redis.start)
            tl.redis_down = (t0, tl.now())
            tl.note("Redis: answering again")

        events: list[tuple[float, Callable[[], Any]]] = []
        probes: list[tuple[float, str, int]] = []
        if not args.no_restart:
            events.append((0.35 * args.seconds, restart_gw2))
            gw2_url = f"http://127.0.0.1:{gateways[1].port}/v1/chat/completions"
            probes.append((0.35 * args.seconds - 1.5, gw2_url, 3))
        if not args.no_redis_restart:
            events.append((0.6 * args.seconds, restart_redis))
        asyncio.run(
            run_load(
                args,
                url + "/v1/chat/completions",
                keys,
                tl,
                results,
                run_id,
                events,
                sampler,
                probes,
            )
        )
        sampler()
        revoked = revocation_check(url, gateways, run_id)
        tl.note("revocation after the restarts: " + revoked[1])
        tl.note("SIGTERM every gateway (each flushes its usage records)")
        for g in gateways:
            tl.sigterm.setdefault(g.current.name, tl.now())
            g.stop(DRAIN_S + 15)
        tl.note(
            "gateways stopped: "
            + ", ".join(f"{g.current.name}={g.current.exit_status}" for g in gateways)
        )
        rows = asyncio.run(sp.fetch_rows(db_url, f"soak-{run_id}-"))
        report = soak_report.build(
            args=args,
            run_id=run_id,
            results=results,
            rows=rows,
            gateways=gateways,
            timeline=tl,
            keys={k.name: (k.team, k.key_id, k.rpm) for k in keys.values()},
            budget=budget,
            drain_s=DRAIN_S,
            revoked=revoked,
        )
        ok = report.ok
        out = Path(args.out) if args.out else HERE / "results" / f"{dt.date.today()}-soak.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.markdown)
        print(report.markdown)
        print(f"written to {out}")
    finally:
        for g in gateways:
            if g.lives and g.current.proc.poll() is None:
                g.stop(DRAIN_S + 15)
        for p in reversed(started):
            sp.stop_pid(p)
        redis.stop()
        if db_url and not args.keep:
            sp.drop_database(db_name)
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work files kept in {workdir}" + (f", database {db_name}" if args.keep else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
