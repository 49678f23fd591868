"""Providers over HTTPS: certificates are always checked, against the bundle SSL_CERT_FILE
names when it is set (a self-hosted OpenAI-compatible server behind a private CA), else the
client's bundled public roots — which do not trust a private CA."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sluice.config import ProviderConfig
from sluice.errors import GatewayError
from sluice.providers import registry
from sluice.providers.base import UpstreamCall
from sluice.upstream import Upstream


def _certificates(d: Path) -> None:
    """A private CA (ca.pem) and a certificate it signed for 127.0.0.1 (cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluice test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def _https_server(d: Path) -> tuple[web.AppRunner, int]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    return runner, runner.addresses[0][1]


@pytest.mark.parametrize("trusted", [True, False])
async def test_https_upstream_is_checked_against_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    _certificates(tmp_path)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    runner, port = await _https_server(tmp_path)
    up = Upstream()
    adapter = registry.adapter_for(
        ProviderConfig(
            kind="openai", api_key="k", base_url=f"https://127.0.0.1:{port}", max_retries=0
        )
    )
    call = UpstreamCall("POST", "/chat/completions", {}, b"{}", False, {})
    try:
        if trusted:
            opened = await up.open("p", adapter, call, time.monotonic() + 10, ())
            assert await opened.read() == b'{"ok": true}'
        else:
            with pytest.raises(GatewayError) as caught:
                await up.open("p", adapter, call, time.monotonic() + 10, ())
            assert caught.value.code == "NETWORK_ERROR"
    finally:
        await up.close()
        await runner.cleanup()
