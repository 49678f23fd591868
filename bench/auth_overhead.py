"""Auth overhead microbenchmark: µs per `Authenticator.authenticate()` call, in-process.

    PYTHONPATH=. python bench/auth_overhead.py [N]

Compares open mode (auth off) with a cached team key, a static token and a cached JWT.
The team key's first lookup reads SQLite; every timed call after it is served from the cache.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sluice import config, db
from sluice.asgi import Request
from sluice.auth import Authenticator
from sluice.store import Store


def request(headers: dict[str, str]) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, None, None)  # type: ignore[arg-type]


async def per_call_us(auth: Authenticator, req: Request, n: int) -> float:
    for _ in range(1000):  # warm up (and fill caches)
        await auth.authenticate(req)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            await auth.authenticate(req)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


async def main(n: int, url: str) -> None:
    store = Store(url)
    key, _ = await store.create_key("bench", "bench")

    open_auth = Authenticator(config.from_mapping({"auth": {"keys": False}}))
    keyed = Authenticator(config.from_mapping({"auth": {"keys": True}}), store)
    await keyed.start()
    static = Authenticator(config.from_mapping({"auth": {"tokens": ["tok-123456"], "keys": False}}))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    jwt_auth = Authenticator(
        config.from_mapping(
            {"auth": {"keys": False, "jwt": {"public_key": pem, "algorithms": ["ES256"]}}}
        )
    )
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 3600}, ec_key, algorithm="ES256")

    base = await per_call_us(open_auth, request({}), n)
    rows = [
        ("open mode (auth off)", base),
        (
            "team key (cached)",
            await per_call_us(keyed, request({"authorization": f"Bearer {key}"}), n),
        ),
        (
            "static token",
            await per_call_us(static, request({"authorization": "Bearer tok-123456"}), n),
        ),
        (
            "JWT ES256 (cached)",
            await per_call_us(jwt_auth, request({"authorization": f"Bearer {token}"}), n),
        ),
    ]
    for name, us in rows:
        print(f"{name:<24} {us:7.2f} µs/call   (+{us - base:5.2f} µs vs open)")
    await keyed.close()
    await store.close()


if __name__ == "__main__":
    storage = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    db.upgrade(storage)  # Alembic runs its own event loop: migrate before ours starts
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, storage))
