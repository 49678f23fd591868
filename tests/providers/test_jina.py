"""Jina serves embeddings only (its tables run in test_tables.py): a chat is a clear 400."""

from __future__ import annotations

import pytest

from sluice.errors import GatewayError
from tests.providers import translation as t

KIND = "jina"


def test_chat_is_a_clear_400() -> None:
    chat = t.chat({"model": "jina-embeddings-v3", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(GatewayError) as err:
        t.adapter(KIND).chat_request(chat, "jina-embeddings-v3", "k")
    assert err.value.status == 400 and "only embeddings" in err.value.message
