"""OpenTelemetry spans with the GenAI semantic conventions, read from the SDK's in-memory
exporter while the real app serves requests in-process against the fake upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sluice.app import create_app
from sluice.config import from_mapping
from sluice.telemetry import Tracing
from tests.conftest import openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.usage_helpers import read_rows


def _chat(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def test_spans_follow_the_genai_conventions(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/otel.db"
    conf = openai_config(
        fake_openai,
        storage={"url": url},
        logging={"otel": True, "audit": False, "spool_dir": str(tmp_path / "spool")},
    )
    app = create_app(from_mapping(conf))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.gw.usage.tracing = Tracing.create(True, provider)
    await app.gw.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            ok = await c.post("/v1/chat/completions", json=_chat("gpt-4o-mini"))
            assert ok.status_code == 200
            streamed = await c.post("/v1/chat/completions", json=_chat("gpt-4o-mini", True))
            assert streamed.status_code == 200
            failed = await c.post("/v1/chat/completions", json=_chat("gpt-x-400"))
            assert failed.status_code == 400
    finally:
        await app.gw.shutdown()  # flushes the queue: spans are made from the records
    spans = {s.attributes["sluice.request_id"]: s for s in exporter.get_finished_spans()}
    assert len(spans) == 3
    first = spans[ok.headers["x-request-id"]]
    assert first.name == "chat gpt-4o-mini" and first.kind == SpanKind.SERVER
    a = first.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] == 6
    assert a["http.response.status_code"] == 200
    assert first.end_time > first.start_time
    assert spans[streamed.headers["x-request-id"]].attributes["sluice.stream"] is True
    bad = spans[failed.headers["x-request-id"]]
    assert bad.status.status_code == StatusCode.ERROR
    assert bad.attributes["error.type"] == "EXTERNAL_SERVICE_ERROR"
    rows = await asyncio.to_thread(read_rows, url)
    assert len(rows) == 3  # the in-process app migrated SQLite and stored the rows


def test_tracing_off_by_default() -> None:
    assert Tracing.create(False) is None
