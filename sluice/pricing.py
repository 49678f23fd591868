"""Model prices in USD per million tokens: the config's, else a small built-in table.

Built-in prices are list prices from each provider's public pricing page as of 2026-11
(openai.com/api/pricing, anthropic.com/pricing, ai.google.dev/pricing, cohere.com/pricing,
developers.cloudflare.com/workers-ai/platform/pricing). A model in neither place is priced
None: its cost is recorded as unknown, never as $0 (SPEC §5).
"""

from __future__ import annotations

from typing import Any

from sluice.config import ModelEntry, Price, Settings
from sluice.routing import Target

BUILTIN: dict[str, Price] = {
    "gpt-4o": Price(input_per_mtok=2.50, output_per_mtok=10.00, cached_input_per_mtok=1.25),
    "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.60, cached_input_per_mtok=0.075),
    "gpt-4.1": Price(input_per_mtok=2.00, output_per_mtok=8.00, cached_input_per_mtok=0.50),
    "gpt-4.1-mini": Price(input_per_mtok=0.40, output_per_mtok=1.60, cached_input_per_mtok=0.10),
    "gpt-4": Price(input_per_mtok=30.00, output_per_mtok=60.00),
    "gpt-3.5-turbo": Price(input_per_mtok=0.50, output_per_mtok=1.50),
    "o3-mini": Price(input_per_mtok=1.10, output_per_mtok=4.40, cached_input_per_mtok=0.55),
    "text-embedding-3-small": Price(input_per_mtok=0.02, output_per_mtok=0.0),
    "text-embedding-3-large": Price(input_per_mtok=0.13, output_per_mtok=0.0),
    "claude-sonnet-4-5": Price(
        input_per_mtok=3.00, output_per_mtok=15.00, cached_input_per_mtok=0.30
    ),
    "claude-sonnet-4-20250514": Price(
        input_per_mtok=3.00, output_per_mtok=15.00, cached_input_per_mtok=0.30
    ),
    "claude-opus-4-1": Price(
        input_per_mtok=15.00, output_per_mtok=75.00, cached_input_per_mtok=1.50
    ),
    "claude-3-5-haiku-latest": Price(
        input_per_mtok=0.80, output_per_mtok=4.00, cached_input_per_mtok=0.08
    ),
    "gemini-2.5-pro": Price(input_per_mtok=1.25, output_per_mtok=10.00),
    "gemini-2.5-flash": Price(input_per_mtok=0.30, output_per_mtok=2.50),
    "gemini-2.0-flash": Price(input_per_mtok=0.10, output_per_mtok=0.40),
    "command-r-plus": Price(input_per_mtok=2.50, output_per_mtok=10.00),
    "command-r": Price(input_per_mtok=0.15, output_per_mtok=0.60),
    "@cf/meta/llama-4-scout-17b-16e-instruct": Price(input_per_mtok=0.27, output_per_mtok=0.85),
    "@cf/meta/llama-3.1-8b-instruct": Price(input_per_mtok=0.28, output_per_mtok=0.83),
}


class Prices:
    """Answers "what does this model cost" from config first, then the built-in table."""

    def __init__(self, settings: Settings) -> None:
        self._named: dict[str, Price] = {}
        for m in settings.models:
            if m.price is not None and m.name is not None:
                self._named[m.name] = m.price

    def lookup(self, model: str, target: Target, entry: ModelEntry | None = None) -> Price | None:
        """The price for a request to `model` served by `target`, or None when unknown."""
        if entry is not None and entry.price is not None:
            return entry.price
        return self._named.get(model) or BUILTIN.get(target.model) or BUILTIN.get(model)

    def describe(
        self, model: str, target: Target, entry: ModelEntry | None = None
    ) -> dict[str, Any] | None:
        """The price as JSON for /v1/model-options and /v1/route-check."""
        p = self.lookup(model, target, entry)
        if p is None:
            return None
        return {"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok}
