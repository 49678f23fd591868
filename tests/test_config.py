"""Configuration: substitution, strict validation naming the path, env-only mode, `sluice check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice import config
from sluice.config import ConfigError
from sluice.routing import Router


def test_substitution_with_defaults() -> None:
    raw = {"a": "${X}", "b": "pre-${MISSING:-dflt}-post", "c": ["${X}"], "d": 3}
    assert config.substitute(raw, {"X": "1"}) == {
        "a": "1",
        "b": "pre-dflt-post",
        "c": ["1"],
        "d": 3,
    }


def test_yaml_file_with_env(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "server: {port: '${PORT:-9000}'}\n"
        "providers:\n  openai: {kind: openai, api_key: '${OPENAI_API_KEY}'}\n"
        "models:\n  - {match: 'gpt-*', provider: openai}\n"
        "auth: {tokens: ['${AUTH_TOKEN}']}\n"
    )
    s = config.load_file(p, {"OPENAI_API_KEY": "sk-x", "AUTH_TOKEN": ""})
    assert s.server.port == 9000
    assert s.providers["openai"].api_key == "sk-x"
    assert s.auth.tokens == []  # an unset variable leaves no empty token behind


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (
            {"providers": {"p": {"kind": "openai"}}, "models": [{"match": "a", "provider": "q"}]},
            "models[0].provider",
        ),
        (
            {
                "models": [{"match": "a", "provider": "p", "bogus": 1}],
                "providers": {"p": {"kind": "openai"}},
            },
            "models[0]",
        ),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"providers": {"p": {"kind": "nope"}}}, "providers.p.kind"),
        (
            {
                "providers": {"p": {"kind": "openai"}},
                "models": [{"name": "s", "targets": [{"provider": "x"}]}],
            },
            "models[0].targets[0].provider",
        ),
        ({"unknown_top": 1}, "unknown_top"),
        ({"auth": {"jwt": {"algorithms": ["HS256"]}}}, "auth.jwt.algorithms[0]"),
    ],
    ids=[
        "unknown-provider",
        "unknown-key",
        "wrong-type",
        "unknown-kind",
        "unknown-target",
        "top-level",
        "hmac-alg",
    ],
)
def test_errors_name_the_path(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_mapping(data)
    assert path in str(err.value)


def test_env_only_mode_default_routes() -> None:
    env = {"OPENAI_API_KEY": "sk-a"}
    s = config.from_env(env)
    configured = {n for n, p in s.providers.items() if p.configured}
    r = Router(s, configured)
    assert r.plan("gpt-4o").targets[0].provider == "openai"
    assert r.plan("o3-mini").targets[0].provider == "openai"
    assert r.plan("text-embedding-3-small").targets[0].provider == "openai"
    assert r.plan("openai/gpt-4o").targets[0].model == "gpt-4o"  # P/model


def test_env_only_openrouter_takes_everything() -> None:
    """Seed 000: with only OpenRouter configured, every model goes there, names intact."""
    s = config.from_env({"OPENROUTER_API_KEY": "sk-or"})
    r = Router(s, {n for n, p in s.providers.items() if p.configured})
    for model in ("gpt-4o", "anthropic/claude-3.5-sonnet", "meta-llama/llama-3-70b"):
        t = r.plan(model).targets[0]
        assert (t.provider, t.model) == ("openrouter", model)
    assert s.providers["openrouter"].base_url == "https://openrouter.ai/api/v1"


def test_env_only_unconfigured_provider_is_listed_not_routed_to_404() -> None:
    s = config.from_env({})
    assert "openai" in s.providers and not s.providers["openai"].configured
    r = Router(s, set())
    assert r.plan("gpt-4o").targets[0].provider == "openai"  # → 503 at request time
    assert not r.available("openai")


def test_env_overlays(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("logging: {audit: true}\n")
    s = config.load_file(p, {"AUDIT_LOG": "false", "SLUICE_DATABASE_URL": "sqlite:///x.db"})
    assert s.logging.audit is False
    assert s.storage.url == "sqlite:///x.db"


def _check(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_check_cli_ok_and_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "providers:\n  openai: {kind: openai, api_key: sk-1}\n"
        "models:\n  - {match: 'gpt-*', provider: openai}\n"
        "  - name: smart\n    targets: [{provider: openai, model: gpt-4o}]\n"
    )
    ok = _check(["--config", str(good)])
    assert ok.returncode == 0, ok.stderr
    assert "openai" in ok.stdout and "smart" in ok.stdout and "sk-1" not in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  openai: {kind: openai}\nmodels:\n  - {match: x, provider: nope}\n"
    )
    res = _check(["--config", str(bad)])
    assert res.returncode == 1
    assert "models[0].provider" in res.stderr


def test_env_only_cloudflare_default_model() -> None:
    """Seed 001: Workers AI is the default provider with Llama 4 Scout."""
    s = config.from_env({"CLOUDFLARE_API_TOKEN": "t", "CLOUDFLARE_ACCOUNT_ID": "acc"})
    r = Router(s, {n for n, p in s.providers.items() if p.configured})
    assert s.default_model == "@cf/meta/llama-4-scout-17b-16e-instruct"
    assert r.plan(None).targets[0].provider == "cloudflare"
    assert r.plan("@cf/meta/llama-3.1-8b-instruct").targets[0].provider == "cloudflare"
