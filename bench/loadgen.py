"""Load generators: wrk for non-streamed requests, an aiohttp client for concurrent streams.

wrk (C, epoll, one thread on the load core) drives the c=1 latency and c=64 throughput runs;
a Lua script sets the POST body and headers and prints wrk's own histogram as one JSON line.
Streams need per-stream timing and content checks, so a small asyncio client does those.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench.upstream import EXPECTED_TEXT

LUA = Path(__file__).resolve().parent / "post.lua"


@dataclass
class Target:
    """One thing to measure: where to POST, with which headers and bodies."""

    name: str
    json_url: str
    sse_url: str
    headers: dict[str, str] = field(default_factory=dict)
    json_model: str = "gpt-bench"
    sse_model: str = "gpt-bench-stream"
    sse_headers: dict[str, str] = field(default_factory=dict)  # extra, for streams only
    warm_s: float = 0.0  # a longer warm-up for systems that import lazily on first requests
    unique: bool = False  # every request's body differs (a cache, when on, always misses)
    _seq: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def body(self, stream: bool, template: bool = False) -> bytes:
        """The chat request body (streams do not ask for usage: gateways must add it).

        With `unique`, the prompt ends with a fresh number; `template=True` leaves the
        "@N@" placeholder for wrk's script to fill in."""
        text = "Say hello to the benchmark."
        if self.unique:
            text += " @N@" if template else f" {uuid.uuid4().hex[:8]}-{next(self._seq)}"
        return orjson.dumps(
            {
                "model": self.sse_model if stream else self.json_model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 32,
                "stream": stream,
            }
        )


@dataclass
class HttpResult:
    """A fixed-concurrency run of non-streamed requests."""

    requests: int
    seconds: float
    failed: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    """Whether wrk is installed."""
    return shutil.which("wrk") is not None


def wrk(target: Target, conns: int, seconds: float, timeout_s: float = 10.0) -> HttpResult:
    """Run wrk (one thread) at `conns` connections for `seconds` against the JSON URL."""
    env = {
        **os.environ,
        "BENCH_BODY": target.body(stream=False, template=True).decode(),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in target.headers.items()),
        "BENCH_UNIQUE": uuid.uuid4().hex[:8] + "-" if target.unique else "",
    }
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:.0f}s",
        "-s",
        str(LUA),
        target.json_url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-500:]}")
    s = json.loads(line.removeprefix("BENCHJSON "))
    failed = sum(s[k] for k in ("connect", "read", "write", "status", "timeout"))
    return HttpResult(
        requests=s["requests"] - s["status"],
        seconds=s["duration_us"] / 1e6,
        failed=failed,
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        mean_ms=s["mean_us"] / 1000,
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _py_http(target: Target, conns: int, seconds: float) -> HttpResult:
    """Fallback when wrk is missing: `conns` aiohttp workers posting for `seconds`."""
    body = target.body(stream=False)
    headers = {"content-type": "application/json", **target.headers}
    lat: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failed
            while time.monotonic() < end:
                t0 = time.perf_counter()
                data = target.body(stream=False) if target.unique else body
                try:
                    async with session.post(target.json_url, data=data, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    failed += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(conns)))
        took = time.monotonic() - t0
    ms = [x * 1000 for x in lat]
    return HttpResult(
        len(ms), took, failed, _pct(ms, 0.5), _pct(ms, 0.99), sum(ms) / max(1, len(ms))
    )


def http_load(target: Target, conns: int, seconds: float) -> HttpResult:
    """Non-streamed load at a fixed concurrency: wrk when installed, else the Python client."""
    if have_wrk():
        return wrk(target, conns, seconds)
    return asyncio.run(_py_http(target, conns, seconds))


@dataclass
class PairedResult:
    """c=1 requests alternating between two targets, timed one by one."""

    pairs: int
    failed: int
    delta_p50_ms: float  # the median of (a − b) over neighbouring requests
    a_p50_ms: float
    b_p50_ms: float


class _Conn:
    """One keep-alive HTTP/1.1 connection that POSTs and reads a Content-Length answer:
    blocking, no library, so the client adds the same few µs to every request."""

    def __init__(self, url: str) -> None:
        import socket
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.path = u.path or "/"
        self.host = f"{u.hostname}:{u.port}"
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), 10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, headers: dict[str, str], body: bytes) -> int:
        """POST `body`; the status (the answer is read whole)."""
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        top, _, rest = buf.partition(b"\r\n\r\n")
        # One pass in C whatever the number of headers: the client's cost stays the same
        # for an answer with more headers (x-ratelimit-*), so it is not counted as the
        # gateway's.
        at = top.lower().find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            end = top.find(b"\r\n", at + 2)
            length = int(top[at + 17 : end if end > 0 else len(top)])
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        return int(top.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


def paired(a: Target, b: Target, seconds: float) -> PairedResult:
    """Requests to `a` and `b` alternating one by one (a b b a …, so neither always goes
    first), each on its own connection, each timed alone. Neighbouring requests see the
    same machine, so the median of their differences holds a Δ of a few µs steady where
    runs a second apart differ by tens (this VM's neighbours come and go)."""
    conns = (_Conn(a.json_url), _Conn(b.json_url))
    targets = (a, b)
    headers = [{"Content-Type": "application/json", **t.headers} for t in targets]
    times: tuple[list[float], list[float]] = ([], [])
    failed = 0
    end = time.monotonic() + seconds
    try:
        n = 0
        while time.monotonic() < end:
            order = (0, 1) if n % 2 == 0 else (1, 0)
            took = [0.0, 0.0]
            ok = True
            for i in order:
                body = targets[i].body(stream=False)
                t0 = time.perf_counter()
                status = conns[i].request(headers[i], body)
                took[i] = time.perf_counter() - t0
                ok = ok and status == 200
            if ok:
                times[0].append(took[0] * 1000)
                times[1].append(took[1] * 1000)
            else:
                failed += 1
            n += 1
    finally:
        for c in conns:
            c.close()
    deltas = [x - y for x, y in zip(times[0], times[1], strict=True)]
    return PairedResult(
        len(deltas), failed, _pct(deltas, 0.5), _pct(times[0], 0.5), _pct(times[1], 0.5)
    )


@dataclass
class StreamResult:
    """A round of concurrent streams."""

    streams: int
    failed: int  # non-200, broken, or not intact
    ttfb_ms: list[float]
    total_ms: list[float]
    problems: list[str]

    def p(self, which: str, q: float) -> float:
        """A percentile of `ttfb` or `total`, in ms."""
        return _pct(self.ttfb_ms if which == "ttfb" else self.total_ms, q)


def _intact(raw: bytes) -> str | None:
    """None when the SSE body carries the whole text and ends with [DONE]; else why not."""
    events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    if not events or events[-1].strip() != b"data: [DONE]":
        return "no [DONE] at the end"
    text = []
    for e in events[:-1]:
        for line in e.split(b"\n"):
            if line.startswith(b"data:"):
                obj = orjson.loads(line[5:])
                for choice in obj.get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
    got = "".join(text)
    return None if got == EXPECTED_TEXT else f"text mismatch ({len(got)} chars)"


async def _one_stream(
    session: aiohttp.ClientSession, target: Target, body: bytes, headers: dict[str, str]
) -> tuple[float, float, str | None]:
    if target.unique:
        body = target.body(stream=True)
    t0 = time.perf_counter()
    first = None
    raw = bytearray()
    try:
        async with session.post(target.sse_url, data=body, headers=headers) as r:
            async for chunk in r.content.iter_any():
                if first is None and b"data:" in chunk:
                    first = time.perf_counter()
                raw += chunk
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0.0, 0.0, f"{type(exc).__name__}"
    end = time.perf_counter()
    if status != 200:
        return 0.0, 0.0, f"status {status}: {bytes(raw[:200])!r}"
    problem = _intact(bytes(raw))
    return ((first or end) - t0) * 1000, (end - t0) * 1000, problem


async def _streams(target: Target, n: int, rounds: int, seconds: float) -> StreamResult:
    body = target.body(stream=True)
    headers = {"content-type": "application/json", **target.headers, **target.sse_headers}
    res = StreamResult(0, 0, [], [], [])
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=n)

    def account(ttfb: float, total: float, problem: str | None) -> None:
        res.streams += 1
        if problem:
            res.failed += 1
            if len(res.problems) < 3:
                res.problems.append(problem)
        else:
            res.ttfb_ms.append(ttfb)
            res.total_ms.append(total)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if seconds <= 0:  # bursts: `n` streams started at the same instant, `rounds` times
            for _ in range(rounds):
                outs = await asyncio.gather(
                    *(_one_stream(session, target, body, headers) for _ in range(n))
                )
                for out in outs:
                    account(*out)
            return res
        # Steady: `n` streams always in flight, starts spread over one stream's length.
        _, total, _ = await _one_stream(session, target, body, headers)
        end = time.monotonic() + seconds

        async def worker(offset: float) -> None:
            await asyncio.sleep(offset)
            while time.monotonic() < end:
                account(*await _one_stream(session, target, body, headers))

        spread = max(total, 1.0) / 1000
        await asyncio.gather(*(worker(spread * i / n) for i in range(n)))
    return res


def streams(target: Target, n: int = 50, rounds: int = 1, seconds: float = 0.0) -> StreamResult:
    """`n` concurrent streams: `rounds` bursts of `n` simultaneous starts when `seconds` is 0,
    else `n` streams kept in flight for `seconds`. Per-stream TTFB, total time, intactness."""
    try:
        import uvloop

        return uvloop.run(_streams(target, n, rounds, seconds))
    except ImportError:
        return asyncio.run(_streams(target, n, rounds, seconds))
