"""docs/providers.md is generated from the tests and must not go stale."""

from __future__ import annotations

from tests import providers_matrix


def test_providers_doc_is_current() -> None:
    assert providers_matrix.OUT.read_text() == providers_matrix.render(), (
        "docs/providers.md is stale: run `python -m tests.providers_matrix`"
    )


def test_every_matrix_row_is_a_tested_feature() -> None:
    features = providers_matrix._features()
    assert "streaming" in features and "embeddings" in features
    assert all(kinds for kinds in features.values())
