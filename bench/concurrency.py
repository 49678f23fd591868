"""SPEC §7 concurrency check: N concurrent streams against one gateway instance.

    python -m bench.concurrency --streams 500 --chunk-ms 500

Starts the stream upstream (bench/upstream.py: 20 chunks `--chunk-ms` apart, so a stream
lasts 20 × chunk-ms) and one `sluice serve` in subprocesses, opens every stream at once (or
over `--ramp` seconds), and while they run polls GET /health on its own connection.
Reports: time to first byte of the streams (no queueing means it stays near the upstream's
own first-chunk time), /health latency p50/p99/max, CPU seconds of each process, the
gateway's RSS before/peak/after, and its established connections to the upstream at peak,
just after, and once the pool's keep-alive has expired. Not part of the test suite: it
loads the machine for as long as the streams last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.upstream import CHUNKS

ROOT = Path(__file__).resolve().parent.parent


def stream_s(args: argparse.Namespace) -> float:
    """How long one stream lasts at the upstream's pacing (20 chunks)."""
    return float(CHUNKS * args.chunk_ms / 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections owned by `pid` whose remote port is `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port == port and cols[3] == "01" and cols[9] in inodes:
                count += 1
    return count


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


async def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status in (200, 404, 405):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def one_stream(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    body = {
        "model": "gpt-bench",
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    started = time.monotonic()
    ttfb = None
    events = 0
    done = False
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                if ttfb is None:
                    ttfb = time.monotonic() - started
                events += 1
                done = done or line.strip() == b"data: [DONE]"
        status = resp.status
    return {"status": status, "ttfb": ttfb, "events": events, "done": done}


async def poll_health(url: str, stop: asyncio.Event, out: list[float]) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as s:
        while not stop.is_set():
            t = time.monotonic()
            async with s.get(url + "/health") as r:
                await r.read()
                assert r.status == 200
            out.append((time.monotonic() - t) * 1000)
            await asyncio.sleep(0.02)


async def run(
    args: argparse.Namespace, gw_pid: int, gw_url: str, fake_port: int, fake_pid: int
) -> dict[str, Any]:
    await wait_up(gw_url + "/health")
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=stream_s(args) * 10 + 60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await one_stream(session, gw_url)  # warm the pools and imports
        rss_before = rss_mb(gw_pid)
        health: list[float] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(gw_url, stop, health))
        await asyncio.sleep(0.5)
        idle_health = list(health)
        started = time.monotonic()
        cpu_before = (cpu_s(gw_pid), cpu_s(fake_pid), time.process_time())
        tasks = []
        for _ in range(args.streams):
            tasks.append(asyncio.create_task(one_stream(session, gw_url)))
            if args.ramp:
                await asyncio.sleep(args.ramp / args.streams)
        peak_rss, peak_conns = rss_before, 0
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.25)
            peak_rss = max(peak_rss, rss_mb(gw_pid))
            peak_conns = max(peak_conns, connections_to(gw_pid, fake_port))
        wall = time.monotonic() - started
        cpu = (
            cpu_s(gw_pid) - cpu_before[0],
            cpu_s(fake_pid) - cpu_before[1],
            time.process_time() - cpu_before[2],
        )
        results = [t.result() for t in tasks if not t.exception()]
        errors = [repr(t.exception()) for t in tasks if t.exception()]
        busy_health = health[len(idle_health) :]
        stop.set()
        await poller
    await asyncio.sleep(1)
    conns_after = connections_to(gw_pid, fake_port)
    rss_after = rss_mb(gw_pid)
    conns_later = None
    if args.keepalive_wait:
        await asyncio.sleep(args.keepalive_wait)
        conns_later = connections_to(gw_pid, fake_port)
    ttfbs = [r["ttfb"] * 1000 for r in results if r["ttfb"] is not None]
    return {
        "streams": args.streams,
        "chunk_ms": args.chunk_ms,
        "ramp_s": args.ramp,
        "wall_s": round(wall, 2),
        "cpu_s": {
            "gateway": round(cpu[0], 2),
            "fake_upstream": round(cpu[1], 2),
            "client": round(cpu[2], 2),
        },
        "load_avg_1m": os.getloadavg()[0],
        "ideal_stream_s": round(stream_s(args), 2),
        "completed_with_done": sum(1 for r in results if r["status"] == 200 and r["done"]),
        "client_errors": errors[:5],
        "ttfb_ms": {"p50": pct(ttfbs, 0.5), "p99": pct(ttfbs, 0.99), "max": max(ttfbs or [0])},
        "health_ms_idle": {"p50": pct(idle_health, 0.5), "p99": pct(idle_health, 0.99)},
        "health_ms_under_load": {
            "n": len(busy_health),
            "p50": pct(busy_health, 0.5),
            "p99": pct(busy_health, 0.99),
            "max": max(busy_health or [0]),
        },
        "rss_mb": {
            "before": round(rss_before, 1),
            "peak": round(peak_rss, 1),
            "after": round(rss_after, 1),
            "growth_peak": round(peak_rss - rss_before, 1),
        },
        "upstream_connections": {
            "peak": peak_conns,
            "1s_after": conns_after,
            f"{args.keepalive_wait}s_after": conns_later,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--chunk-ms", type=float, default=500, help="upstream chunk pacing")
    parser.add_argument("--ramp", type=float, default=0, help="open the streams over this long")
    parser.add_argument(
        "--keepalive-wait", type=float, default=35, help="then count upstream connections again"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    fake_port, gw_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SLUICE_CONFIG", None)
    cfg = work / "sluice.yaml"
    cfg.write_text(
        json.dumps(
            {
                "storage": {"url": f"sqlite:///{work}/sluice.db"},
                "providers": {
                    "openai": {
                        "kind": "openai",
                        "api_key": "sk-bench",
                        "base_url": f"http://127.0.0.1:{fake_port}/v1",
                    }
                },
                "models": [{"match": "gpt-*", "provider": "openai"}],
                "logging": {"audit": False},
            }
        )
    )
    fake = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.upstream"),
            *("--port", str(fake_port), "--chunk-ms", str(args.chunk_ms)),
        ],
        cwd=ROOT,
        env=env,
    )
    gw = subprocess.Popen(
        [sys.executable, "-m", "sluice", "serve", "--config", str(cfg), "--port", str(gw_port)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(run(args, gw.pid, f"http://127.0.0.1:{gw_port}", fake_port, fake.pid))
    finally:
        for proc in (gw, fake):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
