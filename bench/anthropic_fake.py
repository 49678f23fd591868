"""What the fake Anthropic Messages upstream answers (served by `bench/upstream.py` and nginx).

Shapes from https://docs.anthropic.com/en/api/messages and .../messages-streaming: a
non-streamed `message` object, and a stream of named events — `message_start` (input
usage), `content_block_start`, one `content_block_delta` (`text_delta`) per word,
`content_block_stop`, `message_delta` (stop reason + output usage), `message_stop`.
The stream is grouped into as many writes as the OpenAI stream has chunks, so both take
the same time and the translated text is the one the stream client checks.
"""

from __future__ import annotations

from typing import Any

import orjson

MODEL = "claude-bench"

MESSAGE = orjson.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello from the bench upstream."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _delta(text: str) -> bytes:
    return _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


def sse_writes(words: list[str], usage: dict[str, int]) -> list[bytes]:
    """`len(words) + 1` writes: the head with the first word, one word each, then the end."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    head = _event("message_start", start) + _event("content_block_start", block) + _delta(words[0])
    end = (
        _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage["completion_tokens"]},
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
    return [head, *(_delta(w) for w in words[1:]), end]
