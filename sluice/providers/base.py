"""The adapter protocol: what one provider's wire format must answer. Adapters do no I/O.

An adapter turns a canonical (OpenAI-shaped) request into an `UpstreamCall` and the
upstream's bytes back into canonical bytes plus `Usage`. The HTTP client, retries and the
status → error-code map live in `sluice.upstream`, so translation tests need no network.

Usage::

    adapter = registry.adapter_for(provider_config)
    call = adapter.chat_request(chat, upstream_model="gpt-4o")
    # ... sluice.upstream sends `call` ...
    body, usage = adapter.chat_response(upstream_bytes)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import orjson

from sluice.errors import GatewayError

if TYPE_CHECKING:
    from sluice.config import ProviderConfig
    from sluice.schema import ChatRequest, EmbeddingsRequest


def json_object(data: bytes | str) -> dict[str, Any] | None:
    """`data` parsed as a JSON object, or None when it is not one (bodies read only for usage
    or an error message, where a malformed one just means "nothing to read")."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def require_object(data: bytes, code: str, what: str) -> dict[str, Any]:
    """`data` as a JSON object, or a GatewayError(`code`) saying the upstream sent a malformed
    `what` (a body to translate, or a stream event)."""
    obj = json_object(data)
    if obj is None:
        raise GatewayError(code, f"upstream sent a malformed {what}")
    return obj


class Usage(msgspec.Struct):
    """Token usage of one upstream call; `estimated` when the upstream reported none."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class UpstreamCall:
    """One HTTP request to a provider: the path is joined to the provider's base URL."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None
    stream: bool = False
    query: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamMeter:
    """What a stream translator reports while it runs: read after (or during) the stream."""

    usage: Usage | None = None
    finish_reason: str | None = None
    chunks: int = 0
    completion_chars: int = 0  # for the estimate when the upstream sends no usage
    done: bool = False  # the upstream finished normally and [DONE] was emitted


@dataclass(frozen=True, slots=True)
class EnvProvider:
    """A provider that env-only mode (SPEC §3) creates from variables."""

    name: str
    key_vars: tuple[str, ...]
    base_url_var: str
    base_url: str | None = None
    extra_vars: Mapping[str, str] = field(default_factory=dict)  # config field → variable


class Adapter:
    """Base of every adapter. Subclasses declare their facts as class attributes."""

    kind: ClassVar[str]
    default_base_url: ClassVar[str]
    env_providers: ClassVar[tuple[EnvProvider, ...]] = ()
    default_routes: ClassVar[tuple[tuple[str, str], ...]] = ()  # (glob, provider name)
    embeddings: ClassVar[bool] = False
    completions: ClassVar[bool] = False  # speaks legacy /completions itself (else via chat)
    native_prefix: ClassVar[str | None] = None  # `/{prefix}/...` passes through (SPEC §4)
    # Cloudflare AI Gateway provider slug for each default base URL this kind can use:
    # e.g. https://developers.cloudflare.com/ai-gateway/providers/google-ai-studio/
    ai_gateway_slugs: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")

    @classmethod
    def credentials_complete(cls, config: ProviderConfig) -> bool:
        """Whether the config has everything a call needs beyond the API key."""
        return True

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the provider key."""
        return {"Authorization": f"Bearer {api_key}"}

    def headers(self, api_key: str) -> dict[str, str]:
        """Static config headers plus the key headers and JSON content type."""
        h = {"Content-Type": "application/json", **self.config.headers}
        h.update(self.auth_headers(api_key))
        return h

    # --- chat ---------------------------------------------------------------------------
    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        """Canonical chat → this provider's request (streaming always asks for usage)."""
        raise NotImplementedError

    def chat_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        """This provider's non-streamed answer → OpenAI chat.completion bytes and usage."""
        raise NotImplementedError

    def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        """Upstream stream bytes → OpenAI SSE bytes, as each event arrives.

        Must not emit `data: [DONE]` unless the upstream finished normally; report usage and
        finish reason through `meter`.
        """
        raise NotImplementedError

    # --- embeddings ---------------------------------------------------------------------
    def embeddings_request(
        self, req: EmbeddingsRequest, upstream_model: str, api_key: str
    ) -> UpstreamCall:
        """Canonical embeddings → this provider's request."""
        raise NotImplementedError

    def embeddings_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        """This provider's embeddings answer → OpenAI's list format and usage."""
        raise NotImplementedError

    # --- native pass-through (SPEC §4): the provider's own format, usage still read -------
    def native_usage(self, data: bytes) -> Usage | None:
        """Usage from a non-streamed native response body of this provider."""
        return None

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        """Fold one native stream event's `data:` payload into `acc` (providers report usage
        at different points of a stream)."""

    def native_path(self, rest: str) -> str:
        """A native request's path (after the prefix) → the path under `base_url`.

        Clients write the provider's full path (`/openai/v1/chat/completions`, seed 003) while
        a base URL may already end in it (`.../v1`): the longest such overlap is dropped once.
        """
        base_path = "/" + self.base_url.split("://", 1)[-1].partition("/")[2]
        segments = [s for s in base_path.split("/") if s]
        for i in range(len(segments)):
            tail = "/" + "/".join(segments[i:])
            if rest == tail or rest.startswith(tail + "/"):
                return rest[len(tail) :]
        return rest

    def ai_gateway_path(self, path: str) -> str | None:
        """This call's path under a Cloudflare AI Gateway, or None when it goes direct.

        Only a provider on its default base URL is sent through the gateway: a self-hosted
        or test base URL is not one of the gateway's providers.
        """
        slug = self.ai_gateway_slugs.get(self.base_url)
        return f"/{slug}{path}" if slug else None

    # --- errors -------------------------------------------------------------------------
    def error_message(self, data: bytes) -> str:
        """The human message inside an upstream error body (kept per SPEC §5)."""
        obj = json_object(data)
        if obj is None:
            return data[:300].decode("utf-8", "replace").strip() or "upstream error"
        if obj:
            err = obj.get("error", obj)
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
            if isinstance(err, str):
                return err
            if isinstance(obj.get("message"), str):
                return str(obj["message"])
        return "upstream error"
