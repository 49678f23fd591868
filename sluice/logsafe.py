"""Redaction enforced at the logger: no code path can write a key through `logging`.

`install()` wraps the process's LogRecord factory, so every record of every logger (ours,
uvicorn's, a library's) has its message, arguments and traceback scrubbed when it is made,
before any handler or formatter sees it. The audit writer scrubs its lines on its own too.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from sluice.config import Settings
from sluice.redact import scrub, scrubber

_state: dict[str, Any] = {"secrets": (), "base": None}


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every configured secret: provider keys, gateway tokens, the admin key, DB passwords."""
    found: list[str | None] = [p.api_key for p in settings.providers.values()]
    found += list(settings.auth.tokens)
    found += [settings.auth.admin_key, settings.registration_token]
    if settings.ai_gateway is not None:
        found.append(settings.ai_gateway.token)
    for url in (settings.storage.url, settings.redis.url):
        found.append(_password(url))
    return tuple(s for s in found if s and len(s) >= 4)


def _password(url: str | None) -> str | None:
    if not url or "://" not in url or "@" not in url:
        return None
    creds = url.split("://", 1)[1].rsplit("@", 1)[0]
    return creds.split(":", 1)[1] if ":" in creds else None


def cleaner(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that scrubs one string of these secrets and of key-shaped tokens."""
    return scrubber(secrets)


def install(secrets: Iterable[str]) -> None:
    """Scrub every future log record of the process (idempotent; secrets are merged)."""
    _state["secrets"] = tuple(dict.fromkeys((*_state["secrets"], *secrets)))
    if _state["base"] is not None:
        return
    base = logging.getLogRecordFactory()
    _state["base"] = base

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        _scrub_record(record, _state["secrets"])
        return record

    logging.setLogRecordFactory(factory)


def _scrub_record(record: logging.LogRecord, secrets: tuple[str, ...]) -> None:
    """Render the message now and keep only its scrubbed text (args could carry a key)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not hide the record
        message = f"{record.msg!r} {record.args!r}"
    record.msg, record.args = scrub(message, secrets), None
    if record.exc_info:
        text = "".join(traceback.format_exception(*record.exc_info))
        record.exc_text, record.exc_info = scrub(text.rstrip("\n"), secrets), None
    if record.stack_info:
        record.stack_info = scrub(record.stack_info, secrets)
