"""The usage record every request produces, and where it goes.

The pipeline fills one `UsageRecord` per request and hands it to `UsageSink.record()` in a
`finally`, so failures, rejections and client disconnects are recorded too (requests refused
before the pipeline are recorded by the dispatcher). `record()` only queues; the writer in
`usage_store` writes the audit line (seeds 000, 004), metrics, spans and the storage row.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from sluice.config import Price, Settings
from sluice.providers.base import Usage

if TYPE_CHECKING:
    from sluice.auth import Principal


@dataclass(slots=True)
class UsageRecord:
    """One request's accounting (keys never appear here: only key ids)."""

    ts: float
    request_id: str
    method: str
    path: str
    status: int = 200
    error_code: str | None = None
    model: str | None = None  # as requested
    upstream_model: str | None = None
    provider: str | None = None
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    session: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float | None = None
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    overhead_ms: float | None = None
    cache_hit: bool = False
    attempts: int = 0
    stream: bool = False
    content: bytes | None = None  # the request body, kept only with logging.store_content

    def set_caller(self, principal: Principal) -> None:
        """Who made the request: team, key id (never the key), user, session."""
        self.team, self.key_id = principal.team, principal.key_id
        self.user, self.session = principal.user, principal.session

    def set_usage(self, usage: Usage, price: Price | None) -> None:
        """Tokens and cost; cost stays None when the price is unknown (never $0)."""
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens
        self.cached_tokens = usage.cached_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        self.tokens_estimated = usage.estimated
        self.cost_usd = cost(usage, price)

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (for logs and storage)."""
        return asdict(self)


def cost(usage: Usage, price: Price | None) -> float | None:
    """USD for `usage` at `price`; None when the price is unknown."""
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_rate = price.cached_input_per_mtok
    if cached_rate is None:
        cached_rate = price.input_per_mtok
    fresh = usage.prompt_tokens - cached
    return (
        fresh * price.input_per_mtok
        + cached * cached_rate
        + usage.completion_tokens * price.output_per_mtok
    ) / 1_000_000


def new_record(request_id: str, method: str, path: str) -> UsageRecord:
    """A record for a request that just arrived."""
    return UsageRecord(ts=time.time(), request_id=request_id, method=method, path=path)


def failed_record(request_id: str, method: str, path: str, status: int, code: str) -> UsageRecord:
    """A record for a routed request refused before the pipeline took it (e.g. a bad body)."""
    rec = new_record(request_id, method, path)
    rec.status, rec.error_code = status, code
    return rec


_AUDIT_HEAD = b'{"type":"audit",'


class UsageSink:
    """Receives finished records: the hot path only queues them (see `usage_store`)."""

    def __init__(self, settings: Settings) -> None:
        from sluice import logsafe
        from sluice.metrics import Metrics
        from sluice.spool import Spool
        from sluice.telemetry import Tracing
        from sluice.usage_store import UsageWriter

        conf = settings.logging
        self.audit = conf.audit
        self.store_content = conf.store_content
        self.metrics = Metrics()
        self.metrics.set_available({n: p.configured for n, p in settings.providers.items()})
        self.tracing = Tracing.create(conf.otel)
        clean = self._clean = logsafe.cleaner(logsafe.secrets_of(settings))
        self.writer = UsageWriter(
            settings.storage.url,
            Spool(spool_dir(settings)),
            self._observe,
            clean,
            max_queue=conf.queue_size,
            batch_max=conf.batch_size,
            linger_s=conf.batch_linger_s,
            retention_days=conf.retention_days,
        )
        self.writer.audit_out = _stdout_writer()
        self.writer.on_count = self._count

    def record(self, rec: UsageRecord) -> None:
        """Account one finished request: a deque append, never I/O, never raises."""
        self.writer.put(rec)

    @property
    def recorded(self) -> int:
        """Records accepted since start."""
        return self.writer.queued

    def _observe(self, batch: list[UsageRecord] | None, rows: list[dict[str, Any]]) -> bytes:
        """Metrics and traces for a batch (off the hot path); returns its audit lines."""
        self.metrics.usage_queued.inc(len(rows))
        self.metrics.observe_batch(rows)  # rows are scrubbed: a key sent as a model name stays out
        if self.tracing is not None:
            self.tracing.export(rows)
        if not self.audit:
            return b""
        if not self.store_content:
            # {"type": "audit", ...row}: the row's own JSON with the type spliced in front.
            return b"".join([_AUDIT_HEAD + orjson.dumps(row)[1:] + b"\n" for row in rows])
        lines = []
        for i, row in enumerate(rows):
            line = {"type": "audit", **row}
            content = batch[i].content if batch is not None else None  # spilled: not kept
            if content is not None:
                line["content"] = {"request": self._clean(_text(content))}
            lines.append(orjson.dumps(line) + b"\n")
        return b"".join(lines)

    def _count(self, kind: str, n: int) -> None:
        counter = {
            "written": self.metrics.usage_written,
            "spooled": self.metrics.usage_spooled,
            "dropped": self.metrics.usage_dropped,
        }.get(kind)
        if counter is not None:
            counter.inc(n)

    async def start(self) -> None:
        """Start the background writer."""
        await self.writer.start()

    async def close(self) -> None:
        """Flush whatever is pending (at shutdown)."""
        await self.writer.close()
        if self.tracing is not None:
            self.tracing.shutdown()


def _text(body: bytes, limit: int = 64 * 1024) -> str:
    """A request body as text for the audit line, cut at `limit` bytes."""
    text = body[:limit].decode("utf-8", "replace")
    return text + "…[truncated]" if len(body) > limit else text


def spool_dir(settings: Settings) -> str:
    """`logging.spool_dir`, else `sluice-spool` beside the SQLite file, else ./sluice-spool."""
    if settings.logging.spool_dir:
        return settings.logging.spool_dir
    url = settings.storage.url
    if url.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(url.removeprefix("sqlite:///")) or ".", "sluice-spool")
    return "sluice-spool"


def _stdout_writer() -> Callable[[bytes], None]:
    """Writes audit lines straight to fd 1. On a pipe, in whole-line chunks of at most
    PIPE_BUF bytes: with `--workers N` every worker shares stdout, and only writes that small
    are atomic on a pipe, so lines from two workers never interleave. On a regular file a
    write() is atomic as a whole (one offset shared by the workers), so a batch is one
    write: syscalls are the dear part here."""
    try:
        fd = sys.stdout.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (AttributeError, OSError, ValueError):
        return lambda data: None

    def write(data: bytes) -> None:
        try:
            for chunk in [data] if regular else _line_chunks(data, select.PIPE_BUF):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError:
            pass  # stdout closed: the rows still reach storage

    return write


def _line_chunks(data: bytes, size: int) -> list[bytes]:
    """`data` cut at line ends into pieces of at most `size` bytes (a longer line alone)."""
    chunks: list[bytes] = []
    start = 0
    while start < len(data):
        end = start + size
        if end >= len(data):
            chunks.append(data[start:])
            break
        cut = data.rfind(b"\n", start, end)
        cut = cut + 1 if cut >= start else data.find(b"\n", end) + 1 or len(data)
        chunks.append(data[start:cut])
        start = cut
    return chunks
