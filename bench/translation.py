"""Translation cost of the Anthropic adapter, no network: µs per request, response and chunk.

Run from the repository root: `PYTHONPATH=. .venv/bin/python bench/translation.py`
(targets: ≤ 200 µs a request, ≤ 20 µs a chunk).
Each figure is the best of several rounds, so noise from other processes is left out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson

from sluice.config import ProviderConfig
from sluice.providers import registry
from sluice.providers.anthropic import inbound as am
from sluice.providers.base import StreamMeter
from sluice.schema import parse_chat

FIX = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "anthropic"
ADAPTER = registry.adapter_for(ProviderConfig(kind="anthropic", api_key="sk-ant-bench"))

# A realistic chat: system prompt, a few turns, a tool round trip, two tools offered.
CHAT = orjson.dumps(
    {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 20},
            {"role": "user", "content": "What's the weather in Paris and London?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                    for i in range(2)
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
            {"role": "user", "content": "Which is warmer? Answer in one sentence. " * 5},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": n,
                    "description": "Look something up",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
            for n in ("get_weather", "get_time")
        ],
        "max_tokens": 512,
        "temperature": 0.7,
        "stream": True,
    }
)


def best_us(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Best per-call time in µs over `rounds` rounds of `n` calls."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def stream_bytes(deltas: int) -> bytes:
    """An Anthropic stream: message_start, `deltas` text deltas, two tool blocks, the end."""
    head = (FIX / "stream_text.sse").read_text().split("event: content_block_delta")[0]
    delta = (
        "event: content_block_delta\ndata: "
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" word"}}\n\n'
    )
    tools = (FIX / "stream_parallel_tools.sse").read_text().split("event: content_block_stop")
    tail = "event: content_block_stop" + "event: content_block_stop".join(tools[1:])
    return (head + delta * deltas + tail).encode()


async def _drain(data: bytes, chat_raw: bytes) -> int:
    chat = parse_chat(chat_raw)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1400):  # about one TCP segment a read
            yield data[i : i + 1400]

    meter = StreamMeter()
    async for _ in ADAPTER.chat_stream(chunks(), chat, "claude", meter):
        pass
    assert meter.done
    return meter.chunks


def per_chunk_us(deltas: int = 2000, rounds: int = 5) -> tuple[float, int]:
    data = stream_bytes(deltas)
    best, events = float("inf"), 0
    for _ in range(rounds):
        t = time.perf_counter()
        events = asyncio.run(_drain(data, CHAT))
        best = min(best, (time.perf_counter() - t) / events)
    return best * 1e6, events


def main() -> None:
    chat = parse_chat(CHAT)
    response = (FIX / "messages_to_chat.json").read_bytes()
    answer = orjson.dumps(orjson.loads(response)[1]["anthropic"])
    inbound = orjson.dumps(
        orjson.loads((FIX / "inbound_requests.json").read_bytes())[4]["anthropic"]
    )
    rows = [
        (
            "request: parse + translate (OpenAI in → Messages)",
            best_us(lambda: ADAPTER.chat_request(parse_chat(CHAT), "claude-sonnet-4-5", "k"), 2000),
        ),
        (
            "request: translate only",
            best_us(lambda: ADAPTER.chat_request(chat, "claude-sonnet-4-5", "k"), 2000),
        ),
        (
            "response: Messages → chat.completion",
            best_us(lambda: ADAPTER.chat_response(answer, "claude"), 5000),
        ),
        ("request: /v1/messages parse + translate", best_us(lambda: am.parse(inbound), 2000)),
    ]
    us, events = per_chunk_us()
    rows.append((f"stream: per Anthropic event ({events} events)", us))
    for name, value in rows:
        print(f"{name:<55} {value:8.2f} µs")


if __name__ == "__main__":
    main()
