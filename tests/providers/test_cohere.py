"""Cohere translation, table-driven from tests/fixtures/cohere/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.providers import translation as t

KIND = "cohere"


@pytest.mark.parametrize("case", t.cases(KIND, "chat_request"), ids=t.case_id)
def test_chat_request(case: dict[str, Any]) -> None:
    t.check_request(KIND, case)


@pytest.mark.parametrize("case", t.cases(KIND, "chat_response"), ids=t.case_id)
def test_chat_response(case: dict[str, Any]) -> None:
    t.check_response(KIND, case)


@pytest.mark.parametrize("case", t.cases(KIND, "chat_stream"), ids=t.case_id)
def test_chat_stream(case: dict[str, Any]) -> None:
    t.check_stream(KIND, case)


@pytest.mark.parametrize("case", t.cases(KIND, "embeddings"), ids=t.case_id)
def test_embeddings(case: dict[str, Any]) -> None:
    t.check_embeddings(KIND, case)


@pytest.mark.parametrize("case", t.cases(KIND, "errors"), ids=t.case_id)
def test_error_message(case: dict[str, Any]) -> None:
    t.check_error(KIND, case)
