"""A fake Jina AI embeddings API, `POST /v1/embeddings` (https://jina.ai/embeddings/#apiform).

OpenAI's list shape with Jina's usage (`total_tokens`, `prompt_tokens`); errors are
FastAPI-style `{"detail": ...}`. A model ending in `-400` answers 400.
"""

from __future__ import annotations

from aiohttp import web

from tests.fakes.server import FakeServer, words


class FakeJina(FakeServer):
    """`.url` is the base URL incl. /v1."""

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/embeddings", self.embeddings)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return self.json({"detail": "Unauthorized: missing API key"}, 401)
        model = str(body.get("model", ""))
        if model.endswith("-400"):
            return self.json({"detail": f"Model {model} is not supported"}, 400)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 3)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [0.01 * (j + 1) + i for j in range(dims)],
            }
            for i, _ in enumerate(inputs)
        ]
        tokens = sum(words(str(x)) for x in inputs)
        usage = {"total_tokens": tokens, "prompt_tokens": tokens}
        return self.json({"model": model, "object": "list", "usage": usage, "data": data})
