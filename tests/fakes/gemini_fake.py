"""A fake Gemini API (AI Studio): generateContent, streamGenerateContent?alt=sse, embeddings.

Shapes from https://ai.google.dev/api/generate-content and https://ai.google.dev/api/embeddings;
errors as https://ai.google.dev/gemini-api/docs/troubleshooting shows them. Behaviour:
- declared functions and a user turn last → two parallel functionCall parts;
- `responseMimeType: application/json` → a JSON text answer;
- a model ending in `-thinking` reports thoughtsTokenCount; `-400` answers 400;
  `-slow` streams forty events 0.1 s apart (for client-disconnect tests).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeServer, texts, words

ANSWER = "Hello from the fake gemini."
KEY_ERROR = "API key not valid. Please pass a valid API key."


def _error(status: int, message: str, kind: str) -> web.Response:
    return FakeServer.json({"error": {"code": status, "message": message, "status": kind}}, status)


class FakeGemini(FakeServer):
    """`.url` is the base URL (what google-genai calls base_url)."""

    @property
    def url(self) -> str:
        return self.origin

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{call}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if not request.headers.get("x-goog-api-key"):
            return _error(403, KEY_ERROR, "PERMISSION_DENIED")
        model, _, method = request.match_info["call"].partition(":")
        if model.endswith("-400"):
            return _error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        if method == "generateContent":
            return self.json(self._answer(model, body))
        if method == "streamGenerateContent":
            return await self._stream(request, model, body)
        if method == "batchEmbedContents":
            vectors = [self._vector(r) for r in body.get("requests") or ()]
            return self.json({"embeddings": [{"values": v} for v in vectors]})
        if method == "embedContent":
            return self.json({"embedding": {"values": self._vector(body)}})
        return _error(404, f"method {method} not found", "NOT_FOUND")

    @staticmethod
    def _vector(req: dict[str, Any]) -> list[float]:
        n = words(texts(req.get("content")))
        dims = int(req.get("outputDimensionality") or 4)
        return [round(0.1 * (i + 1) + n, 3) for i in range(dims)]

    @staticmethod
    def _usage(model: str, body: dict[str, Any], completion: int) -> dict[str, Any]:
        prompt = words(texts(body.get("contents"))) + words(texts(body.get("systemInstruction")))
        thoughts = 7 if model.endswith("-thinking") else 0
        out = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion + thoughts,
            "cachedContentTokenCount": 2,
        }
        if thoughts:
            out["thoughtsTokenCount"] = thoughts
        return out

    @staticmethod
    def _parts(body: dict[str, Any]) -> list[dict[str, Any]]:
        """What the model 'says': function calls, JSON, or the canned text."""
        decls = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        last = (body.get("contents") or [{}])[-1]
        answered = any("functionResponse" in p for p in last.get("parts") or ())
        if decls and not answered:
            name = decls[0]["name"]
            return [
                {"functionCall": {"name": name, "args": {"city": "Paris"}}},
                {"functionCall": {"name": name, "args": {"city": "Tokyo"}}},
            ]
        config = body.get("generationConfig") or {}
        if config.get("responseMimeType") == "application/json":
            return [{"text": '{"answer": 42}'}]
        return [{"text": ANSWER}]

    def _answer(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = self._parts(body)
        n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        completion = sum(words(p.get("text", "x")) for p in parts)
        return {
            "candidates": [
                {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": i}
                for i in range(n)
            ],
            "usageMetadata": self._usage(model, body, completion * n),
            "modelVersion": model,
            "responseId": "fake-gemini-response",
        }

    async def _stream(
        self, request: web.Request, model: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        if request.query.get("alt") != "sse":
            return _error(400, "this fake only streams with alt=sse", "INVALID_ARGUMENT")
        parts = self._parts(body)
        slow = model.endswith("-slow")
        if "text" in parts[0]:
            pieces = parts[0]["text"].split(" ") * (10 if slow else 1)
            parts = [{"text": w if i == 0 else " " + w} for i, w in enumerate(pieces)]
        events = []
        for i, part in enumerate(parts):
            cand: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
            if i == len(parts) - 1:
                cand["finishReason"] = "STOP"
            chunk = {
                "candidates": [cand],
                "usageMetadata": self._usage(model, body, i + 1),
                "modelVersion": model,
                "responseId": "fake-gemini-response",
            }
            events.append(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
        return await self.sse(request, events, 0.1 if slow else 0.0)
