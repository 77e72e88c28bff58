"""``nurture users create NAME --role admin|viewer | list | password | role | disable | enable``.

Passwords are read from a hidden prompt (asked twice) or, for scripts, from the first line of
standard input (``--password-stdin``); never from an argument, which other users can see.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from nurture.accounts import users
from nurture.bootstrap import Container
from nurture.cli.common import console, container, fail
from nurture.errors import InvalidFields, NurtureError

app = typer.Typer(help="People who may log in to the console (/console).", no_args_is_help=True)

ROLE = typer.Option(..., "--role", help="admin (may change things) or viewer (reads only)")
STDIN = typer.Option(
    False, "--password-stdin", help="Read the password from the first line of standard input."
)


@contextmanager
def _container() -> Iterator[Container]:
    c = container()
    try:
        yield c
    except InvalidFields as exc:
        fail("; ".join(f"{p.field}: {p.message}" for p in exc.problems))
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in a bare container
        return "cli:unknown"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    second = typer.prompt("Repeat the password", hide_input=True)
    if first != second:
        fail("the two passwords differ")
    return str(first)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="The name to log in with."),
    role: str = ROLE,
    password_stdin: bool = STDIN,
) -> None:
    """Create a user; asks for the password."""
    password = _password(password_stdin)
    with _container() as c:
        users.create_user(
            c.db, name=name, role=role, password=password, now=c.clock.now(), actor=_actor()
        )
    console.print(f"created {role} {name}; log in at /console", highlight=False)


@app.command("list")
def list_cmd() -> None:
    """Every user with role and state."""
    with _container() as c:
        rows = users.list_users(c.db)
    if not rows:
        console.print("no users; create one with: nurture users create NAME --role admin")
    for row in rows:
        state = "disabled" if row["disabled_at"] else "active"
        console.print(f"{row['name']}\t{row['role']}\t{state}", highlight=False)


@app.command("password")
def password_cmd(name: str, password_stdin: bool = STDIN) -> None:
    """Set a new password; the user's sessions end."""
    password = _password(password_stdin)
    with _container() as c:
        users.set_password(c.db, name=name, password=password, now=c.clock.now(), actor=_actor())
    console.print(f"new password set for {name}; their sessions ended", highlight=False)


@app.command("role")
def role_cmd(name: str, role: str = typer.Argument(..., help="admin or viewer")) -> None:
    """Change a user's role."""
    with _container() as c:
        users.set_role(c.db, name=name, role=role, now=c.clock.now(), actor=_actor())
    console.print(f"{name} is now {role}", highlight=False)


@app.command("disable")
def disable(name: str) -> None:
    """Stop a user from logging in; their sessions end at once."""
    with _container() as c:
        users.set_disabled(c.db, name=name, disabled=True, now=c.clock.now(), actor=_actor())
    console.print(f"{name} is disabled", highlight=False)


@app.command("enable")
def enable(name: str) -> None:
    """Let a disabled user log in again."""
    with _container() as c:
        users.set_disabled(c.db, name=name, disabled=False, now=c.clock.now(), actor=_actor())
    console.print(f"{name} is enabled", highlight=False)
