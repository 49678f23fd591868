"""Microbenchmark: what admission (limits + budgets) and a cache hit cost per request.

    python bench/traffic_overhead.py [--redis redis://127.0.0.1:6379/0] [-n 20000]

Runs the real `Traffic.admit` + `Ticket.settle` and `ResponseCache.lookup` + `replay` in
one event loop (uvloop), no HTTP: the figures are the gateway's own added time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import orjson
import uvloop

from sluice import config, schema, state
from sluice.asgi import Request
from sluice.auth import Principal
from sluice.cache import ResponseCache
from sluice.limits import Traffic
from sluice.pipeline import chat_operation
from sluice.pricing import Prices
from sluice.routing import Router
from sluice.usage import new_record

BIG = 10**9  # caps no run reaches: every request is admitted


def settings(
    redis_url: str | None, prefix: str, limits: bool, concurrent: bool = True
) -> config.Settings:
    data: dict[str, Any] = {
        "providers": {"openai": {"kind": "openai", "api_key": "sk-bench"}},
        "models": [{"match": "gpt-*", "provider": "openai"}],
        "cache": {"enabled": True},
        "redis": {"url": redis_url, "prefix": prefix},
    }
    if limits:
        data["limits"] = [
            {"scope": "key", "rpm": BIG, "tpm": BIG, **({"concurrent": BIG} if concurrent else {})},
            {"scope": "team", "rpm": BIG},
        ]
        data["budgets"] = [{"scope": "key", "usd": 1e6, "period": "month"}]
    return config.from_mapping(data)


def request() -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "query_string": b"",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(msg: Any) -> None:
        return None

    return Request(scope, receive, send)


async def _setup(s: config.Settings) -> tuple[Any, Traffic, Any, bytes, Principal]:
    """The state backend (started), admission, a plan, a request body and a caller."""
    st = state.build(s.redis.url, s.redis.prefix, 1, 1000)
    await st.start()
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello " * 40}],
    }
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    principal = Principal("key", team="team-1", key_id="key-1")
    return st, Traffic(s, st, Prices(s)), plan, orjson.dumps(body), principal


async def admission(s: config.Settings, n: int, await_settle: bool) -> list[float]:
    """Per-request µs of admit + settle (and, for Redis, the settle's round trip)."""
    st, traffic, plan, raw, principal = await _setup(s)
    times = []
    for _ in range(n):
        req, op = request(), chat_operation(schema.parse_chat(raw))
        rec = new_record("r", "POST", "/v1/chat/completions")
        rec.prompt_tokens, rec.completion_tokens, rec.cost_usd = 60, 20, 0.00002
        t = time.perf_counter()
        ticket = await traffic.admit(req, principal, plan, op)
        if ticket is not None:
            ticket.settle(rec)
            if await_settle:
                await asyncio.sleep(0)  # the batched settlement is sent on the next iteration
                await asyncio.gather(*getattr(st, "_pending", ()))
        times.append((time.perf_counter() - t) * 1e6)
    await st.close()
    return times


async def admission_concurrent(s: config.Settings, n: int, width: int = 100) -> list[float]:
    """Wall µs per request when `width` requests are admitted and settled at once."""
    st, traffic, plan, raw, principal = await _setup(s)

    async def one() -> None:
        rec = new_record("r", "POST", "/v1/chat/completions")
        rec.prompt_tokens, rec.completion_tokens, rec.cost_usd = 60, 20, 0.00002
        ticket = await traffic.admit(
            request(), principal, plan, chat_operation(schema.parse_chat(raw))
        )
        if ticket is not None:
            ticket.settle(rec)

    times = []
    for _ in range(max(1, n // width)):
        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(width)))
        await asyncio.sleep(0)
        await asyncio.gather(*getattr(st, "_pending", ()))
        times.append((time.perf_counter() - t) * 1e6 / width)
    await st.close()
    return times


async def bench_variant(s: config.Settings, n: int) -> list[float]:
    """Per-request µs of what `make bench`'s traffic variant adds: a key rpm + tpm limit
    (admit, x-ratelimit headers, settle) and a cache miss (slot, lookup, store)."""
    st = state.build(s.redis.url, s.redis.prefix, 1, 1000)
    await st.start()
    traffic, cache = Traffic(s, st, Prices(s)), ResponseCache(s.cache, st)
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    principal = Principal("key", team="team-1", key_id="key-1")
    answer = b'{"id":"c1","object":"chat.completion","choices":[]}'
    times = []
    raw = b'{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"%d"}]}'
    for i in range(n):
        req, op = request(), chat_operation(schema.parse_chat(raw % i))
        rec = new_record("r", "POST", "/v1/chat/completions")
        rec.prompt_tokens, rec.completion_tokens, rec.cost_usd = 60, 20, 0.00002
        t = time.perf_counter()
        slot = cache.open_slot(req, principal, plan, op)
        ticket = await traffic.admit(req, principal, plan, op)
        assert slot is not None and ticket is not None
        assert await cache.lookup(req, slot) is None
        cache.store_answer(slot, "openai", answer, None)
        ticket.settle(rec)
        times.append((time.perf_counter() - t) * 1e6)
    await st.close()
    return times


async def cache_hit(s: config.Settings, n: int, stream: bool) -> list[float]:
    """Per-request µs of a cache lookup that hits and its replay."""
    st = state.build(s.redis.url, s.redis.prefix, 1, 1000)
    await st.start()
    cache = ResponseCache(s.cache, st)
    plan = Router(s, {"openai"}).plan("gpt-4o-mini")
    raw = orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": "hello " * 40}],
        }
    )
    principal = Principal("key", team="team-1", key_id="key-1")
    body = orjson.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "word " * 60},
                }
            ],
            "usage": {"prompt_tokens": 60, "completion_tokens": 60},
        }
    )
    op = chat_operation(schema.parse_chat(raw))
    slot = cache.open_slot(request(), principal, plan, op)
    assert slot is not None
    cache.store_answer(slot, "openai", body, None)
    times = []
    for _ in range(n):
        req, op = request(), chat_operation(schema.parse_chat(raw))
        rec = new_record("r", "POST", "/v1/chat/completions")
        t = time.perf_counter()
        slot = cache.open_slot(req, principal, plan, op)
        assert slot is not None and await cache.lookup(req, slot) is not None
        await cache.replay(req, slot, op, rec)
        times.append((time.perf_counter() - t) * 1e6)
    await st.close()
    return times


def show(name: str, times: list[float]) -> None:
    times = times[len(times) // 10 :]  # drop the warm-up tenth
    q = statistics.quantiles(times, n=100)
    print(f"{name:<44} mean {statistics.fmean(times):7.1f} µs  p50 {q[49]:7.1f}  p99 {q[98]:7.1f}")


async def main(redis_url: str | None, n: int) -> None:
    backends = [("in-process", None)] + ([("redis", redis_url)] if redis_url else [])
    for label, url in backends:
        prefix = f"sluicebench:{uuid.uuid4().hex[:8]}:"
        off, on = settings(url, prefix, False), settings(url, prefix, True)
        variant = config.from_mapping(
            {
                "providers": {"openai": {"kind": "openai", "api_key": "sk-bench"}},
                "models": [{"match": "gpt-*", "provider": "openai"}],
                "cache": {"enabled": True},
                "redis": {"url": url, "prefix": prefix + "v:"},
                "limits": [{"scope": "key", "rpm": BIG, "tpm": BIG}],
            }
        )
        show(
            f"{label}: make bench's traffic variant (key rpm+tpm, miss)",
            await bench_variant(variant, n),
        )
        show(f"{label}: limits off (admit+settle)", await admission(off, n, False))
        show(f"{label}: 4 limits + budget, admit+settle", await admission(on, n, False))
        leased = settings(url, prefix + "l:", True, concurrent=False)
        show(f"{label}: 3 limits + budget (no concurrent)", await admission(leased, n, False))
        if url:
            show(f"{label}: same, settle round trip awaited", await admission(on, n, True))
        show(f"{label}: same, 100 at once (wall µs / request)", await admission_concurrent(on, n))
        show(f"{label}: cache hit, plain (lookup+replay)", await cache_hit(on, n, False))
        show(f"{label}: cache hit, stream (lookup+replay)", await cache_hit(on, n, True))
        if url:
            import redis

            r = redis.Redis.from_url(url)
            keys = list(r.scan_iter(match=prefix + "*"))
            if keys:
                r.delete(*keys)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default=None)
    ap.add_argument("-n", type=int, default=20000)
    args = ap.parse_args()
    uvloop.run(main(args.redis, args.n))
