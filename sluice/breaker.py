"""Cooldowns per (provider, model) target — never a whole provider (SPEC §7).

After `failures` consecutive retryable failures (429, 5xx, network, timeout) a target is
cooled down for `cooldown_s`: requests try it only after every healthy target. When the
cooldown ends, the next request that orders it claims one probe (the window restarts, so
concurrent requests do not all probe); a success closes the breaker, a failure cools it
down again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


class _Target(Protocol):
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...


T = TypeVar("T", bound=_Target)


@dataclass(slots=True)
class Breakers:
    """Consecutive-failure counts and cooldown deadlines per target."""

    failures: int = 3
    cooldown_s: float = 30.0
    _fails: dict[tuple[str, str], int] = field(default_factory=dict)
    _until: dict[tuple[str, str], float] = field(default_factory=dict)

    def failure(self, target: _Target) -> None:
        """Count a retryable failure; the threshold'th in a row starts a cooldown."""
        key = (target.provider, target.model)
        n = self._fails.get(key, 0) + 1
        self._fails[key] = n
        if n >= self.failures:
            self._until[key] = time.monotonic() + self.cooldown_s

    def success(self, target: _Target) -> None:
        """A 2xx closes the target's breaker."""
        key = (target.provider, target.model)
        if key in self._fails:
            del self._fails[key]
            self._until.pop(key, None)

    def cooling(self, target: _Target) -> bool:
        """Whether the target is cooling down now (without claiming a probe)."""
        until = self._until.get((target.provider, target.model))
        return until is not None and time.monotonic() < until

    def arrange(self, targets: list[T]) -> list[T]:
        """Healthy targets in their order, then cooling ones as a last resort."""
        if not self._until:
            return targets
        now = time.monotonic()
        healthy: list[T] = []
        cold: list[T] = []
        for t in targets:
            key = (t.provider, t.model)
            until = self._until.get(key)
            if until is None:
                healthy.append(t)
            elif now < until:
                cold.append(t)
            else:
                self._until[key] = now + self.cooldown_s  # this request is the probe
                healthy.append(t)
        return healthy + cold

    def status(self) -> dict[str, float]:
        """Seconds left per cooling target, "provider/model" → s (for route-check)."""
        now = time.monotonic()
        return {f"{p}/{m}": round(u - now, 3) for (p, m), u in self._until.items() if u > now}
