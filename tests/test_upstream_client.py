"""The provider client's edges that no fake provider reaches: a request it cannot build."""

from __future__ import annotations

import time

import pytest

from sluice.config import ProviderConfig
from sluice.errors import GatewayError
from sluice.providers import registry
from sluice.providers.base import UpstreamCall
from sluice.upstream import Upstream


async def test_a_key_http_cannot_carry_is_provider_unavailable_and_never_echoed() -> None:
    """A key read from a file with Windows line endings ends in a carriage return: the call
    is refused as PROVIDER_UNAVAILABLE (retryable, so a fallback target takes over), not a
    500, and the message does not repeat the key."""
    bad_key = "sk-from-a-dos-file-0123456789\r"
    adapter = registry.adapter_for(
        ProviderConfig(kind="openai", api_key=bad_key, base_url="http://127.0.0.1:9", max_retries=0)
    )
    call = UpstreamCall("POST", "/chat/completions", adapter.headers(bad_key), b"{}", False, {})
    up = Upstream()
    try:
        with pytest.raises(GatewayError) as caught:
            await up.open("p", adapter, call, time.monotonic() + 5, (bad_key,))
    finally:
        await up.close()
    err = caught.value
    assert err.code == "PROVIDER_UNAVAILABLE" and err.status == 503 and err.retryable
    assert bad_key.strip() not in err.message
