"""Settings: the YAML file of SPEC §2, `${VAR}` substitution, strict validation, env-only mode.

Every error names the offending path, e.g. ``models[3].provider``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from sluice.providers import registry


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending path."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 8787
    cors_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    max_request_bytes: int = 10 * 1024 * 1024
    upstream_timeout_s: float = 600.0
    drain_timeout_s: float = 30.0
    public_url: str | None = None
    retry_after_cap_s: float = 10.0  # a longer Retry-After is returned to the client, not slept on
    cooldown_failures: int = 3  # consecutive failures that cool a (provider, model) target down
    cooldown_s: float = 30.0  # how long before a cooled-down target is probed again


class StorageConfig(_Strict):
    url: str = "sqlite:///./sluice.db"


class RedisConfig(_Strict):
    url: str | None = None
    prefix: str = "sluice:"  # every key limits, budgets and the cache write starts with it
    instances: int | None = None  # fixed instance count for the Redis-down split (else heartbeats)


class ProviderConfig(_Strict):
    kind: str
    api_key: str | None = None
    base_url: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_s: float = 600.0
    max_retries: int = 2
    account_id: str | None = None  # workers_ai

    @property
    def configured(self) -> bool:
        """Whether credentials are present (a provider without them answers 503)."""
        return bool(self.api_key) and registry.get(self.kind).credentials_complete(self)


class Price(_Strict):
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


class Target(_Strict):
    provider: str
    model: str | None = None
    weight: float = 1.0


class ModelEntry(_Strict):
    match: str | None = None
    name: str | None = None
    provider: str | None = None
    model: str | None = None
    targets: list[Target] | None = None
    strategy: Literal["fallback", "weighted", "least-latency"] = "fallback"
    context_window: int | None = None
    price: Price | None = None


class JwtConfig(_Strict):
    jwks_url: str | None = None
    public_key: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256"])
    entitlements_claim: str = "entitlements"
    leeway_s: float = 30.0


class AuthConfig(_Strict):
    tokens: list[str] = msgspec.field(default_factory=list)
    admin_key: str | None = None
    keys: bool = True
    byok: bool = True
    jwt: JwtConfig | None = None


class LimitRule(_Strict):
    scope: Literal["key", "team", "user", "session", "ip", "model", "global"]
    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None


class BudgetRule(_Strict):
    scope: Literal["key", "team", "user", "global"]
    usd: float
    period: Literal["day", "week", "month", "total"] = "month"


class CacheConfig(_Strict):
    enabled: bool = False
    ttl_s: float = 3600.0
    max_entries: int = 10_000


class LoggingConfig(_Strict):
    audit: bool = True
    # True: each chat/completions/messages audit line also carries the request body
    # ("content": {"request": ...}), scrubbed of secrets and cut at 64 KiB. Completions and
    # the database never hold content.
    store_content: bool = False
    retention_days: float = 90.0  # usage rows older than this are deleted; 0 keeps them all
    spool_dir: str | None = None  # where records wait while storage is down
    queue_size: int = 100_000  # records held in memory before spilling straight to the spool
    batch_size: int = 1000  # rows per INSERT
    # How long the writer waits for a batch to fill: each transaction costs ~0.75 ms of CPU
    # (SQLite), so at 2,000 requests/s 0.1 s makes that ~4 µs a request rather than ~15.
    batch_linger_s: float = 0.1
    otel: bool = False  # OpenTelemetry spans (GenAI conventions); needs the `otel` extra


class AiGatewayConfig(_Strict):
    url: str
    token: str | None = None


class Settings(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: list[ModelEntry] = msgspec.field(default_factory=list)
    default_model: str | None = None
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    limits: list[LimitRule] = msgspec.field(default_factory=list)
    budgets: list[BudgetRule] = msgspec.field(default_factory=list)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    ai_gateway: AiGatewayConfig | None = None
    registration_token: str | None = None


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of a YAML tree."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value


def _path(msgspec_path: str) -> str:
    return msgspec_path.removeprefix("$").removeprefix(".")


def from_mapping(data: Any) -> Settings:
    """Validate a substituted mapping into Settings, or raise ConfigError naming the path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping at the top level")
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        # msgspec ends its message with "- at `$.models[3].provider`"; lead with the path instead.
        msg, _, where = text.rpartition(" - at `")
        if where:
            raise ConfigError(f"{_path(where.rstrip('`'))}: {msg}") from None
        raise ConfigError(text) from None
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    """Cross-field rules msgspec cannot express."""
    for name, p in s.providers.items():
        if p.kind not in registry.kinds():
            known = ", ".join(registry.kinds())
            raise ConfigError(f"providers.{name}.kind: unknown kind {p.kind!r} (one of {known})")
        if p.base_url and not p.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"providers.{name}.base_url: must start with http:// or https://")
    for i, m in enumerate(s.models):
        where = f"models[{i}]"
        if (m.match is None) == (m.name is None):
            raise ConfigError(f"{where}: give exactly one of `match` or `name`")
        if m.targets is None and m.provider is None:
            raise ConfigError(f"{where}: give `provider` or `targets`")
        if m.targets is not None and m.provider is not None:
            raise ConfigError(f"{where}: give `provider` or `targets`, not both")
        if m.provider is not None and m.provider not in s.providers:
            raise ConfigError(f"{where}.provider: unknown provider {m.provider!r}")
        for j, t in enumerate(m.targets or []):
            if t.provider not in s.providers:
                raise ConfigError(f"{where}.targets[{j}].provider: unknown provider {t.provider!r}")
            if t.weight < 0:
                raise ConfigError(f"{where}.targets[{j}].weight: must be >= 0")
        if m.targets is not None and not m.targets:
            raise ConfigError(f"{where}.targets: must not be empty")
    if s.server.max_request_bytes <= 0:
        raise ConfigError("server.max_request_bytes: must be > 0")
    if s.server.upstream_timeout_s <= 0:
        raise ConfigError("server.upstream_timeout_s: must be > 0")
    if s.auth.jwt is not None:
        for k, alg in enumerate(s.auth.jwt.algorithms):
            if alg not in ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"):
                raise ConfigError(
                    f"auth.jwt.algorithms[{k}]: {alg!r} is not an allowed public-key algorithm"
                )
        if s.auth.jwt.leeway_s > 60:
            raise ConfigError("auth.jwt.leeway_s: must be <= 60")
    _check_traffic(s)


def _check_traffic(s: Settings) -> None:
    """Limits, budgets and cooldowns: a rule that limits nothing is a mistake worth naming."""
    for i, r in enumerate(s.limits):
        caps = {"rpm": r.rpm, "tpm": r.tpm, "concurrent": r.concurrent}
        if all(v is None for v in caps.values()):
            raise ConfigError(f"limits[{i}]: give at least one of rpm, tpm, concurrent")
        for name, v in caps.items():
            if v is not None and v < 1:
                raise ConfigError(f"limits[{i}].{name}: must be >= 1")
    for i, b in enumerate(s.budgets):
        if b.usd <= 0:
            raise ConfigError(f"budgets[{i}].usd: must be > 0")
    if s.redis.instances is not None and s.redis.instances < 1:
        raise ConfigError("redis.instances: must be >= 1")
    if s.server.cooldown_failures < 1 or s.server.cooldown_s < 0:
        raise ConfigError("server.cooldown_failures: must be >= 1 (cooldown_s >= 0)")


def load_file(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read a YAML config file, substitute variables from `env`, validate."""
    env = os.environ if env is None else env
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    settings = from_mapping(substitute(raw, env))
    return _overlay_env(settings, env)


def _overlay_env(s: Settings, env: Mapping[str, str]) -> Settings:
    """Variables that mean the same with or without a file (SPEC §3)."""
    if env.get("AUDIT_LOG", "").lower() == "false":
        s.logging.audit = False
    if env.get("SLUICE_DATABASE_URL"):
        s.storage.url = env["SLUICE_DATABASE_URL"]
    if env.get("SLUICE_REDIS_URL"):
        s.redis.url = env["SLUICE_REDIS_URL"]
    if s.registration_token is None and env.get("REGISTRATION_TOKEN"):
        s.registration_token = env["REGISTRATION_TOKEN"]
    if s.ai_gateway is None and env.get("AI_GATEWAY_URL"):
        s.ai_gateway = AiGatewayConfig(url=env["AI_GATEWAY_URL"], token=env.get("AI_GATEWAY_TOKEN"))
    s.auth.tokens = [t for t in s.auth.tokens if t]
    if not s.auth.admin_key:
        s.auth.admin_key = None
    return s


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Env-only mode (SPEC §3): providers from their variables, the default routes."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {"providers": {}, "auth": {}, "server": {}}
    for name, pconf in registry.providers_from_env(env).items():
        data["providers"][name] = pconf
    if env.get("AUTH_TOKEN"):
        data["auth"]["tokens"] = [env["AUTH_TOKEN"]]
    if env.get("SLUICE_ADMIN_KEY"):
        data["auth"]["admin_key"] = env["SLUICE_ADMIN_KEY"]
    jwt = {
        k: env[v]
        for k, v in (
            ("jwks_url", "JWT_JWKS_URL"),
            ("issuer", "JWT_ISSUER"),
            ("audience", "JWT_AUDIENCE"),
        )
        if env.get(v)
    }
    public = env.get("JWT_PUBLIC_KEY_FALLBACK") or env.get("JWT_PUBLIC_JWK")
    if public:
        jwt["public_key"] = public
    if jwt:
        data["auth"]["jwt"] = jwt
    if env.get("SLUICE_HOST"):
        data["server"]["host"] = env["SLUICE_HOST"]
    if env.get("SLUICE_PORT"):
        data["server"]["port"] = env["SLUICE_PORT"]
    settings = from_mapping(data)
    settings.models = _default_models(settings)
    if "cloudflare" in settings.providers and settings.providers["cloudflare"].configured:
        settings.default_model = "@cf/meta/llama-4-scout-17b-16e-instruct"  # seed 001's default
    return _overlay_env(settings, env)


def _default_models(s: Settings) -> list[ModelEntry]:
    """SPEC §3's routes: configured providers' globs, then OpenRouter for anything else, then
    unconfigured providers' globs (so their models get a clear 503, not a 404)."""
    configured = {n for n, p in s.providers.items() if p.configured}
    routes = [(g, p) for g, p in registry.default_routes() if p in s.providers]
    models = [ModelEntry(match=g, provider=p) for g, p in routes if p in configured]
    if "openrouter" in configured:
        models.append(ModelEntry(match="*", provider="openrouter"))
    models += [ModelEntry(match=g, provider=p) for g, p in routes if p not in configured]
    return models


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """The CLI's rule: --config, else SLUICE_CONFIG, else the environment alone."""
    env = os.environ if env is None else env
    path = path or env.get("SLUICE_CONFIG")
    return load_file(path, env) if path else from_env(env)
