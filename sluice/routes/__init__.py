"""HTTP endpoints grouped by the API they belong to; each module exports ROUTES."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sluice.app import Gateway
    from sluice.asgi import Request

Handler = Callable[["Gateway", "Request"], Awaitable[None]]
Shape = Literal["openai", "anthropic", "proxy", "plain"]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: methods, a path (or prefix), its handler and its error shape."""

    methods: tuple[str, ...]
    path: str
    handler: Handler
    shape: Shape = "openai"
    prefix: bool = False  # `path` is a prefix; the handler reads the rest from req.path
    routed: bool = False  # reaches a provider: upstream-choosing headers are refused
