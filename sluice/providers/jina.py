"""Kind `jina`: Jina AI's embeddings API, https://api.jina.ai/v1/embeddings.

Its request and answer are OpenAI's embeddings shapes plus Jina's own options (`task`,
`dimensions`, `late_chunking`, ...), which pass through: https://jina.ai/embeddings/#apiform
Jina serves no chat, so a chat request routed here is a clear 400.
"""

from __future__ import annotations

from typing import Any

import orjson

from sluice.providers import canonical as c
from sluice.providers.base import Adapter, EnvProvider, UpstreamCall, Usage, json_object
from sluice.providers.openai import usage_from
from sluice.schema import ChatRequest, EmbeddingsRequest


class JinaAdapter(Adapter):
    kind = "jina"
    default_base_url = "https://api.jina.ai/v1"
    env_providers = (EnvProvider("jina", ("JINA_API_KEY",), "JINA_BASE_URL"),)
    default_routes = (("jina-*", "jina"),)
    embeddings = True
    native_prefix = "jina"

    def chat_request(self, chat: ChatRequest, upstream_model: str, api_key: str) -> UpstreamCall:
        raise c.unsupported("jina", "chat completions (only embeddings)")

    def embeddings_request(
        self, req: EmbeddingsRequest, upstream_model: str, api_key: str
    ) -> UpstreamCall:
        body: dict[str, Any] = {
            k: v for k, v in req.body.items() if k not in ("provider", "encoding_format", "user")
        }
        body["model"] = upstream_model
        body["input"] = c.text_inputs(req.inputs)
        return UpstreamCall("POST", "/embeddings", self.headers(api_key), orjson.dumps(body))

    def embeddings_response(self, data: bytes, model: str) -> tuple[bytes, Usage | None]:
        obj = c.loads(data)
        vectors = [
            d.get("embedding")
            for d in sorted(obj.get("data") or (), key=lambda d: d.get("index", 0))
        ]
        usage = usage_from(obj.get("usage"))
        return c.embeddings(vectors, model, usage), usage

    def native_usage(self, data: bytes) -> Usage | None:
        obj = json_object(data)
        if obj is None or not isinstance(obj.get("usage"), dict):
            return None
        u = obj["usage"]
        return Usage(prompt_tokens=int(u.get("prompt_tokens") or u.get("total_tokens") or 0))

    def error_message(self, data: bytes) -> str:
        """Jina's errors are FastAPI-style `{"detail": ...}`."""
        obj = json_object(data)
        if obj is not None and isinstance(obj.get("detail"), str):
            return str(obj["detail"])
        return super().error_message(data)


ADAPTER = JinaAdapter
