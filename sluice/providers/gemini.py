"""Kind `gemini`: Google's Gemini API (AI Studio), generateContent and streamGenerateContent.

Wire format: https://ai.google.dev/api/generate-content . The key rides in `x-goog-api-key`
(https://ai.google.dev/gemini-api/docs/api-key). A stream is SSE only with `?alt=sse`; it has
no `[DONE]`: the last event carries `finishReason` and the connection closes.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice import sse
from sluice.providers import canonical as c
from sluice.providers.base import (
    Adapter,
    EnvProvider,
    StreamMeter,
    UpstreamCall,
    Usage,
    json_object,
)
from sluice.schema import ChatRequest, EmbeddingsRequest

# https://ai.google.dev/api/generate-content#FinishReason
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# https://ai.google.dev/api/caching#FunctionCallingConfig
_TOOL_MODE = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def _part(p: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI content part → a Gemini Part (inline data for data URLs, else fileData)."""
    if p.get("type") == "image_url":
        url = str((p.get("image_url") or {}).get("url", ""))
        inline = c.data_url(url)
        if inline:
            return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
        mime = mimetypes.guess_type(url.split("?")[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    return {"text": str(p.get("text", ""))}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [_part(p) for p in content if isinstance(p, dict)]
    return [{"text": content}] if content else []


def _tool_result(m: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A tool message → functionResponse; its `response` must be an object."""
    text = c.text_of(m.get("content"))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    response = value if isinstance(value, dict) else {"result": value}
    name = names.get(str(m.get("tool_call_id")), "") or str(m.get("name") or "")
    return {"functionResponse": {"name": name, "response": response}}


def contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI turns → Gemini contents; consecutive tool results share one user turn."""
    names = c.tool_names(messages)
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("tool", "function"):
            part = _tool_result(m, names)
            if out and out[-1]["role"] == "user" and "functionResponse" in out[-1]["parts"][0]:
                out[-1]["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
            continue
        parts = _parts(m.get("content"))
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            args = orjson.loads(fn.get("arguments") or "{}")
            parts.append({"functionCall": {"name": fn.get("name"), "args": args}})
        out.append({"role": "model" if role == "assistant" else "user", "parts": parts})
    return out


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    """tools / tool_choice → Gemini's functionDeclarations and toolConfig."""
    out: dict[str, Any] = {}
    decls = [
        {
            k: v
            for k, v in (t.get("function") or {}).items()
            if k in ("name", "description", "parameters")
        }
        for t in body.get("tools") or ()
        if t.get("type") == "function"
    ]
    if decls:
        out["tools"] = [{"functionDeclarations": decls}]
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice in _TOOL_MODE:
        out["toolConfig"] = {"functionCallingConfig": {"mode": _TOOL_MODE[choice]}}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        config = {"mode": "ANY", "allowedFunctionNames": [name]}
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    """Sampling and output options → generationConfig (JSON mode via responseMimeType)."""
    cfg: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
    ):
        if body.get(ours) is not None:
            cfg[theirs] = body[ours]
    if c.max_tokens(body):
        cfg["maxOutputTokens"] = c.max_tokens(body)
    if c.stop_list(body):
        cfg["stopSequences"] = c.stop_list(body)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        cfg["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            cfg["responseJsonSchema"] = schema
    return cfg


def request_body(chat: ChatRequest) -> dict[str, Any]:
    """Canonical chat → a GenerateContentRequest."""
    system, rest = c.split_system(c.messages_of(chat))
    out: dict[str, Any] = {"contents": contents(rest)}
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    out.update(_tools(chat.body))
    cfg = _generation_config(chat.body)
    if cfg:
        out["generationConfig"] = cfg
    return out


def usage_of(meta: Any) -> Usage | None:
    """usageMetadata → Usage (thoughts are reasoning tokens, and are billed as output)."""
    if not isinstance(meta, dict):
        return None
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return Usage(
        prompt_tokens=int(meta.get("promptTokenCount") or 0),
        completion_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _candidate(cand: dict[str, Any], first_call: int) -> tuple[str, list[dict[str, Any]]]:
    """A candidate's visible text and its function calls (thought parts are skipped)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for p in (cand.get("content") or {}).get("parts") or ():
        if p.get("thought"):
            continue
        if "text" in p:
            text.append(str(p["text"]))
        elif "functionCall" in p:
            fc = p["functionCall"]
            call_id = fc.get("id") or f"call_{first_call + len(calls)}"
            calls.append(c.tool_call(call_id, fc.get("name", ""), fc.get("args")))
    return "".join(text), calls


def finish_of(cand: dict[str, Any], has_calls: bool) -> str | None:
    """Gemini's finishReason → OpenAI's (a function call ends with STOP in Gemini)."""
    reason = cand.get("finishReason")
    if reason is None:
        return None
    return "tool_calls" if has_calls else _FINISH.get(reason, "stop")


class GeminiAdapter(Adapter):
    kind = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    env_providers = (
        EnvProvider("gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL"),
    )
    default_routes = (("*gemini*", "gemini"),)
    embeddings = True
    native_prefix = "gemini"
    ai_gateway_slugs = {"https://generativelanguage.googleapis.com": "google-ai-studio"}

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        body = orjson.dumps(request_body(chat))
        if chat.stream:
            path = f"/v1beta/models/{upstream_model}:streamGenerateContent"
            return UpstreamCall("POST", path, self.headers(api_key), body, True, {"alt": "sse"})
        path = f"/v1beta/models/{upstream_model}:generateContent"
        return UpstreamCall("POST", path, self.headers(api_key), body)

    def chat_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        obj = c.loads(data)
        choices = []
        for cand in obj.get("candidates") or ():
            text, calls = _candidate(cand, 0)
            choices.append((c.assistant(text, calls), finish_of(cand, bool(calls)) or "stop"))
        usage = usage_of(obj.get("usageMetadata"))
        return c.completion(model, choices, usage, obj.get("responseId")), usage

    async def chat_stream(
        self, chunks: AsyncIterator[bytes], chat: ChatRequest, model: str, meter: StreamMeter
    ) -> AsyncIterator[bytes]:
        out = c.Chunks(chat, model)
        wanted = int(chat.body.get("n") or 1)  # candidateCount: one choice per candidate
        calls: dict[int, int] = {}  # choice index → tool calls emitted so far
        finished: set[int] = set()
        async for ev in sse.events(chunks):
            obj = orjson.loads(ev.data)
            meter.chunks += 1
            meter.usage = usage_of(obj.get("usageMetadata")) or meter.usage
            piece = b""
            for cand in obj.get("candidates") or ():
                i = int(cand.get("index") or 0)
                if i not in calls:
                    calls[i] = 0
                    piece += out.delta({"role": "assistant", "content": ""}, index=i)
                text, new_calls = _candidate(cand, calls[i])
                if text:
                    meter.completion_chars += len(text)
                    piece += out.delta({"content": text}, index=i)
                for call in new_calls:
                    fn = call["function"]
                    piece += out.tool_delta(calls[i], call["id"], fn["name"], fn["arguments"], i)
                    calls[i] += 1
                reason = finish_of(cand, calls[i] > 0)
                if reason:
                    meter.finish_reason = reason
                    finished.add(i)
                    piece += out.delta({}, reason, index=i)
            if piece:
                yield piece
        if len(finished) >= wanted:  # the stream has no [DONE]: every candidate finished
            meter.done = True
            yield out.end(meter.usage)

    def embeddings_request(
        self, req: EmbeddingsRequest, upstream_model: str, api_key: str
    ) -> UpstreamCall:
        # https://ai.google.dev/api/embeddings#method:-models.batchembedcontents
        item: dict[str, Any] = {"model": f"models/{upstream_model}"}
        if req.body.get("dimensions"):
            item["outputDimensionality"] = req.body["dimensions"]
        requests = [
            {**item, "content": {"parts": [{"text": t}]}} for t in c.text_inputs(req.inputs)
        ]
        path = f"/v1beta/models/{upstream_model}:batchEmbedContents"
        return UpstreamCall(
            "POST", path, self.headers(api_key), orjson.dumps({"requests": requests})
        )

    def embeddings_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        obj = c.loads(data)
        vectors = [e.get("values") or [] for e in obj.get("embeddings") or ()]
        return c.embeddings(vectors, model, None), None  # Gemini reports no embedding usage

    def native_usage(self, data: bytes) -> Usage | None:
        obj = json_object(data)
        return usage_of(obj.get("usageMetadata")) if obj is not None else None

    def native_stream_usage(self, data: bytes, acc: Usage) -> None:
        # Each streamed chunk repeats the running usageMetadata; the last one is the total.
        usage = self.native_usage(data)
        if usage is not None:
            for f in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
                setattr(acc, f, getattr(usage, f))


ADAPTER = GeminiAdapter
