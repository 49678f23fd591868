"""Discovers adapter modules in this package and answers questions about kinds."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from sluice.providers.base import Adapter

if TYPE_CHECKING:
    from sluice.config import ProviderConfig

_NOT_ADAPTERS = {"base", "registry"}


@cache
def _adapters() -> dict[str, type[Adapter]]:
    import sluice.providers as pkg

    found: dict[str, type[Adapter]] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in _NOT_ADAPTERS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        cls = getattr(module, "ADAPTER", None)
        if isinstance(cls, type) and issubclass(cls, Adapter):
            found[cls.kind] = cls
    return found


def kinds() -> list[str]:
    """Every provider kind that has an adapter."""
    return sorted(_adapters())


def get(kind: str) -> type[Adapter]:
    """The adapter class for a kind."""
    return _adapters()[kind]


def adapter_for(config: ProviderConfig) -> Adapter:
    """A ready adapter instance for one configured provider."""
    return get(config.kind)(config)


def providers_from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Env-only mode: every provider an adapter declares, with whatever credentials are set."""
    out: dict[str, dict[str, Any]] = {}
    for cls in _adapters().values():
        for ep in cls.env_providers:
            key = next((env[v] for v in ep.key_vars if env.get(v)), None)
            conf: dict[str, Any] = {"kind": cls.kind, "api_key": key}
            base = env.get(ep.base_url_var) or ep.base_url
            if base:
                conf["base_url"] = base
            for field_name, var in ep.extra_vars.items():
                if env.get(var):
                    conf[field_name] = env[var]
            out[ep.name] = conf
    return out


def default_routes() -> list[tuple[str, str]]:
    """(glob, provider name) pairs that env-only mode routes by, in SPEC §3's order."""
    order = ["workers_ai", "openai", "gemini", "anthropic", "cohere", "jina"]
    ranked = sorted(
        _adapters().values(), key=lambda c: order.index(c.kind) if c.kind in order else 99
    )
    return [r for cls in ranked for r in cls.default_routes]
