"""One-off: CPU cost per upstream request of Sluice's own client, aiohttp, pyreqwest, rnet and
httpx (not in `make bench`; a client not installed in this venv is skipped).

    python -m bench.experiments.clients [--seconds 5] [--conns 64]

Each client, in turn, runs in this process pinned to core 0 and POSTs the bench body to the
bench's nginx upstream (core 1) from `--conns` concurrent tasks. Reported: requests/s and
CPU microseconds per request (process CPU time ÷ requests, threads included: the figure that
matters on a busy machine, where wall-clock rates are noisy).

Tried as sluice/upstream.py's client (branch perf2-pyreqwest, 2026-11-23): −47 µs gateway CPU
per request at c=64 (334 → 291), −0.07 ms c=1 p50, but not kept: pyreqwest 0.15.1 detaches
the request's tokio task when the awaiting Python task is cancelled, so a client that leaves
before the upstream's headers does not stop the upstream request (SPEC §6;
tests/test_upstream_cancel.py), and peak RSS under the bench rose from 76 to 85 MB.

2026-12-02 (this machine, c=64, 5 s): aiohttp 81–95 µs, pyreqwest 28–30, rnet 49, httpx
4,000+. rnet drops the Rust future, and with it the connection, when the awaiting task is
cancelled (before the headers and mid-stream), so it became sluice/upstream.py's client:
alternating `bench.run --systems sluice --only latency,throughput` runs, aiohttp → rnet,
c=64 3,593 / 3,171 → 4,050 / 4,104 req/s, CPU 277 / 314 → 246 / 243 µs a request, peak RSS
75.4 MB; c=1 p50 0.521 / 0.535 → 0.550 / 0.569 ms (each call crosses to rnet's tokio thread
and back, two wake-ups on the same core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from bench import procs, systems

HERE = Path(__file__).resolve().parent.parent
BODY = b'{"model":"gpt-bench","messages":[{"role":"user","content":"hi"}],"max_tokens":32}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

Post = Callable[[], Awaitable[int]]


async def drive(post: Post, conns: int, seconds: float) -> tuple[int, int, float, float]:
    """`conns` tasks calling `post` until time is up: (ok, failed, wall s, cpu s)."""
    ok = failed = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok, failed
        while time.monotonic() < end:
            try:
                status = await post()
            except Exception:
                status = 0
            if status == 200:
                ok += 1
            else:
                failed += 1

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return ok, failed, time.monotonic() - wall0, time.process_time() - cpu0


async def with_aiohttp(url: str, conns: int, seconds: float) -> tuple[int, int, float, float]:
    """aiohttp.ClientSession, as sluice/upstream.py configures it."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as s:
        timeout = aiohttp.ClientTimeout(total=30)

        async def post() -> int:
            async with s.post(url, data=BODY, headers=HEADERS, timeout=timeout) as r:
                await r.read()
                return r.status

        await drive(post, conns, 0.5)
        return await drive(post, conns, seconds)


async def with_pyreqwest(url: str, conns: int, seconds: float) -> tuple[int, int, float, float]:
    """pyreqwest (Rust reqwest/hyper on a tokio thread)."""
    from pyreqwest.client import ClientBuilder

    async with ClientBuilder().http1_only().build() as client:

        async def post() -> int:
            r = await client.post(url).headers(HEADERS).body_bytes(BODY).build().send()
            await r.bytes()
            return int(r.status)

        await drive(post, conns, 0.5)
        return await drive(post, conns, seconds)


async def with_httpx(url: str, conns: int, seconds: float) -> tuple[int, int, float, float]:
    """httpx.AsyncClient."""
    import httpx

    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(limits=limits) as client:

        async def post() -> int:
            r = await client.post(url, content=BODY, headers=HEADERS)
            return r.status_code

        await drive(post, conns, 0.5)
        return await drive(post, conns, seconds)


async def with_rnet(url: str, conns: int, seconds: float) -> tuple[int, int, float, float]:
    """rnet (Rust wreq/hyper on a tokio thread; cancelling the awaiting task drops the call)."""
    import rnet

    client = rnet.Client()

    async def post() -> int:
        r = await client.post(url, body=BODY, headers=HEADERS)
        await r.bytes()
        return int(r.status)

    await drive(post, conns, 0.5)
    return await drive(post, conns, seconds)


async def with_sluice(url: str, conns: int, seconds: float) -> tuple[int, int, float, float]:
    """sluice.httpclient (HTTP/1.1 on the event loop, httptools), Sluice's client since
    2026-12-02 (the second stop that day)."""
    from sluice.httpclient import Client

    client = Client("sluice-bench")

    async def post() -> int:
        r = await client.request("POST", url, HEADERS, BODY)
        await r.read()
        return r.status

    await drive(post, conns, 0.5)
    return await drive(post, conns, seconds)


CLIENTS = {
    "sluice": with_sluice,
    "aiohttp": with_aiohttp,
    "pyreqwest": with_pyreqwest,
    "rnet": with_rnet,
    "httpx": with_httpx,
}


def main() -> None:
    """Start the nginx upstream, measure each client, print a table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    workdir = HERE / ".work" / "clients"
    workdir.mkdir(parents=True, exist_ok=True)
    procs.pin_self()  # the upstream inherits core 1 ...
    up = systems.start_upstreams(workdir, 5.0)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(procs.GATEWAY_CORE)})  # ... the clients run on core 0
    url = up.json_base + "/chat/completions"
    print("| client | req/s | CPU µs / request | failed |\n|---|---|---|---|")
    try:
        for name, fn in CLIENTS.items():
            try:
                ok, failed, wall, cpu = uvloop.run(fn(url, args.conns, args.seconds))
            except Exception as exc:
                print(f"| {name} | not run: {type(exc).__name__}: {exc} | | |")
                continue
            print(f"| {name} | {ok / wall:,.0f} | {1e6 * cpu / max(ok, 1):.0f} | {failed} |")
    finally:
        up.stop()


if __name__ == "__main__":
    main()
