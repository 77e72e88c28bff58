"""``nurture jobs list | retry ID | cancel ID``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from nurture.bootstrap import Container
from nurture.cli.common import console, container, fail
from nurture.errors import NurtureError
from nurture.jobs import manage


@contextmanager
def _container() -> Iterator[Container]:
    c = container()
    try:
        yield c
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()


app = typer.Typer(help="Scheduled jobs: list them, retry dead ones, cancel.", no_args_is_help=True)


def _line(row: dict[str, Any]) -> str:
    error = f"\t{row['last_error']}" if row["last_error"] else ""
    return (
        f"{row['id']}\t{row['status']}\t{row['kind']}\t{row['key']}\t"
        f"{row['run_at']:%Y-%m-%dT%H:%M:%SZ}\tattempts {row['attempts']}{error}"
    )


@app.command("list")
def list_cmd(
    status: str | None = typer.Option(
        None, "--status", help="Only this status: " + ", ".join(manage.STATUSES)
    ),
    kind: str | None = typer.Option(None, "--kind", help="Only this job kind."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
) -> None:
    """List jobs, newest first."""
    with _container() as c:
        rows = manage.list_jobs(c.db, status=status, kind=kind, limit=limit)
    if not rows:
        console.print("no jobs", highlight=False)
    for row in rows:
        console.print(_line(row), highlight=False, soft_wrap=True)


@app.command("retry")
def retry_cmd(job_id: int = typer.Argument(..., help="The job's id.")) -> None:
    """Run a dead (or failed, waiting) job again now, with fresh attempts."""
    with _container() as c:
        row = manage.retry_job(c.db, job_id, c.clock.now())
    console.print(f"job {job_id} scheduled again: {_line(row)}", highlight=False, soft_wrap=True)


@app.command("cancel")
def cancel_cmd(job_id: int = typer.Argument(..., help="The job's id.")) -> None:
    """Cancel a job: it will not start again (a running attempt finishes)."""
    with _container() as c:
        row = manage.cancel_job(c.db, job_id, c.clock.now())
    console.print(f"job {job_id} cancelled: {_line(row)}", highlight=False, soft_wrap=True)
