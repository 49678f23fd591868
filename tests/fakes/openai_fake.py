"""A fake OpenAI-compatible upstream: a real HTTP server speaking OpenAI's wire format.

Fault modes are chosen by the model name's suffix, so parallel tests never share state:
  -429 (Retry-After: 1)  -429long (Retry-After: 120)  -500  -400  -slow (0.3 s)  -hang
  -reset (stream breaks after two chunks)  -stall (stream goes quiet after two chunks)
  -flaky (500 the first time a `user` value is seen, then success)
  -bodyreset (a 200 whose body breaks the first time a `user` value is seen, then success)
  -echokey (a 401 whose message repeats the Authorization header)
  -nousage (a stream with no usage chunk)  -truncate (stream ends without [DONE])
  -slowstream (`stream_interval` seconds, 0.2 by default, between stream chunks, so a client
  can leave mid-stream and a drain can catch a stream in flight)
Every request is recorded (method, path, headers, body) for assertions via `.requests`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeServer

WORDS = ["Hello", " from", " the", " fake", " upstream", "."]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _prompt_tokens(body: dict[str, Any]) -> int:
    msgs = body.get("messages") or [{"content": body.get("prompt", "")}]
    return sum(len(str(m.get("content", "")).split()) + 3 for m in msgs if isinstance(m, dict))


class FakeOpenAI(FakeServer):
    """Start with `.start()` (a background thread); `.url` is the base URL incl. /v1."""

    def __init__(self) -> None:
        super().__init__()
        self._seen_users: set[str] = set()
        self.chunks = 6
        self.stream_interval = 0.2

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)

    async def _fault(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse | None:
        model = str(body.get("model", ""))
        if model.endswith("-429"):
            return self._error(
                429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": "1"}
            )
        if model.endswith("-429long"):
            return self._error(
                429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": "120"}
            )
        if model.endswith("-500"):
            return self._error(500, "The server had an error", "server_error")
        if model.endswith("-400"):
            return self._error(400, "Invalid value for 'foo'", "invalid_value")
        if model.endswith("-echokey"):
            auth = request.headers.get("Authorization", "")
            return self._error(401, f"Incorrect API key provided: {auth}", "invalid_api_key")
        if model.endswith("-slow"):
            await asyncio.sleep(0.3)
        if model.endswith("-hang"):
            await asyncio.sleep(60)
        if model.endswith("-flaky") and self._first_time(body):
            return self._error(500, "transient failure", "server_error")
        if model.endswith("-bodyreset") and self._first_time(body):
            return await self._broken_body(request)
        return None

    def _first_time(self, body: dict[str, Any]) -> bool:
        """Whether this request's `user` value is new (the faults that happen once)."""
        user = str(body.get("user", ""))
        if user in self._seen_users:
            return False
        self._seen_users.add(user)
        return True

    @staticmethod
    async def _broken_body(request: web.Request) -> web.StreamResponse:
        """A 200 whose JSON body is cut off by a reset after its first bytes."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 400
        await resp.prepare(request)
        await resp.write(b'{"id": "chatcmpl-cut", "object": "chat.comp')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    @staticmethod
    def _error(
        status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        fault = await self._fault(request, body)
        if fault is not None:
            return fault
        model = body.get("model", "gpt-fake")
        prompt = _prompt_tokens(body)
        if body.get("stream"):
            return await self._stream(request, body, model, prompt)
        text = "".join(WORDS)
        return web.Response(
            body=orjson.dumps(
                {
                    "id": "chatcmpl-fake1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": _usage(prompt, len(WORDS)),
                    "system_fingerprint": "fp_fake",
                }
            ),
            content_type="application/json",
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, prompt: int
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-fake1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        extra = {"usage": None} if include_usage else {}

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")

        words = (WORDS * ((self.chunks // len(WORDS)) + 1))[: max(self.chunks, 1)]
        await send(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        )
        paced = model.endswith("-slowstream")
        for i, w in enumerate(words):
            if paced:
                await asyncio.sleep(self.stream_interval)
            if model.endswith("-reset") and i == 2:
                assert request.transport is not None
                request.transport.abort()  # a reset mid-stream
                return resp
            if model.endswith("-stall") and i == 2:
                await asyncio.sleep(30)  # the connection stays open and goes quiet
            await send(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": w},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    **extra,
                }
            )
        await send(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                **extra,
            }
        )
        if include_usage and not model.endswith("-nousage"):
            await send({**base, "choices": [], "usage": _usage(prompt, len(words))})
        if not model.endswith("-truncate"):
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        fault = await self._fault(request, body)
        if fault is not None:
            return fault
        return web.json_response(
            {
                "id": "cmpl-fake1",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [
                    {"text": "".join(WORDS), "index": 0, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": _usage(_prompt_tokens(body), len(WORDS)),
            },
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        fault = await self._fault(request, body)
        if fault is not None:
            return fault
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3 + i]}
            for i in range(len(inputs))
        ]
        tokens = sum(len(str(x).split()) for x in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )


if __name__ == "__main__":  # run standalone: python -m tests.fakes.openai_fake PORT
    import sys

    fake = FakeOpenAI()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    web.run_app(fake.app(), host="127.0.0.1", port=port, access_log=None, print=None)
