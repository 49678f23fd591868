"""The response cache (SPEC §2, §7): exact match per tenant, streams included.

The key is a SHA-256 of the tenant (team, else key id, else user, else one shared bucket
for open access), the endpoint, the routed model and the body minus its stream flags, so a
streamed and a plain request for the same thing share one entry. Chat answers are stored in
their non-streamed form; a streamed miss is assembled from the chunks the client received
and stored only when the stream finished normally. A hit replays the stored answer, as a
complete SSE stream ending with [DONE] when the client asked for a stream. Errors and
truncated streams are never stored.

Request controls: `Cache-Control: no-cache` skips the lookup, `no-store` also skips
storing; `X-Sluice-Cache-TTL: S` stores with a TTL shorter than the configured one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from sluice import sse
from sluice.asgi import SSE_HEADERS
from sluice.errors import validation
from sluice.providers.base import Usage
from sluice.state import MemoryState, State

if TYPE_CHECKING:
    from sluice.asgi import Request
    from sluice.auth import Principal
    from sluice.config import CacheConfig
    from sluice.pipeline import Operation
    from sluice.providers.base import StreamMeter
    from sluice.routing import Plan
    from sluice.usage import UsageRecord

_STREAM_FLAGS = ("stream", "stream_options", "model")
_PIECE = 48  # characters of content per replayed chunk
_MISS = (b"x-sluice-cache", b"MISS")


@dataclass(slots=True)
class Entry:
    """A stored answer: who served it, its usage, its non-streamed body."""

    provider: str
    prompt_tokens: int
    completion_tokens: int
    body: bytes

    def dump(self) -> bytes:
        """The blob stored in the state backend."""
        meta = orjson.dumps([self.provider, self.prompt_tokens, self.completion_tokens])
        return meta + b"\n" + self.body

    @staticmethod
    def load(blob: bytes) -> Entry | None:
        """An entry from its blob (None when unreadable)."""
        meta, _, body = blob.partition(b"\n")
        try:
            provider, prompt, completion = orjson.loads(meta)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        return Entry(str(provider), int(prompt), int(completion), body)


@dataclass(slots=True)
class StreamCollector:
    """Assembles a chat stream's chunks, as sent to the client, into one chat.completion."""

    head: dict[str, Any] = field(default_factory=dict)
    choices: dict[int, dict[str, Any]] = field(default_factory=dict)
    broken: bool = False

    def feed(self, piece: bytes) -> None:
        """Fold one written piece (whole SSE blocks) into the answer."""
        for block in piece.split(b"\n\n"):
            ev = sse.parse_block(block) if block else None
            if ev is None or ev.data == b"[DONE]":
                continue
            try:
                obj = orjson.loads(ev.data)
            except orjson.JSONDecodeError:
                self.broken = True
                continue
            if not isinstance(obj, dict) or "error" in obj:
                self.broken = True
                continue
            if not self.head:
                keys = ("id", "created", "model", "system_fingerprint")
                self.head = {k: obj[k] for k in keys if k in obj}
            for ch in obj.get("choices") or ():
                self._choice(ch)

    def _choice(self, ch: dict[str, Any]) -> None:
        slot = self.choices.setdefault(
            int(ch.get("index", 0)), {"role": "assistant", "content": [], "tools": {}}
        )
        delta = ch.get("delta") or {}
        if delta.get("role"):
            slot["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            slot["content"].append(delta["content"])
        for tc in delta.get("tool_calls") or ():
            t = slot["tools"].setdefault(
                tc.get("index", 0), {"id": None, "type": "function", "name": "", "args": []}
            )
            fn = tc.get("function") or {}
            t["id"] = tc.get("id") or t["id"]
            t["name"] += fn.get("name") or ""
            t["args"].append(fn.get("arguments") or "")
        if ch.get("finish_reason"):
            slot["finish_reason"] = ch["finish_reason"]

    def completion(self, usage: Usage | None) -> bytes:
        """The assembled non-streamed chat.completion."""
        choices = []
        for index, c in sorted(self.choices.items()):
            message: dict[str, Any] = {"role": c["role"], "content": "".join(c["content"])}
            if c["tools"]:
                message["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": t["type"],
                        "function": {"name": t["name"], "arguments": "".join(t["args"])},
                    }
                    for _, t in sorted(c["tools"].items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": c.get("finish_reason"),
                }
            )
        obj = {**self.head, "object": "chat.completion", "choices": choices}
        if usage is not None:
            obj["usage"] = _usage_json(usage.prompt_tokens, usage.completion_tokens)
        return orjson.dumps(obj)


def _usage_json(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def replay_stream(entry: Entry, wants_usage: bool) -> bytes:
    """A stored chat.completion as a complete OpenAI SSE stream ending with [DONE]."""
    obj = orjson.loads(entry.body)
    base = {
        "id": obj.get("id", "chatcmpl-cached"),
        "object": "chat.completion.chunk",
        "created": obj.get("created", int(time.time())),
        "model": obj.get("model", ""),
    }
    out: list[bytes] = []
    for ch in obj.get("choices") or ():
        i, msg = ch.get("index", 0), ch.get("message") or {}
        deltas: list[dict[str, Any]] = [{"role": msg.get("role", "assistant"), "content": ""}]
        text = msg.get("content") or ""
        deltas += [{"content": text[k : k + _PIECE]} for k in range(0, len(text), _PIECE)]
        for n, tc in enumerate(msg.get("tool_calls") or ()):
            deltas.append({"tool_calls": [{"index": n, **tc}]})
        for d in deltas:
            out.append(sse.encode({**base, "choices": [_delta(i, d, None)]}))
        out.append(sse.encode({**base, "choices": [_delta(i, {}, ch.get("finish_reason"))]}))
    if wants_usage:
        usage = _usage_json(entry.prompt_tokens, entry.completion_tokens)
        out.append(sse.encode({**base, "choices": [], "usage": usage}))
    out.append(sse.DONE)
    return b"".join(out)


def _delta(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


@dataclass(slots=True)
class CacheSlot:
    """One cacheable request: its key, TTL, whether to store, and the hit if any."""

    key: str
    ttl_s: float
    store: bool
    hit: Entry | None = None
    collector: StreamCollector | None = None
    fetch: asyncio.Future[bytes | None] | None = None  # the stored answer, on its way
    blob: bytes | None = None  # the stored answer, when the backend had it at once


def tenant(principal: Principal) -> str:
    """Whose cache partition a request uses (SPEC §6 isolation)."""
    if principal.team:
        return "t:" + principal.team
    if principal.key_id:
        return "k:" + principal.key_id
    if principal.user:
        return "u:" + principal.user
    return "open"


class ResponseCache:
    """Looks up, replays and stores answers in the gateway's state backend."""

    def __init__(self, config: CacheConfig, state: State) -> None:
        self.enabled = config.enabled
        self.ttl_s = config.ttl_s
        self.state = state
        self.hits = 0
        self.misses = 0
        # In-process blobs are read at once, without a future to await.
        self._blob_now = state.get_blob_now if isinstance(state, MemoryState) else None

    def open_slot(
        self, req: Request, principal: Principal, plan: Plan, op: Operation
    ) -> CacheSlot | None:
        """The request's slot (None: not cacheable), its stored answer already asked for:
        with Redis the GET leaves with the request's reservation, one round trip for both."""
        # Only OpenAI-shaped answers are stored (chat and embeddings operations set `body`);
        # routes with their own wire format (a `relay`, e.g. /v1/messages) are not cached.
        body = op.body
        if not self.enabled or body is None or op.relay is not None:
            return None
        if op.chat is not None and op.chat.legacy:
            return None
        headers = req.headers
        control = headers.get("cache-control")
        lookup = store = True
        if control is not None:
            control = control.lower()
            store = "no-store" not in control
            lookup = store and "no-cache" not in control
            if not store:  # neither looked up nor stored: no key to compute
                self.misses += 1
                req.response_headers.append(_MISS)
                return None
        normal = orjson.dumps(
            {k: v for k, v in body.items() if k not in _STREAM_FLAGS}, option=orjson.OPT_SORT_KEYS
        )
        kind = "chat" if op.chat is not None else "emb"
        digest = hashlib.sha256(
            f"{tenant(principal)}\0{kind}\0{plan.model}\0".encode() + normal
        ).hexdigest()
        raw_ttl = headers.get("x-sluice-cache-ttl")
        ttl = self.ttl_s if raw_ttl is None else self._ttl(raw_ttl)
        slot = CacheSlot("cache:" + digest, ttl, store)
        if op.stream and store:
            slot.collector = StreamCollector()
        if lookup:
            if self._blob_now is not None:
                slot.blob = self._blob_now(slot.key)
            else:
                slot.fetch = self.state.get_blob_soon(slot.key)
        return slot

    async def lookup(self, req: Request, slot: CacheSlot) -> Entry | None:
        """The slot's stored answer, if any; sets X-Sluice-Cache: MISS when there is none."""
        blob = await slot.fetch if slot.fetch is not None else slot.blob
        if blob is not None:
            slot.hit = Entry.load(blob)
        if slot.hit is None:
            self.misses += 1
            req.response_headers.append(_MISS)
        return slot.hit

    def _ttl(self, raw: str) -> float:
        """The TTL an X-Sluice-Cache-TTL header asks for (never past the configured one)."""
        try:
            ttl = float(raw)
        except ValueError:
            ttl = -1.0
        if not ttl > 0:
            raise validation("X-Sluice-Cache-TTL", "must be a positive number of seconds")
        return min(ttl, self.ttl_s)

    async def replay(self, req: Request, slot: CacheSlot, op: Operation, rec: UsageRecord) -> None:
        """Answer from the cache: the stored body, or a complete SSE stream."""
        entry = slot.hit
        assert entry is not None
        self.hits += 1
        rec.cache_hit, rec.provider = True, entry.provider
        rec.set_usage(Usage(entry.prompt_tokens, entry.completion_tokens), None)
        rec.cost_usd = 0.0  # nothing was spent upstream; cache_hit says why
        req.add_header("x-sluice-cache", "HIT")
        req.add_header("x-sluice-provider", entry.provider)
        rec.overhead_ms = rec.ttfb_ms = (time.perf_counter() - req.started) * 1000
        req.add_header("x-sluice-overhead-ms", f"{rec.overhead_ms:.3f}")
        if op.stream and op.chat is not None:
            await req.start_stream(200, SSE_HEADERS)
            await req.end(replay_stream(entry, op.chat.client_wants_usage))
        else:
            await req.respond(200, entry.body)

    def store_answer(
        self, slot: CacheSlot, provider: str, body: bytes, usage: Usage | None
    ) -> None:
        """Store a successful non-streamed answer (sent now, not waited for)."""
        if slot.store:
            u = usage or Usage()
            entry = Entry(provider, u.prompt_tokens, u.completion_tokens, body)
            self.state.set_blob(slot.key, entry.dump(), slot.ttl_s)

    def store_stream(self, slot: CacheSlot, provider: str, meter: StreamMeter) -> None:
        """Store a stream that finished normally, in its non-streamed form."""
        c = slot.collector
        if c is None or c.broken or not meter.done or not c.choices:
            return
        u = meter.usage or Usage()
        entry = Entry(provider, u.prompt_tokens, u.completion_tokens, c.completion(meter.usage))
        self.state.set_blob(slot.key, entry.dump(), slot.ttl_s)
