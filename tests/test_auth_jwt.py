"""JWT verification end to end (seeds 000, 002; SPEC §6): a real gateway subprocess, a local
JWKS server, RSA and EC keys generated here, and every attack SPEC §6 names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sluice import config
from tests.conftest import Gateway, free_port, launch_gateway, openai_config
from tests.fakes.jwks_server import JwksServer
from tests.fakes.openai_fake import FakeOpenAI

ISSUER = "https://issuer.test"
AUDIENCE = "sluice"
INVALID = "Invalid or expired token"


class Keys:
    """An RSA and an EC key pair and their public JWKs."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa_jwk = {
            **jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True),
            "kid": "rsa-1",
            "use": "sig",
            "alg": "RS256",
        }
        self.ec_jwk = {
            **jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True),
            "kid": "ec-1",
            "use": "sig",
            "alg": "ES256",
        }

    def rsa_pem(self) -> str:
        return (
            self.rsa.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user-42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def rs256(keys: Keys, kid: str = "rsa-1", **over: Any) -> str:
    return jwt.encode(claims(**over), keys.rsa, algorithm="RS256", headers={"kid": kid})


def es256(keys: Keys, **over: Any) -> str:
    return jwt.encode(claims(**over), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A token built by hand, for what PyJWT refuses to produce."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    sig = sign(head.encode()) if sign else b""
    return head + "." + b64(sig)


def jwt_config(fake: FakeOpenAI, jwks_url: str, **jwt_over: Any) -> dict[str, Any]:
    jwt_conf = {
        "jwks_url": jwks_url,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ["RS256", "ES256"],
        "entitlements_claim": "entitlements",
    }
    jwt_conf.update(jwt_over)
    return openai_config(fake, auth={"jwt": jwt_conf, "keys": False})


def chat(gw: Gateway, token: str | None, model: str = "gpt-4o-mini") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=30,
    )


@pytest.fixture(scope="module")
def jwks(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer().start()
    server.keys = [keys.rsa_jwk, keys.ec_jwk]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI, jwks: JwksServer
) -> Iterator[Gateway]:
    g = launch_gateway(tmp_path_factory.mktemp("jwt"), jwt_config(fake_openai, jwks.url))
    yield g
    g.stop()


def test_valid_rs256_and_es256_tokens_pass_and_sub_is_recorded(gw: Gateway, keys: Keys) -> None:
    r1 = chat(gw, rs256(keys, sub="alice"))
    r2 = chat(gw, es256(keys, sub="bob"))
    assert r1.status_code == 200, r1.text
    assert r2.status_code == 200, r2.text
    users = {a["user"] for a in gw.wait_audit(2) if a["status"] == 200}
    assert {"alice", "bob"} <= users


def test_jwt_is_prefetched_not_fetched_per_request(
    gw: Gateway, keys: Keys, jwks: JwksServer
) -> None:
    before = jwks.fetches
    for i in range(5):
        assert chat(gw, rs256(keys, sub=f"u{i}")).status_code == 200
    assert jwks.fetches == before


REJECTED = {
    "expired": lambda k: rs256(k, exp=int(time.time()) - 120),
    "missing_exp": lambda k: rs256(k, exp=None),
    "wrong_issuer": lambda k: rs256(k, iss="https://evil.test"),
    "wrong_audience": lambda k: rs256(k, aud="someone-else"),
    "missing_audience": lambda k: rs256(k, aud=None),
    "nbf_in_future": lambda k: rs256(k, nbf=int(time.time()) + 600),
    "alg_none": lambda k: handmade({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims()),
    "alg_none_capitalised": lambda k: handmade({"alg": "None", "kid": "rsa-1"}, claims()),
    "hs256_signed_with_public_key": lambda k: handmade(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        claims(),
        lambda m: hmac.new(k.rsa_pem().encode(), m, hashlib.sha256).digest(),
    ),
    "tampered_payload": lambda k: ".".join(
        [
            rs256(k).split(".")[0],
            b64(json.dumps(claims(sub="admin")).encode()),
            rs256(k).split(".")[2],
        ]
    ),
    "ec_key_under_rsa_kid": lambda k: jwt.encode(
        claims(), k.ec, algorithm="ES256", headers={"kid": "rsa-1"}
    ),
    "malformed_entitlements": lambda k: rs256(k, entitlements={"models": "gpt-*"}),
}


@pytest.mark.parametrize("make", REJECTED.values(), ids=list(REJECTED))
def test_attack_is_rejected_with_the_seed_message(gw: Gateway, keys: Keys, make: Any) -> None:
    r = chat(gw, make(keys))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["message"] == INVALID
    assert r.json()["error"]["code"] == "UNAUTHORIZED"


def test_missing_and_wrong_credentials_get_the_same_body(gw: Gateway, keys: Keys) -> None:
    missing = chat(gw, None)
    wrong = chat(gw, rs256(keys, exp=int(time.time()) - 3600))
    garbage = chat(gw, "not-a-token")
    assert missing.status_code == wrong.status_code == garbage.status_code == 401
    assert missing.content == wrong.content == garbage.content


def test_leeway_accepts_a_just_expired_token(gw: Gateway, keys: Keys) -> None:
    assert chat(gw, rs256(keys, exp=int(time.time()) - 5)).status_code == 200


def test_entitlements_limit_models_to_their_globs(gw: Gateway, keys: Keys) -> None:
    token = rs256(keys, entitlements={"models": ["gpt-4o*"], "rpm": 60})
    assert chat(gw, token, "gpt-4o-mini").status_code == 200
    denied = chat(gw, token, "gpt-3.5-turbo")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "FORBIDDEN"
    # entitlements given as a JSON string (some issuers only emit string claims)
    as_text = rs256(keys, entitlements=json.dumps({"models": ["gpt-3.5*"]}))
    assert chat(gw, as_text, "gpt-3.5-turbo").status_code == 200
    assert chat(gw, as_text, "gpt-4o").status_code == 403


def test_jku_and_x5u_are_never_followed(gw: Gateway, keys: Keys, tmp_path: Path) -> None:
    attacker = JwksServer().start()
    try:
        evil = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        attacker.keys = [
            {**jwt.algorithms.RSAAlgorithm.to_jwk(evil.public_key(), as_dict=True), "kid": "evil"}
        ]
        for header in ({"jku": attacker.url}, {"x5u": attacker.url}):
            token = jwt.encode(claims(), evil, algorithm="RS256", headers={"kid": "evil", **header})
            assert chat(gw, token).status_code == 401
        assert attacker.fetches == 0
    finally:
        attacker.stop()


def test_unknown_kid_storm_costs_at_most_one_refresh(
    tmp_path: Path, fake_openai: FakeOpenAI, keys: Keys
) -> None:
    server = JwksServer().start()
    server.keys = [keys.rsa_jwk]
    g = launch_gateway(tmp_path, jwt_config(fake_openai, server.url))
    try:
        assert server.fetches == 1  # the start-up prefetch
        tokens = [rs256(keys, kid=uuid.uuid4().hex) for _ in range(40)]
        with ThreadPoolExecutor(8) as pool:  # concurrent unknown kids share one refresh
            statuses = list(pool.map(lambda t: chat(g, t).status_code, tokens))
        assert statuses == [401] * 40
        for t in tokens[:10]:  # and later ones inside the 30 s window cost nothing
            assert chat(g, t).status_code == 401
        assert server.fetches <= 2
        # the storm does not disturb tokens of a kid the JWKS already holds
        assert chat(g, rs256(keys)).status_code == 200
        assert "JWKS" not in g.stdout()
    finally:
        g.stop()
        server.stop()


def test_new_kid_is_picked_up_by_one_refresh(
    tmp_path: Path, fake_openai: FakeOpenAI, keys: Keys
) -> None:
    server = JwksServer().start()
    server.keys = [keys.rsa_jwk]
    g = launch_gateway(tmp_path, jwt_config(fake_openai, server.url))
    try:
        server.keys = [keys.rsa_jwk, keys.ec_jwk]  # the issuer rotates in a new key
        r = chat(g, es256(keys))
        assert r.status_code == 200, r.text
        assert server.fetches == 2  # start-up, then one refresh for the new kid
    finally:
        g.stop()
        server.stop()


def test_fallback_pem_is_used_when_the_jwks_is_down(
    tmp_path: Path, fake_openai: FakeOpenAI, keys: Keys
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
    cfg = jwt_config(fake_openai, dead, public_key="${JWT_PUBLIC_KEY_FALLBACK}")
    g = launch_gateway(tmp_path, cfg, env={"JWT_PUBLIC_KEY_FALLBACK": keys.rsa_pem()})
    try:
        ok = chat(g, rs256(keys, sub="carol"))
        assert ok.status_code == 200, ok.text
        assert chat(g, es256(keys)).status_code == 401  # not the fallback's key
        bad = chat(g, rs256(keys, exp=int(time.time()) - 3600))
        assert bad.status_code == 401
        assert "JWKS" not in bad.text
        assert "JWKS fetch failed" in g.stderr()
    finally:
        g.stop()


def test_fallback_jwk_is_used_when_the_jwks_answers_500(
    tmp_path: Path, fake_openai: FakeOpenAI, keys: Keys
) -> None:
    server = JwksServer().start()
    server.failing = True
    cfg = jwt_config(fake_openai, server.url, public_key="${JWT_PUBLIC_JWK}")
    g = launch_gateway(tmp_path, cfg, env={"JWT_PUBLIC_JWK": json.dumps(keys.ec_jwk)})
    try:
        assert chat(g, es256(keys)).status_code == 200
        assert chat(g, rs256(keys)).status_code == 401
    finally:
        g.stop()
        server.stop()


def test_token_never_reaches_logs_or_upstream(
    gw: Gateway, keys: Keys, fake_openai: FakeOpenAI
) -> None:
    token = rs256(keys, sub="canary-user")
    assert chat(gw, token).status_code == 200
    assert chat(gw, token[:-4] + "AAAA").status_code == 401
    gw.wait_audit(1)
    assert token not in gw.stdout() + gw.stderr()
    assert token[:-4] not in gw.stdout() + gw.stderr()
    assert all(token not in json.dumps(r["headers"]) for r in fake_openai.requests)


@pytest.mark.parametrize("alg", ["HS256", "none", "HS512"])
def test_config_refuses_symmetric_and_none_algorithms(alg: str) -> None:
    with pytest.raises(config.ConfigError, match=r"auth\.jwt\.algorithms\[0\]"):
        config.from_mapping({"auth": {"jwt": {"algorithms": [alg]}}})


def test_config_refuses_leeway_over_a_minute() -> None:
    with pytest.raises(config.ConfigError, match="leeway"):
        config.from_mapping({"auth": {"jwt": {"leeway_s": 61}}})


async def test_env_only_mode_reads_the_seeds_jwt_variables(keys: Keys) -> None:
    from sluice.auth.jwt import JwtVerifier

    env = {
        "JWT_JWKS_URL": f"http://127.0.0.1:{free_port()}/jwks.json",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_PUBLIC_JWK": json.dumps(keys.rsa_jwk),
    }
    settings = config.from_env(env)
    assert settings.auth.jwt is not None
    verifier = JwtVerifier(settings.auth.jwt)
    await verifier.start()  # the JWKS is down: the JWK fallback answers
    try:
        claims_ = await verifier.verify(rs256(keys, sub="dave", entitlements={"models": ["a*"]}))
        assert claims_.user == "dave" and claims_.allowed_models == ("a*",)
        assert verifier.fetches == 2  # start-up, then one retry for the unknown kid
    finally:
        await verifier.close()
