"""The counter/blob backends directly: the same contract in-process and in Redis, exact under
concurrency, and the RESP client's reconnect, NOSCRIPT, AUTH/SELECT and hung-server paths."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sluice import config, schema, tokenizer
from sluice.auth import Principal
from sluice.errors import GatewayError
from sluice.limits import Traffic
from sluice.pipeline import chat_operation
from sluice.pricing import Prices
from sluice.resp import RespClient
from sluice.routing import Router
from sluice.state import Counter, MemoryState, State
from sluice.state_redis import RedisState
from tests.traffic_util import drop_prefix, prefix, redis_server


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "memory":
        yield MemoryState(100)
        return
    url = request.getfixturevalue("redis_url")
    pfx = prefix()
    st = RedisState(url, pfx, None, MemoryState(100))
    yield st
    await st.close()
    drop_prefix(url, pfx)


async def test_reserve_is_all_or_nothing(backend: State) -> None:
    a, b = Counter("a", 2, 5, 60_000), Counter("b", 1, 1, 60_000)
    ok = await backend.reserve([a, b])
    assert ok.ok and ok.values == [2, 1] and 0 < ok.ttls[0] <= 60_000
    refused = await backend.reserve([a, b])  # b is full; a must not move
    assert not refused.ok and refused.failed == 1 and refused.values == [1]
    assert [v for v, _ in await backend.peek(["a", "b", "missing"])] == [2, 1, 0]
    backend.adjust([("a", -10), ("missing", 5)])
    await asyncio.sleep(0.05)  # Redis settles in the background
    assert [v for v, _ in await backend.peek(["a", "missing"])] == [
        0,
        0,
    ]  # floors at 0, no key made


async def test_ttl_kinds(backend: State) -> None:
    await backend.reserve([Counter("w", 1, -1, 150), Counter("g", 1, -1, -60_000)])
    await asyncio.sleep(0.3)
    (w, _), (g, g_ttl) = await backend.peek(["w", "g"])
    assert w == 0 and g == 1 and g_ttl > 50_000  # the window expired, the gauge did not


async def test_a_refused_reservation_leaves_no_key_without_expiry(redis_url: str) -> None:
    """The Redis script adds first and undoes past a cap: what it touched on the way must
    still expire (a window, a gauge) and hold nothing."""
    import redis

    pfx = prefix()
    st = RedisState(redis_url, pfx, None, MemoryState(100))
    try:
        counters = [Counter("w", 1, 10, 60_000), Counter("g", 1, 5, -60_000)]
        assert (await st.reserve(counters)).ok
        refused = await st.reserve([*counters, Counter("full", 3, 2, 60_000)])
        assert not refused.ok and refused.failed == 2 and refused.values == [0]
        refused = await st.reserve([Counter("w", 1, 10, 60_000), Counter("g0", 1, 0, -60_000)])
        assert not refused.ok and refused.failed == 1
        raw = redis.Redis.from_url(redis_url)
        values = {k: raw.get(pfx + k) for k in ("w", "g", "full", "g0")}
        ttls = {k: raw.pttl(pfx + k) for k in ("w", "g", "full", "g0")}
        raw.close()
        assert values == {"w": b"1", "g": b"1", "full": b"0", "g0": b"0"}
        assert all(ttl > 0 for ttl in ttls.values()), ttls
    finally:
        await st.close()
        drop_prefix(redis_url, pfx)


@pytest.mark.parametrize("n,k", [(200, 37)])
async def test_parallel_reservations_admit_exactly_k(backend: State, n: int, k: int) -> None:
    counters = [Counter("shared", 1, k, 60_000), Counter("free", 1, -1, 60_000)]
    results = await asyncio.gather(*(backend.reserve(counters) for _ in range(n)))
    assert sum(r.ok for r in results) == k
    assert [v for v, _ in await backend.peek(["shared", "free"])] == [k, k]


async def test_blobs(backend: State) -> None:
    backend.set_blob("blob", b"\x00payload\n", 0.2)
    assert await backend.get_blob("blob") == b"\x00payload\n"
    await asyncio.sleep(0.3)
    assert await backend.get_blob("blob") is None


def test_memory_blobs_are_bounded() -> None:
    st = MemoryState(max_blobs=3)

    async def run() -> list[bytes | None]:
        for i in range(5):
            st.set_blob(f"k{i}", b"v", 60)
        return [await st.get_blob(f"k{i}") for i in range(5)]

    assert asyncio.run(run()) == [None, None, b"v", b"v", b"v"]


async def test_resp_client_select_auth_and_noscript(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        server.client().config_set("requirepass", "s3cret")
        st = RedisState(f"redis://:s3cret@127.0.0.1:{server.port}/3", "p:", 1, MemoryState())
        assert (await st.reserve([Counter("c", 1, 5, 60_000)])).ok
        import redis

        direct = redis.Redis(port=server.port, password="s3cret", db=3)
        assert direct.get("p:c") == b"1"
        direct.script_flush()  # as after a Redis restart: the next EVALSHA gets NOSCRIPT
        assert (await st.reserve([Counter("c", 1, 5, 60_000)])).values == [2]
        assert not st.down
        await st.close()


async def test_hung_redis_falls_back_quickly(caplog: pytest.LogCaptureFixture) -> None:
    """A server that accepts but never answers: the watchdog gives up after the timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    st = RedisState(f"redis://127.0.0.1:{port}/0", "p:", 4, MemoryState())
    started = time.monotonic()
    first = await st.reserve([Counter("c", 1, 8, 60_000)])
    assert first.ok and first.local and time.monotonic() - started < 1.5
    results = [await st.reserve([Counter("c", 1, 8, 60_000)]) for _ in range(3)]
    assert [r.ok for r in results] == [True, False, False]  # 8 / 4 instances = 2 locally
    assert sum("Redis unreachable" in r.message for r in caplog.records) == 1
    await st.close()
    server.close()


async def test_resp_client_reconnects(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        client = RespClient(server.url)
        assert await client.execute("PING") == "PONG"
        server.client().client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(ConnectionError):
            await client.execute("PING")
        assert await client.execute("PING") == "PONG"
        await client.close()


async def test_resp_client_unawaited_commands_ride_with_the_next_call(tmp_path: Path) -> None:
    """Commands nobody awaits are held (up to hold_s) and written with the next awaited one,
    in the order submitted; a quiet client writes them when hold_s is up. Every reply
    reaches its own command."""
    with redis_server(tmp_path) as server:
        client = RespClient(server.url, timeout_s=0.4, hold_s=0.2)
        assert await client.execute("PING") == "PONG"
        sets = [client.submit("SET", f"k{i}", i, awaited=False) for i in range(3)]
        await asyncio.sleep(0.05)
        assert server.client().get("k0") is None  # held: not written yet
        assert await client.execute("GET", "k2") == b"2"  # written before this GET
        assert [f.result() for f in sets] == ["OK", "OK", "OK"]
        late = client.submit("INCR", "n", awaited=False)
        started = time.monotonic()
        assert await asyncio.wait_for(asyncio.shield(late), 1.0) == 1
        assert 0.15 < time.monotonic() - started < 0.6  # written when hold_s was up
        await asyncio.sleep(0.5)  # an idle connection is not "hung"
        assert await client.execute("GET", "n") == b"1"
        await client.close()


def _request() -> Any:
    from sluice.asgi import Request

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(msg: Any) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return Request(scope, receive, send)


async def test_principal_limits_apply_at_the_callers_key() -> None:
    """A key's own settings (Principal.limits, set by team keys or JWT entitlements)."""
    s = config.from_mapping(
        {
            "providers": {"openai": {"kind": "openai", "api_key": "sk"}},
            "models": [{"match": "gpt-*", "provider": "openai"}],
            "limits": [{"scope": "key", "rpm": 100}],
        }
    )
    traffic = Traffic(s, MemoryState(), Prices(s))
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
    me = Principal("key", team="t1", key_id="k1", limits={"rpm": 2, "budget_usd": 1})
    for _ in range(2):
        ticket = await traffic.admit(_request(), me, plan, chat_operation(schema.parse_chat(raw)))
        assert ticket is not None and len(ticket.plan.checks) == 1  # one counter: the smaller cap
        assert ticket.plan.checks[0].cap == 2 and len(ticket.budgets) == 1
    with pytest.raises(GatewayError) as refused:
        await traffic.admit(_request(), me, plan, chat_operation(schema.parse_chat(raw)))
    assert (
        refused.value.code == "RATE_LIMITED"
        and "2 requests per minute per key" in refused.value.message
    )
    other = Principal("key", team="t1", key_id="k2")
    assert await traffic.admit(_request(), other, plan, chat_operation(schema.parse_chat(raw)))


def test_a_live_slot_is_the_counters_own_until_it_expires() -> None:
    """`MemoryState.live_slot` hands out the table's own slot: counting on it is counting on
    the counter, and once it expires the counter gets a new one at 0 (never the old back)."""
    st = MemoryState()
    slot = st.live_slot("r:key:k1:1", 40)
    assert st.live_slot("r:key:k1:1", 40) is slot
    assert st.reserve_now([Counter("r:key:k1:1", 2, 10, 40)]).values == [2]
    assert slot[0] == 2
    time.sleep(0.05)
    assert st.reserve_now([Counter("r:key:k1:1", 1, 10, 40)]).values == [1]  # a new window
    fresh = st.live_slot("r:key:k1:1", 40)
    assert fresh is not slot and fresh[0] == 1 and slot[0] == 2
    # Held slots are counted on without reserve_now, so live_slot sweeps expired counters.
    st.live_slot("r:key:k2:1", 40)
    time.sleep(0.05)
    st._next_sweep = 0
    st.live_slot("r:key:k3:2", 40)
    assert "r:key:k2:1" not in st._counters and "r:key:k3:2" in st._counters


async def test_in_process_admission_counts_on_the_plans_live_slots() -> None:
    """In-process limits reserve on slots the caller's plan holds (LimitPlan.take_now): the same
    counters `peek` reads, settled on them, and a concurrency slot that expired is replaced."""
    s = config.from_mapping(
        {
            "providers": {"openai": {"kind": "openai", "api_key": "sk"}},
            "models": [{"match": "gpt-*", "provider": "openai"}],
            "limits": [{"scope": "key", "rpm": 10, "tpm": 1000, "concurrent": 2}],
        }
    )
    st = MemoryState()
    traffic = Traffic(s, st, Prices(s))
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
    me = Principal("key", key_id="k1")
    tickets = []
    for _ in range(2):
        req = _request()
        ticket = await traffic.admit(req, me, plan, chat_operation(schema.parse_chat(raw)))
        assert ticket is not None and ticket.slots is not None
        tickets.append((ticket, req))
    assert dict(tickets[1][1].response_headers)[b"x-ratelimit-remaining-requests"] == b"8"
    keys = [c.counter.key for c in tickets[0][0].plan.checks]
    est = tickets[0][0].est_tokens
    assert [v for v, _ in await st.peek(keys)] == [2, 2 * est, 2]  # rpm, tpm, concurrent
    with pytest.raises(GatewayError) as busy:  # two in flight: the third waits
        await traffic.admit(_request(), me, plan, chat_operation(schema.parse_chat(raw)))
    assert "2 concurrent per key" in busy.value.message
    from sluice.usage import new_record

    for ticket, _ in tickets:
        rec = new_record("r", "POST", "/v1/chat/completions")
        rec.prompt_tokens, rec.completion_tokens = 3, 4
        ticket.settle(rec)
    assert [v for v, _ in await st.peek(keys)] == [2, 14, 0]  # tokens settled, slots freed
    ticket = await traffic.admit(_request(), me, plan, chat_operation(schema.parse_chat(raw)))
    assert ticket is not None and ticket.slots is not None
    old = ticket.slots[2]
    old[1] = time.monotonic() - 1  # the concurrency slot expires (idle past its TTL)
    again = await traffic.admit(_request(), me, plan, chat_operation(schema.parse_chat(raw)))
    assert again is not None and again.slots is not None and again.slots[2] is not old
    assert [v for v, _ in await st.peek(keys)][::2] == [4, 1]  # rpm 4; a new gauge at 1


async def test_in_process_limits_and_budgets_are_admitted_at_once() -> None:
    """`Traffic.admit_now`, the pipeline's first try: in-process limits and budgets are
    reserved without a coroutine on the plan's live slots (LimitPlan.take_now), with the
    headers and refusals `reserve_now` gives; the Redis backend answers LATER; no rule, None."""
    from sluice.limits import LATER
    from sluice.state_redis import RedisState
    from sluice.usage import new_record

    bare = {
        "providers": {"openai": {"kind": "openai", "api_key": "sk"}},
        "models": [
            {
                "match": "gpt-*",
                "provider": "openai",
                "price": {"input_per_mtok": 1e6, "output_per_mtok": 0},
            }
        ],
    }
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * 30 + b'"}]'
    op = chat_operation(schema.parse_chat(raw + b',"max_tokens":1}'))
    prompt = tokenizer.estimate_chars(op.prompt_chars)  # what a request costs, in dollars
    # Two rpm limits (the tighter one is shown), a tpm limit, and a budget of 3 requests'
    # worth ($1 a prompt token, output free).
    rules = {
        "limits": [{"scope": "key", "rpm": 5, "tpm": 1000}, {"scope": "global", "rpm": 4}],
        "budgets": [{"scope": "key", "usd": 3 * prompt, "period": "day"}],
    }
    s = config.from_mapping({**bare, **rules})
    st = MemoryState()
    traffic = Traffic(s, st, Prices(s))
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    me = Principal("key", key_id="k1")
    seen, tickets = [], []
    for _ in range(3):
        req = _request()
        ticket = traffic.admit_now(req, me, plan, op)
        assert ticket is not None and ticket is not LATER and ticket.slots is not None
        seen.append(dict(req.response_headers))
        tickets.append(ticket)
    est = tickets[0].est_tokens
    assert est == prompt + 1 and tickets[0].est_nano == prompt * 10**9
    assert [h[b"x-ratelimit-limit-requests"] for h in seen] == [b"4"] * 3  # the tighter
    assert [h[b"x-ratelimit-remaining-requests"] for h in seen] == [b"3", b"2", b"1"]
    assert [h[b"x-ratelimit-remaining-tokens"] for h in seen] == [
        b"%d" % (1000 - n * est) for n in (1, 2, 3)
    ]
    assert all(h[b"x-ratelimit-reset-requests"].endswith(b"s") for h in seen)
    with pytest.raises(GatewayError) as spent:  # the budget holds 3: nothing moves
        traffic.admit_now(_request(), me, plan, op)
    assert spent.value.code == "BUDGET_EXCEEDED"
    keys = [c.key for c in tickets[0].plan.counters] + [
        b.counter.key for b in tickets[0].plan.budgets
    ]
    assert [v for v, _ in await st.peek(keys)] == [3, 3 * est, 3, 3 * prompt * 10**9]
    rec = new_record("r", "POST", "/v1/chat/completions")
    rec.prompt_tokens, rec.cost_usd = 2, 0.0  # the real usage: less than the estimate
    tickets[0].settle(rec)
    assert [v for v, _ in await st.peek(keys)] == [3, 2 * est + 2, 3, 2 * prompt * 10**9]
    assert traffic.admit_now(_request(), me, plan, op) is not None  # room again
    with pytest.raises(GatewayError) as limited:  # the global rpm of 4
        traffic.admit_now(_request(), Principal("key", key_id="k2"), plan, op)
    assert limited.value.code == "RATE_LIMITED" and "4 requests per minute" in limited.value.message
    # Counters that live in Redis must be awaited; with no rule there is nothing to admit.
    shared = RedisState("redis://127.0.0.1:6379/0", "p:", None, MemoryState())
    assert Traffic(s, shared, Prices(s)).admit_now(_request(), me, plan, op) is LATER
    none = config.from_mapping(bare)
    assert Traffic(none, MemoryState(), Prices(none)).admit_now(_request(), me, plan, op) is None


def test_resp_parser_handles_every_split_point() -> None:
    """Replies arrive in arbitrary TCP pieces: a cut anywhere is 'incomplete', never wrong."""
    from sluice.resp import RespError, _Incomplete, parse

    wire = b"*4\r\n:1\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n+OK\r\n-NOSCRIPT x\r\n"
    for cut in range(len(wire)):
        with pytest.raises(_Incomplete):
            parse(bytearray(wire[:cut]), 0)
    value, end = parse(bytearray(wire), 0)
    assert end == len(wire)
    assert value[:3] == [1, b"a\r\n", None]
    assert value[3][0] == "OK" and isinstance(value[3][1], RespError)


async def test_jwt_entitlements_apply_at_the_user() -> None:
    """A JWT caller has no key id: its entitlements (e.g. {"rpm": 1}) count per user."""
    s = config.from_mapping(
        {
            "providers": {"openai": {"kind": "openai", "api_key": "sk"}},
            "models": [{"match": "gpt-*", "provider": "openai"}],
        }
    )
    traffic = Traffic(s, MemoryState(), Prices(s))
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    alice = Principal("jwt", team="t1", user="alice", limits={"rpm": 1})
    assert await traffic.admit(_request(), alice, plan, chat_operation(schema.parse_chat(raw)))
    with pytest.raises(GatewayError) as refused:
        await traffic.admit(_request(), alice, plan, chat_operation(schema.parse_chat(raw)))
    assert "1 requests per minute per user" in refused.value.message
    bob = Principal("jwt", team="t1", user="bob", limits={"rpm": 1})
    assert await traffic.admit(_request(), bob, plan, chat_operation(schema.parse_chat(raw)))
    # No rules and no entitlements: admission costs nothing and reserves nothing.
    assert (
        await traffic.admit(
            _request(), Principal("open"), plan, chat_operation(schema.parse_chat(raw))
        )
        is None
    )


def _redis_value(url: str, key: str) -> int:
    import redis

    raw = redis.Redis.from_url(url)
    try:
        return int(raw.get(key) or 0)
    finally:
        raw.close()


async def test_far_from_the_cap_requests_are_admitted_from_a_lease(redis_url: str) -> None:
    """The first reservation takes a lease of LEASE_REQUESTS more; the next ones come out of
    it without touching Redis, and the instance gives back what it did not hand out when it
    stops, so the shared counter ends at exactly what was admitted."""
    from sluice.state_redis import LEASE_REQUESTS

    pfx = prefix()
    st = RedisState(redis_url, pfx, 1, MemoryState(100))
    try:
        c = Counter("rpm", 1, 1_000_000, 60_000)
        first = await st.reserve([c])
        assert first.ok and first.values == [1]
        assert _redis_value(redis_url, pfx + "rpm") == 1 + LEASE_REQUESTS
        seen = [(await st.reserve([c])).values[0] for _ in range(LEASE_REQUESTS)]
        assert seen == list(range(2, LEASE_REQUESTS + 2))  # each saw its own slot go
        assert _redis_value(redis_url, pfx + "rpm") == 1 + LEASE_REQUESTS  # no round trip
        assert (await st.reserve([c])).values == [LEASE_REQUESTS + 2]  # the lease ran out
        assert _redis_value(redis_url, pfx + "rpm") == 2 + 2 * LEASE_REQUESTS
        # A settlement moves the lease, not Redis: 5 handed back are handed out again.
        st.adjust([("rpm", -5)])
        assert (await st.reserve([c])).values == [LEASE_REQUESTS - 2]
        assert [v for v, _ in await st.peek(["rpm"])] == [LEASE_REQUESTS - 2]
    finally:
        await st.close()
    assert _redis_value(redis_url, pfx + "rpm") == LEASE_REQUESTS - 2
    drop_prefix(redis_url, pfx)


async def test_leases_never_let_two_instances_pass_a_cap(redis_url: str) -> None:
    """Two instances hammering one counter: leases are granted only far from the cap, so
    together they admit no more than the cap, and near it they go to Redis for each request
    and admit up to it; once both stop, the counter holds exactly what they admitted."""
    pfx = prefix()
    cap = 2_000
    a = RedisState(redis_url, pfx, 2, MemoryState(100))
    b = RedisState(redis_url, pfx, 2, MemoryState(100))
    try:
        c = Counter("budget", 3, cap, 3_600_000)

        async def spend(st: RedisState) -> int:
            admitted = 0
            for _ in range(cap):  # bounded: far more than the cap allows
                if not (await st.reserve([c])).ok:
                    return admitted
                admitted += 1
            return admitted

        got = await asyncio.gather(spend(a), spend(b), spend(a), spend(b))
        admitted = sum(got) * 3
        assert admitted <= cap
        assert admitted > cap - 3 * 2 * 3 * 32  # at most each instance's last lease unused
        # A settlement that gives tokens back lets both go on up to the cap.
        a.adjust([("budget", -30)])
        await a.close()
        await b.close()
        assert _redis_value(redis_url, pfx + "budget") == admitted - 30
    finally:
        drop_prefix(redis_url, pfx)


def _gets(server: Any) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def _until(check: Any, seconds: float = 3.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_cache_directory_keeps_misses_off_redis(tmp_path: Path) -> None:
    """A lookup of a key no instance stored is a miss without a GET; a key stored by another
    instance, before this one started or after, is fetched; while the subscription is
    down, every lookup asks Redis again."""
    with redis_server(tmp_path) as server:
        a = RedisState(server.url, "d:", 1, MemoryState(100))
        await a.start()
        await _until(lambda: a.directory_live)
        a.set_blob("early", b"one", 60)
        b = RedisState(server.url, "d:", 1, MemoryState(100))
        await b.start()
        await _until(lambda: b.directory_live)
        assert await b.get_blob("early") == b"one"  # loaded from the index
        before = _gets(server)
        assert [await b.get_blob(f"absent-{i}") for i in range(20)] == [None] * 20
        assert _gets(server) == before  # no round trip for a miss
        a.set_blob("late", b"two", 60)
        for _ in range(300):  # announced on the channel (bounded wait)
            if await b.get_blob("late") == b"two":
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("b never saw the key a stored")
        # The subscription drops: lookups go to Redis until the directory is back.
        server.client().client_kill_filter(_type="pubsub")
        await _until(lambda: not b.directory_live)
        before = _gets(server)
        assert await b.get_blob("absent") is None
        assert _gets(server) == before + 1
        await _until(lambda: b.directory_live)  # the background loop subscribed again
        assert await b.get_blob("late") == b"two"
        await a.close()
        await b.close()


async def test_an_idle_lease_goes_back(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a lease holds unused returns to the shared counter once it sits idle, while the
    instance runs (not only when it stops)."""
    from sluice import state_redis

    monkeypatch.setattr(state_redis, "LEASE_IDLE_S", 0.1)
    monkeypatch.setattr(state_redis, "_PROBE_S", 0.05)
    pfx = prefix()
    st = RedisState(redis_url, pfx, 1, MemoryState(100))
    await st.start()
    try:
        assert (await st.reserve([Counter("spend", 7, 10**9, 3_600_000)])).ok
        assert _redis_value(redis_url, pfx + "spend") == 7 * (1 + state_redis.LEASE_REQUESTS)
        for _ in range(100):  # bounded: the background loop runs every 50 ms here
            if _redis_value(redis_url, pfx + "spend") == 7:
                break
            await asyncio.sleep(0.02)
        assert _redis_value(redis_url, pfx + "spend") == 7
        assert (await st.reserve([Counter("spend", 7, 10**9, 3_600_000)])).values == [14]
    finally:
        await st.close()
        drop_prefix(redis_url, pfx)
