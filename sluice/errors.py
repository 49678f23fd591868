"""The gateway's error codes (SPEC §5) and the three wire shapes they are rendered in."""

from __future__ import annotations

from typing import Any

import orjson

# code → HTTP status; EXTERNAL_SERVICE_ERROR takes the upstream's own status.
STATUS: dict[str, int] = {
    "VALIDATION_ERROR": 400,
    "MISSING_API_KEY": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "BUDGET_EXCEEDED": 429,
    "EXTERNAL_SERVICE_ERROR": 502,
    "NETWORK_ERROR": 502,
    "UPSTREAM_TIMEOUT": 504,
    "PROVIDER_UNAVAILABLE": 503,
    "SERVICE_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}

# OpenAI's `type` field for each code, so SDKs raise the matching exception class.
_OPENAI_TYPE: dict[str, str] = {
    "VALIDATION_ERROR": "invalid_request_error",
    "MISSING_API_KEY": "invalid_request_error",
    "UNAUTHORIZED": "authentication_error",
    "FORBIDDEN": "permission_error",
    "NOT_FOUND": "invalid_request_error",
    "MODEL_NOT_FOUND": "invalid_request_error",
    "METHOD_NOT_ALLOWED": "invalid_request_error",
    "PAYLOAD_TOO_LARGE": "invalid_request_error",
    "RATE_LIMITED": "rate_limit_error",
    "BUDGET_EXCEEDED": "rate_limit_error",
}

# Anthropic's error `type` names (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPE: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    """An error the gateway answers with; `code` is one of SPEC §5's codes."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS.get(code, 500)
        self.param = param
        self.headers = headers or {}
        self.attempts = 0  # upstream attempts made before this error (set by sluice.upstream)

    @property
    def retryable(self) -> bool:
        """Whether another attempt (same or next target) may succeed (SPEC §6)."""
        if self.code in ("NETWORK_ERROR", "UPSTREAM_TIMEOUT", "PROVIDER_UNAVAILABLE"):
            return True
        return self.code == "EXTERNAL_SERVICE_ERROR" and (
            self.status in (408, 429) or self.status >= 500
        )


def validation(param: str, message: str) -> GatewayError:
    """A 400 VALIDATION_ERROR naming the offending field."""
    return GatewayError("VALIDATION_ERROR", f"{param}: {message}", param=param)


def openai_body(err: GatewayError) -> bytes:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = _OPENAI_TYPE.get(err.code) or (
        "api_error" if err.status >= 500 else "invalid_request_error"
    )
    return orjson.dumps(
        {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}
    )


def anthropic_body(err: GatewayError) -> bytes:
    """Anthropic's error shape, with our code kept alongside."""
    kind = _ANTHROPIC_TYPE.get(err.status) or (
        "api_error" if err.status >= 500 else "invalid_request_error"
    )
    return orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": err.message, "code": err.code}}
    )


def proxy_body(err: GatewayError, request_id: str) -> bytes:
    """Seed 004's shape: {"success": false, "error": {"code", "message"}, "requestId"}."""
    return orjson.dumps(
        {
            "success": False,
            "error": {"code": err.code, "message": err.message},
            "requestId": request_id,
        }
    )


def sse_error_event(err: GatewayError) -> bytes:
    """The one SSE event that ends a failed stream (SPEC §6): OpenAI's error shape, no [DONE]."""
    return b"data: " + openai_body(err) + b"\n\n"


def describe(value: Any) -> str:
    """A short, key-free description of a JSON value's type for error messages."""
    return type(value).__name__ if value is not None else "null"
