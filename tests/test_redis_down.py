"""SPEC §6 Redis down: per-instance counters at limit ÷ instances, one warning, no 5xx,
shared counting again once Redis is back. Uses a throwaway redis-server on a free port."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.traffic_util import RedisServer, auth, chat_body, fresh_window, redis_server

TOKEN = "tok-redis-down-000000000001"
PFX = "sluice:"


def _post(gw: Gateway, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json=chat_body(),
        headers={**auth(TOKEN), **headers},
        timeout=30,
    )


def _window_count(server: RedisServer) -> int:
    keys = server.client().scan_iter(match=PFX + "r:global:*")
    # (a counter recreated after an empty restart keeps its base beside it: not a count)
    return sum(int(server.client().get(k) or 0) for k in keys if not k.endswith(b":base"))


def _wait(cond: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.1)


def test_redis_down_falls_back_then_recovers(
    fake_openai: FakeOpenAI, start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    with redis_server(tmp_path) as server:
        cfg = openai_config(
            fake_openai,
            auth={"tokens": [TOKEN]},
            limits=[{"scope": "global", "rpm": 10}],
            cache={"enabled": True},
            redis={"url": server.url},
        )
        a, b = start_gateway(cfg), start_gateway(cfg)
        # Both instances announce themselves; with no `instances` hint that count is used.
        _wait(lambda: server.client().zcard(PFX + "instances") == 2)
        time.sleep(3.5)  # one heartbeat period: each instance has read the count since
        fresh_window(margin_s=12)
        assert [_post(a).status_code for _ in range(3)] == [200] * 3
        assert _window_count(server) == 3
        server.stop()

        # Down: instance a now counts on its own at 10 // 2 = 5, starting from its share of
        # what the window had already spent (3 // 2 = 1): 4 more, then refusals.
        down = [_post(a) for _ in range(8)]
        assert [r.status_code for r in down] == [200] * 4 + [429] * 4
        assert all(r.json()["error"]["code"] == "RATE_LIMITED" for r in down[4:])
        cached = _post(a)  # the cache misses (no 5xx) while Redis is away
        assert cached.status_code == 429 and "x-sluice-cache" not in cached.headers
        assert _post(b, **{"Cache-Control": "no-store"}).status_code == 200
        assert b.proc.poll() is None and a.proc.poll() is None
        assert a.stderr().count("Redis unreachable") == 1

        # Back, but empty (no persistence): the probes reconnect and, before counting on
        # Redis again, each instance brings back its last view of the counter and what it
        # spent meanwhile: the counter resumes from the larger view (a's 3) plus a's 4 and
        # b's 1, whichever rejoins first, not from zero: a Redis restart never hands out the
        # window's allowance a second time. 9 once this request is in.
        server.proc = None
        server.start()
        _wait(lambda: "reachable again" in a.stderr() and "reachable again" in b.stderr())
        r = _post(a)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-requests"] == "1"
        assert _window_count(server) == 9
