"""The instant upstream: nginx for the fixed JSON answer, a raw asyncio server for streams.

- `nginx_upstream_conf()` — nginx answering every request with one fixed OpenAI
  `chat.completion` JSON (`return 200 '...'`), so the non-streamed direct baseline and the
  wrk ceiling are as fast as a web server gets.
- `python -m bench.upstream --port P` — a uvloop protocol server (no framework) that answers
  `"stream": true` with 20 OpenAI chunks paced `--chunk-ms` apart (first one at once), then a
  usage chunk when `stream_options.include_usage` is true, then `data: [DONE]`. Pacing makes
  first-byte and total times mean what they mean against a real model: a gateway that buffers
  shows up as a late first byte. Non-streamed requests get the same JSON as nginx.
- The same server (and nginx, at `/v1/messages`) is also a fake **Anthropic Messages** API:
  a POST to `/v1/messages` gets a Messages JSON answer, or with `"stream": true` Anthropic's
  events (`message_start`, `content_block_start`, one `content_block_delta` per word,
  `content_block_stop`, `message_delta` with usage, `message_stop`) written in 20 paced
  writes, the same text and timing as the OpenAI stream (see `bench/anthropic_fake.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import cast

import orjson

from bench import anthropic_fake

MODEL = "gpt-bench"
CHUNKS = 20
WORDS = [f"w{i} " for i in range(CHUNKS - 1)]
EXPECTED_TEXT = "".join(WORDS)  # what every intact stream's deltas concatenate to
USAGE = {"prompt_tokens": 12, "completion_tokens": CHUNKS - 1, "total_tokens": 12 + CHUNKS - 1}

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_events(include_usage: bool) -> list[bytes]:
    """The stream's events: 20 chunks (role first, finish last), usage if asked, [DONE]."""
    events = [_chunk({"role": "assistant", "content": WORDS[0]}, None)]
    events += [_chunk({"content": w}, None) for w in WORDS[1:]]
    events.append(_chunk({}, "stop"))
    if include_usage:
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [],
            "usage": USAGE,
        }
        events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_STREAM = re.compile(rb'"stream"\s*:\s*true')
_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(COMPLETION)
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_EVENTS = {flag: [_chunked(e) for e in sse_events(flag)] for flag in (False, True)}
_ANTHROPIC_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(anthropic_fake.MESSAGE)
)
_ANTHROPIC_EVENTS = [_chunked(e) for e in anthropic_fake.sse_writes(WORDS, USAGE)]


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies; one request at a time per connection."""

    def __init__(self, chunk_s: float) -> None:
        self.chunk_s = chunk_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        while not self.busy and self.transport is not None:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            end = head_end + 4 + length
            if len(self.buf) < end:
                return
            body = self.buf[head_end + 4 : end]
            anthropic = head.startswith(b"post /v1/messages")
            self.buf = self.buf[end:]
            if _STREAM.search(body):
                self.busy = True
                self.transport.write(_SSE_HEAD)
                if anthropic:  # Anthropic always sends usage (message_start, message_delta)
                    self._send(_ANTHROPIC_EVENTS, 0)
                else:
                    self._send(_EVENTS[bool(_USAGE.search(body))], 0)
            elif anthropic:
                self.transport.write(_ANTHROPIC_JSON_HEAD + anthropic_fake.MESSAGE)
            else:
                self.transport.write(_JSON_HEAD + COMPLETION)

    def _send(self, events: list[bytes], i: int) -> None:
        if self.transport is None:
            return
        if i == len(events) - 1:  # [DONE] goes with the terminating chunk
            self.transport.write(events[i] + b"0\r\n\r\n")
            self.busy = False
            self._next()
            return
        self.transport.write(events[i])
        delay = self.chunk_s if i < CHUNKS - 1 else 0.0  # usage and [DONE] follow the last
        asyncio.get_running_loop().call_later(delay, self._send, events, i + 1)


async def serve(port: int, chunk_s: float) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(chunk_s), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    """`python -m bench.upstream --port P [--chunk-ms MS]`."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunk-ms", type=float, default=5.0)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(args.port, args.chunk_ms / 1000))
    except KeyboardInterrupt:
        pass


def nginx_upstream_conf(workdir: str, port: int) -> str:
    """nginx answering every request with the fixed chat.completion JSON."""
    body = COMPLETION.decode().replace("\\", "\\\\").replace("'", "\\'")
    message = anthropic_fake.MESSAGE.decode().replace("\\", "\\\\").replace("'", "\\'")
    return _nginx_conf(
        workdir,
        f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/messages {{
            default_type application/json;
            return 200 '{message}';
        }}
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}""",
    )


def nginx_hop_conf(workdir: str, port: int, json_port: int, sse_port: int) -> str:
    """nginx as a proxy hop: `/sse/...` to the stream server (unbuffered), the rest to nginx."""
    proxy = 'proxy_http_version 1.1; proxy_set_header Connection "";'
    return _nginx_conf(
        workdir,
        f"""
    upstream json_up {{ server 127.0.0.1:{json_port}; keepalive 256; }}
    upstream sse_up {{ server 127.0.0.1:{sse_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /sse/ {{ proxy_pass http://sse_up/; {proxy} proxy_buffering off; }}
        location / {{ proxy_pass http://json_up; {proxy} }}
    }}""",
    )


def _nginx_conf(workdir: str, servers: str) -> str:
    # One process (no master), so VmHWM and the taskset pin cover the whole server.
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    client_body_buffer_size 64k;
{servers}
}}
"""


if __name__ == "__main__":
    main()
