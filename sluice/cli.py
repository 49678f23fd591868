"""The `sluice` command (SPEC §1): serve, check, db upgrade, keys, usage."""

from __future__ import annotations

import math
import os
import sys

import click

from sluice import __version__, config


def _load(path: str | None) -> config.Settings:
    try:
        return config.load(path)
    except config.ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="sluice")
def main() -> None:
    """Sluice: one fast, OpenAI-compatible endpoint in front of many LLM providers."""


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(), help="YAML config (else SLUICE_CONFIG)."
)
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8787).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
def serve(config_path: str | None, host: str | None, port: int | None, workers: int) -> None:
    """Start the gateway."""
    import uvicorn

    from sluice.drain import BACKSTOP_S, run_workers
    from sluice.server import SluiceHttpProtocol

    settings = _load(config_path)
    if config_path:
        os.environ["SLUICE_CONFIG"] = os.path.abspath(config_path)
    if settings.storage.url.startswith("sqlite"):
        # SQLite migrates itself here, once, before any worker starts (in a child process, so
        # Alembic never sits in the server's memory); PostgreSQL is migrated by
        # `sluice db upgrade` as a deploy step.
        from sluice import db as storage

        try:
            storage.ensure_current_apart(settings.storage.url)
        except RuntimeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    if workers > 1:
        _prepare_workers(settings)
    config = uvicorn.Config(
        "sluice.app:factory",
        factory=True,
        host=host or settings.server.host,
        port=port or settings.server.port,
        workers=workers if workers > 1 else None,
        loop="uvloop",
        http=SluiceHttpProtocol,  # sluice/server.py: httptools, whole answers in one write
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # no proxy header is trusted (Request.client_ip); saves a wrapper
        server_header=False,
        date_header=False,
        log_level="warning",
        # The gateway ends in-flight requests itself at drain_timeout_s (sluice/drain.py);
        # uvicorn's own cancel is only the backstop.
        timeout_graceful_shutdown=math.ceil(settings.server.drain_timeout_s + BACKSTOP_S),
    )
    if workers > 1:
        run_workers(config)
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: it could not start (e.g. the port is taken)


def _prepare_workers(settings: config.Settings) -> None:
    """Several workers: one metrics directory they all write to (prometheus multiprocess
    mode). SQLite is migrated once before this (in `serve`), not raced by every worker."""
    import tempfile

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import atexit
        import shutil

        path = tempfile.mkdtemp(prefix="sluice-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        atexit.register(shutil.rmtree, path, True)


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(), help="YAML config (else SLUICE_CONFIG)."
)
def check(config_path: str | None) -> None:
    """Validate the configuration and print the resolved providers and routes."""
    from sluice.routing import Router

    settings = _load(config_path)
    configured = {n for n, p in settings.providers.items() if p.configured}
    click.echo("providers:")
    for name, p in settings.providers.items():
        state = "available" if name in configured else "unavailable (no credentials)"
        base = p.base_url or "(default base URL)"
        click.echo(f"  {name:<12} kind={p.kind:<10} {base}  {state}")
    click.echo("routes:")
    for i, m in enumerate(settings.models):
        what = f"name {m.name!r}" if m.name else f"match {m.match!r}"
        if m.targets:
            dest = ", ".join(f"{t.provider}:{t.model or '(same)'}" for t in m.targets)
            click.echo(f"  models[{i}] {what} → {m.strategy}: {dest}")
        else:
            click.echo(f"  models[{i}] {what} → {m.provider}" + (f":{m.model}" if m.model else ""))
    click.echo(f"default_model: {settings.default_model}")
    Router(settings, configured)  # compiles every glob: a bad one fails here
    click.echo("configuration OK")


@main.group()
def db() -> None:
    """Storage migrations."""


@db.command("upgrade")
@click.option(
    "--config", "config_path", type=click.Path(), help="YAML config (else SLUICE_CONFIG)."
)
def db_upgrade(config_path: str | None) -> None:
    """Apply every migration to the configured storage (PostgreSQL: run before serving)."""
    from sluice import db as storage

    settings = _load(config_path)
    storage.upgrade(settings.storage.url)
    click.echo("storage is at the latest schema")


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(), help="YAML config (else SLUICE_CONFIG)."
)
@click.option(
    "--group-by",
    type=click.Choice(["model", "provider", "team", "key", "user", "day"]),
    default="model",
    show_default=True,
)
@click.option("--from", "since", default=None, help="Start (ISO 8601 or epoch seconds).")
@click.option("--to", "until", default=None, help="End (exclusive; a bare date includes it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def usage(
    config_path: str | None, group_by: str, since: str | None, until: str | None, as_json: bool
) -> None:
    """Usage totals from the configured storage (what GET /admin/usage returns)."""
    import asyncio

    import orjson

    from sluice import usage_query
    from sluice.usage_store import engine_for

    settings = _load(config_path)
    try:
        start = usage_query.parse_time(since, "--from")
        end = usage_query.parse_time(until, "--to", end=True)
    except usage_query.QueryError as exc:
        raise click.BadParameter(str(exc)) from None

    async def run() -> dict[str, object]:
        engine = engine_for(settings.storage.url)
        try:
            return await usage_query.summary(engine, group_by, start, end)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    click.echo(orjson.dumps(result).decode() if as_json else usage_query.table(result))


def _add_keys() -> None:
    from sluice.auth.cli import keys

    main.add_command(keys)


_add_keys()
