"""Which provider and upstream model serve a requested model name (SPEC §2–3).

Order: the request's `provider` field; an exact alias `name`; `P/model` where P is a
configured provider; then `match` globs top to bottom. Plans are cached per model name, so
a request pays one dict lookup; only the target order (weighted, least-latency) is per request.
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import dataclass, field

from sluice.breaker import Breakers
from sluice.config import ModelEntry, Settings
from sluice.errors import GatewayError, validation


@dataclass(frozen=True, slots=True)
class Target:
    """One (provider, upstream model) an attempt can go to."""

    provider: str
    model: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a model routes: the rule that matched, its targets and strategy."""

    model: str
    rule: str
    targets: tuple[Target, ...]
    strategy: str = "fallback"
    entry: ModelEntry | None = None


@dataclass(slots=True)
class LatencyBoard:
    """EWMA of time-to-first-byte per target, for the least-latency strategy."""

    alpha: float = 0.3
    ewma: dict[tuple[str, str], float] = field(default_factory=dict)

    def observe(self, target: Target, seconds: float) -> None:
        """Fold one observed TTFB into the target's average."""
        key = (target.provider, target.model)
        old = self.ewma.get(key)
        self.ewma[key] = seconds if old is None else old + self.alpha * (seconds - old)

    def score(self, target: Target) -> float:
        """The target's average; unknown targets sort first so they get measured."""
        return self.ewma.get((target.provider, target.model), 0.0)


class Router:
    """Resolves model names to plans; built once from Settings."""

    def __init__(self, settings: Settings, configured: set[str]) -> None:
        self.settings = settings
        self.configured = configured  # providers with credentials
        self.providers = set(settings.providers)
        self.latency = LatencyBoard()
        self.breakers = Breakers(settings.server.cooldown_failures, settings.server.cooldown_s)
        self._names: dict[str, tuple[int, ModelEntry]] = {}
        self._globs: list[tuple[int, re.Pattern[str], ModelEntry]] = []
        for i, m in enumerate(settings.models):
            if m.name is not None:
                self._names.setdefault(m.name, (i, m))
            elif m.match is not None:
                self._globs.append((i, re.compile(fnmatch.translate(m.match)), m))
        self._cache: dict[str, Plan] = {}

    def plan(self, model: str | None, provider: str | None = None) -> Plan:
        """The plan for a request's model (and optional `provider` field)."""
        if model is None:
            model = self.settings.default_model
            if model is None:
                raise validation("model", "required (no default_model is configured)")
        if provider is not None:
            if provider not in self.providers:
                raise validation("provider", f"unknown provider {provider!r}")
            return Plan(model, "request field `provider`", (Target(provider, model),))
        plan = self._cache.get(model)
        if plan is None:
            plan = self._resolve(model)
            if len(self._cache) < 10_000:
                self._cache[model] = plan
        return plan

    def _resolve(self, model: str) -> Plan:
        hit = self._names.get(model)
        if hit is not None:
            i, entry = hit
            return self._from_entry(model, f"models[{i}] name {entry.name!r}", entry)
        prefix, slash, rest = model.partition("/")
        if slash and rest and prefix in self.configured:
            return Plan(model, f"provider prefix {prefix!r}", (Target(prefix, rest),))
        for i, pattern, entry in self._globs:
            if pattern.match(model):
                return self._from_entry(model, f"models[{i}] match {entry.match!r}", entry)
        raise GatewayError("MODEL_NOT_FOUND", f"no route for model {model!r}", param="model")

    @staticmethod
    def _from_entry(model: str, rule: str, entry: ModelEntry) -> Plan:
        if entry.targets:
            targets = tuple(Target(t.provider, t.model or model, t.weight) for t in entry.targets)
        else:
            assert entry.provider is not None
            targets = (Target(entry.provider, entry.model or model),)
        return Plan(model, rule, targets, entry.strategy, entry)

    def order(self, plan: Plan) -> list[Target]:
        """Targets in the order this request tries them; cooling-down targets go last."""
        targets = list(plan.targets)
        if len(targets) < 2:
            return targets
        if plan.strategy == "weighted":
            first = random.choices(targets, weights=[t.weight for t in targets])[0]
            targets.remove(first)
            targets = [first, *targets]
        elif plan.strategy == "least-latency":
            targets = sorted(targets, key=self.latency.score)
        return self.breakers.arrange(targets)

    def available(self, provider: str) -> bool:
        """Whether a provider has credentials (a request routed to it otherwise gets 503)."""
        return provider in self.configured
