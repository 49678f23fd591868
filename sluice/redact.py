"""Scrubbing secrets out of any text that leaves the process (SPEC §5: keys appear nowhere)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# Shapes of provider keys, gateway keys and JWTs, so even a key we were never told about is
# masked when an upstream echoes it back.
_SHAPES = re.compile(
    r"(sk[-_][A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,})"
)
MASK = "[REDACTED]"


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every given secret and every key-shaped token replaced by a mask."""
    for s in secrets:
        if s and len(s) >= 4 and s in text:
            text = text.replace(s, MASK)
    return _SHAPES.sub(MASK, text)


def scrubber(secrets: Iterable[str]) -> Callable[[str], str]:
    """`scrub` with these secrets compiled into one pattern, for loops over many strings."""
    known = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    pattern = re.compile("|".join([*map(re.escape, known), _SHAPES.pattern]))
    return lambda text: pattern.sub(MASK, text)
