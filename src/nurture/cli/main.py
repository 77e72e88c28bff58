"""Top-level commands: up, serve, worker, migrate, check, keys."""

from __future__ import annotations

import asyncio
import secrets as pysecrets
from pathlib import Path
from typing import Any

import typer

from nurture import logs
from nurture.bootstrap import build_processor, build_worker_loops
from nurture.cli import backup as backup_cli
from nurture.cli import commerce as commerce_cli
from nurture.cli import endpoints as endpoints_cli
from nurture.cli import jobs as jobs_cli
from nurture.cli import privacy as privacy_cli
from nurture.cli import retention as retention_cli
from nurture.cli import rules as rules_cli
from nurture.cli import simulate as simulate_cli
from nurture.cli import templates as templates_cli
from nurture.cli import users as users_cli
from nurture.cli.common import console, container, fail
from nurture.config import Settings
from nurture.database import migrate
from nurture.errors import NurtureError
from nurture.runtime import Waker, Worker, run, serve, work
from nurture.storage import api_keys

app = typer.Typer(
    name="nurture",
    help="Webhook-driven marketing automation: receive, decide, send. "
    "Configuration comes from NURTURE_* environment variables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Admin API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_cli.app, name="jobs")
rules_cli.register(app)
privacy_cli.register(rules_cli.contacts_app)
backup_cli.register(app)
commerce_cli.register(app)
app.add_typer(templates_cli.app, name="templates")
app.add_typer(endpoints_cli.app, name="endpoints")
app.add_typer(users_cli.app, name="users")
simulate_cli.register(app)
retention_cli.register(app)

HOST = typer.Option(None, "--host", help="Interface to listen on [env NURTURE_HOST, 127.0.0.1]")
PORT = typer.Option(None, "--port", help="Port to listen on [env NURTURE_PORT, 8000]")
DRY_RUN = typer.Option(
    False,
    "--dry-run",
    help="Record every e-mail, SMS and webhook instead of sending it [env NURTURE_DRY_RUN]",
)


def _where(s: Settings) -> str:
    db = s.database_url.split("://", 1)[0].replace("+psycopg", "")
    proxies = ", ".join(s.trusted_proxy_list)
    behind = f", client addresses from proxies {proxies}" if proxies else ""
    return f"http://{s.host}:{s.port} ({db}{behind})"


def _serve_options(s: Settings) -> dict[str, Any]:
    return {
        "trusted_proxies": s.trusted_proxy_list,
        "grace_seconds": s.shutdown_grace_seconds,
    }


@app.command()
def up(
    host: str | None = HOST,
    port: int | None = PORT,
    migrate_first: bool = typer.Option(True, "--migrate/--no-migrate", help="Migrate first."),
    dry_run: bool = DRY_RUN,
) -> None:
    """Run the API and a worker in one process (the single-machine default)."""
    from nurture.web.app import create_app

    c = container(host=host, port=port, dry_run=dry_run or None)
    logs.configure(c.settings.log_level)
    if migrate_first:
        _migrate(c)
    waker = Waker()
    loops = build_worker_loops(c)
    worker = Worker(c, build_processor(c), waker, extra_loops=loops)
    web = create_app(c, on_commit=waker.notify)
    console.print(
        f"nurture listening on {_where(c.settings)}, worker in-process",
        highlight=False,
    )
    run(serve(web, c.settings.host, c.settings.port, worker, **_serve_options(c.settings)))


@app.command("serve")
def serve_cmd(host: str | None = HOST, port: int | None = PORT) -> None:
    """Run only the API (start as many as you like against one PostgreSQL)."""
    from nurture.web.app import create_app

    c = container(host=host, port=port)
    logs.configure(c.settings.log_level)
    web = create_app(c)
    console.print(
        f"nurture API listening on {_where(c.settings)}",
        highlight=False,
    )
    run(serve(web, c.settings.host, c.settings.port, **_serve_options(c.settings)))


@app.command()
def worker(dry_run: bool = DRY_RUN) -> None:
    """Run only a worker: processes events and due jobs until SIGTERM."""
    c = container(dry_run=dry_run or None)
    logs.configure(c.settings.log_level)
    console.print("nurture worker started", highlight=False)
    loops = build_worker_loops(c)
    asyncio.run(work(Worker(c, build_processor(c), Waker(), loops)))


def _migrate(c: object) -> None:
    from nurture.bootstrap import Container

    assert isinstance(c, Container)
    try:
        migrate.upgrade(c.db)
    except NurtureError as exc:
        fail(str(exc))


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the database schema to the latest revision."""
    c = container()
    _migrate(c)
    console.print(f"database at revision {migrate.current_revision(c.db)}", highlight=False)


@app.command()
def check(
    directory: Path | None = typer.Argument(None, help="Automation folder to validate"),
) -> None:
    """Validate the configuration without starting anything (exit 1 on any error)."""
    c = container()
    try:
        automation = rules_cli.check_automation(directory or c.settings.automation_dir)
        from nurture.pack import load_pack
        from nurture.providers.catalog import build_sources

        build_sources(c.settings, load_pack(directory or c.settings.automation_dir))
        from nurture.sequences import check_automation as check_sequences

        automation += ", " + check_sequences(directory or c.settings.automation_dir)
        from nurture.integrations.outbound import check_endpoints

        automation += ", " + check_endpoints(
            load_pack(directory or c.settings.automation_dir), c.settings
        )
    except NurtureError as exc:
        fail(str(exc))
    console.print(automation, highlight=False)
    console.print(
        f"configuration OK (database {c.settings.database_url.split('://')[0]})", highlight=False
    )


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="A label for the key, e.g. 'power-automate'."),
) -> None:
    """Create an admin API key; it is printed once, as the last word of the output."""
    c = container()
    if c.db.is_sqlite:
        _migrate(c)  # a fresh SQLite file: creating the first key should just work
    key = "nk_" + pysecrets.token_urlsafe(32)
    with c.db.begin() as conn:
        key_id = api_keys.create(conn, name, key, c.clock.now())
    console.print(
        f"created API key {name!r} (id {key_id}); it is shown only now: {key}",
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (names and prefixes only)."""
    c = container()
    with c.db.read() as conn:
        for row in api_keys.list_all(conn):
            console.print(
                f"{row['id']}\t{row['name']}\t{row['prefix']}…\t{row['created_at']:%Y-%m-%d}",
                highlight=False,
            )


def main() -> None:
    app()
