"""Optional OpenTelemetry traces: one span per request with the GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).

Spans are built from the finished usage records in the background writer, with the
request's own start and end times, so tracing costs the request path nothing. Turned on by
`logging.otel: true`; needs the `otel` extra. A tracer provider already set by the process
(e.g. `opentelemetry-instrument`) is used; otherwise one exporting OTLP/HTTP is created.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sluice.telemetry")

# gen_ai.operation.name for each routed path
_OPERATIONS = (
    ("/embeddings", "embeddings"),
    ("/v1/completions", "text_completion"),
    ("/messages", "chat"),
    ("chat/completions", "chat"),
)


def operation(path: str) -> str:
    """The GenAI operation name for a request path."""
    for suffix, name in _OPERATIONS:
        if path.endswith(suffix):
            return name
    return "chat"


def attributes(row: dict[str, Any]) -> dict[str, Any]:
    """A row's span attributes (GenAI conventions plus HTTP status and request id)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation(row["path"]),
        "gen_ai.usage.input_tokens": row["prompt_tokens"],
        "gen_ai.usage.output_tokens": row["completion_tokens"],
        "http.request.method": row["method"],
        "http.response.status_code": row["status"],
        "sluice.request_id": row["request_id"],
        "sluice.stream": row["stream"],
        "sluice.cache_hit": row["cache_hit"],
        "sluice.attempts": row["attempts"],
    }
    optional = {
        "gen_ai.provider.name": row["provider"],
        "gen_ai.system": row["provider"],  # the older name, still read by most backends
        "gen_ai.request.model": row["model"],
        "gen_ai.response.model": row["upstream_model"],
        "error.type": row["error_code"],
        "sluice.team": row["team"],
        "sluice.cost_usd": row["cost_usd"],
        "sluice.tokens_estimated": row["tokens_estimated"] or None,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


class Tracing:
    """Turns finished records into spans on a tracer."""

    def __init__(self, provider: Any, owned: bool) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._provider = provider
        self._owned = owned  # created here, so shut down here
        self._tracer = provider.get_tracer("sluice")
        self._kind, self._status, self._error = SpanKind.SERVER, Status, StatusCode.ERROR

    @classmethod
    def create(cls, enabled: bool, provider: Any = None) -> Tracing | None:
        """Tracing when enabled and the SDK is installed; None otherwise."""
        if not enabled:
            return None
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            log.warning(
                "logging.otel is on but opentelemetry-sdk is missing: pip install sluice[otel]"
            )
            return None
        if provider is not None:
            return cls(provider, owned=False)
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            return cls(current, owned=False)
        return cls(_otlp_provider(TracerProvider), owned=True)

    def export(self, rows: list[dict[str, Any]]) -> None:
        """One span per (scrubbed) row, timed as the request was."""
        for row in rows:
            start = int(row["ts"] * 1e9)
            op = operation(row["path"])
            name = f"{op} {row['model']}" if row["model"] else op
            span = self._tracer.start_span(
                name, kind=self._kind, start_time=start, attributes=attributes(row)
            )
            if row["status"] >= 400:
                span.set_status(self._status(self._error, row["error_code"]))
            span.end(end_time=start + int(row["latency_ms"] * 1e6))

    def shutdown(self) -> None:
        """Flush spans (at shutdown)."""
        if self._owned:
            self._provider.shutdown()


def _otlp_provider(provider_cls: Any) -> Any:
    """An SDK provider exporting OTLP/HTTP (endpoint from OTEL_EXPORTER_OTLP_ENDPOINT)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = provider_cls(resource=Resource.create({"service.name": "sluice"}))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("no OTLP exporter installed: spans are made but not exported")
        return provider
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
