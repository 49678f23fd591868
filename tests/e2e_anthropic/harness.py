"""Shared facts of the Anthropic end-to-end tests: credentials, tools, audit lookup."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Gateway
from tests.fakes.anthropic_fake import KEY

__all__ = ["A_TIME", "A_WEATHER", "KEY", "OPENAI_KEY", "TIME", "TOKEN", "WEATHER", "last_audit"]

TOKEN = "gw-token-anthropic-e2e"
OPENAI_KEY = "sk-test-upstream-key-0001"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
A_WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
A_TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
}


def last_audit(gw: Gateway, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The audit line of one request (written just after its response, so polled for)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [a for a in gw.audit() if a["request_id"] == request_id]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no audit line for {request_id}")
