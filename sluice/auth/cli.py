"""`sluice keys create|list|rotate|revoke` against the configured storage (SPEC §1).

Keys are printed once, at creation or rotation. With `redis.url` configured, revocations and
rotations are published so running gateways drop the old key within a second.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from sluice import config
from sluice.auth.keys import KeyEvents, channel_for
from sluice.store import Store

T = TypeVar("T")


def _settings(path: str | None) -> config.Settings:
    try:
        return config.load(path)
    except config.ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(1)


def _run(path: str | None, work: Callable[[Store, KeyEvents], Awaitable[T]]) -> T:
    """Migrate SQLite if needed, then run `work` with the store and the event publisher."""
    from sluice import db

    settings = _settings(path)
    if settings.storage.url.startswith("sqlite"):
        db.upgrade(settings.storage.url)

    async def main() -> T:
        store = Store(settings.storage.url)
        events = KeyEvents(settings.redis.url, channel_for(settings.storage.url))
        try:
            return await work(store, events)
        finally:
            await events.close()
            await store.close()

    try:
        return asyncio.run(main())
    except Exception as exc:
        click.echo(f"storage error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


_config_option = click.option(
    "--config", "config_path", type=click.Path(), help="YAML config (else SLUICE_CONFIG)."
)


@click.group()
def keys() -> None:
    """Team API keys."""


@keys.command()
@_config_option
@click.option("--team", required=True, help="Team id (created if new).")
@click.option("--name", required=True, help="Display name.")
@click.option("--model", "models", multiple=True, help="Allowed model glob (repeatable).")
@click.option("--limits", default=None, help='JSON object, e.g. {"rpm": 60}.')
@click.option("--metadata", default=None, help="JSON object.")
def create(
    config_path: str | None,
    team: str,
    name: str,
    models: tuple[str, ...],
    limits: str | None,
    metadata: str | None,
) -> None:
    """Create a key and print it (shown this once)."""
    extra: dict[str, Any] = {
        "allowed_models": list(models) or None,
        "limits": json.loads(limits) if limits else None,
        "metadata": json.loads(metadata) if metadata else None,
    }

    async def work(store: Store, events: KeyEvents) -> None:
        key, rec = await store.create_key(team, name, **extra)
        await events.publish("create", rec)
        click.echo(f"id:  {rec.id}\nkey: {key}\n(store the key now: it is not shown again)")

    _run(config_path, work)


@keys.command("list")
@_config_option
def list_(config_path: str | None) -> None:
    """List keys (prefixes only, never secrets)."""

    async def work(store: Store, events: KeyEvents) -> None:
        for r in await store.list_keys():
            state = "active" if r.active else ("rotated" if r.rotated_to else "revoked")
            models = ",".join(r.allowed_models) if r.allowed_models else "*"
            click.echo(f"{r.id}  {r.prefix}…  team={r.team_id}  {state}  models={models}")

    _run(config_path, work)


@keys.command()
@_config_option
@click.argument("key_or_id")
def rotate(config_path: str | None, key_or_id: str) -> None:
    """Replace a key with a new one (printed once); the old one stops working."""

    async def work(store: Store, events: KeyEvents) -> None:
        old = await store.resolve(key_or_id)
        if old is None or not old.active:
            click.echo("no active key matches", err=True)
            sys.exit(1)
        key, new = await store.rotate(old)
        await events.publish("revoke", old)
        await events.publish("create", new)
        click.echo(f"id:  {new.id}\nkey: {key}\n(the old key {old.id} is revoked)")

    _run(config_path, work)


@keys.command()
@_config_option
@click.argument("key_or_id")
def revoke(config_path: str | None, key_or_id: str) -> None:
    """Revoke a key."""

    async def work(store: Store, events: KeyEvents) -> None:
        found = await store.resolve(key_or_id)
        if found is None:
            click.echo("no key matches", err=True)
            sys.exit(1)
        rec = await store.revoke(found.id)
        assert rec is not None
        await events.publish("revoke", rec)
        click.echo(f"revoked {rec.id}")

    _run(config_path, work)
