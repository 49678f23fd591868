"""Jina translation, table-driven from tests/fixtures/jina/ (Jina serves embeddings only)."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.errors import GatewayError
from tests.providers import translation as t

KIND = "jina"


@pytest.mark.parametrize("case", t.cases(KIND, "embeddings"), ids=t.case_id)
def test_embeddings(case: dict[str, Any]) -> None:
    t.check_embeddings(KIND, case)


@pytest.mark.parametrize("case", t.cases(KIND, "errors"), ids=t.case_id)
def test_error_message(case: dict[str, Any]) -> None:
    t.check_error(KIND, case)


def test_chat_is_a_clear_400() -> None:
    chat = t.chat({"model": "jina-embeddings-v3", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(GatewayError) as err:
        t.adapter(KIND).chat_request(chat, "jina-embeddings-v3", "k")
    assert err.value.status == 400 and "only embeddings" in err.value.message
