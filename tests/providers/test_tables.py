"""Every provider's translation tables (tests/fixtures/<kind>/<section>.json), each case run
through its section's check in tests/providers/translation.py. A kind joins by adding files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.providers import translation as t

CHECKS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "chat_request": t.check_request,
    "chat_response": t.check_response,
    "chat_stream": t.check_stream,
    "embeddings": t.check_embeddings,
    "errors": t.check_error,
}
CASES = [
    pytest.param(kind, section, case, id=f"{kind}-{section}-{t.case_id(case)}")
    for kind in sorted(p.name for p in t.FIXTURES.iterdir() if p.is_dir())
    for section in CHECKS
    for case in t.cases(kind, section)
]


def test_every_table_driven_kind_has_cases() -> None:
    kinds = {p.values[0] for p in CASES}
    assert kinds == {"cohere", "gemini", "jina", "workers_ai"}


@pytest.mark.parametrize(("kind", "section", "case"), CASES)
def test_case(kind: str, section: str, case: dict[str, Any]) -> None:
    CHECKS[section](kind, case)
