"""Creating and changing console users; every change is written to the audit log."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from nurture.accounts import passwords
from nurture.database.engine import Database
from nurture.errors import Conflict, FieldProblem, InvalidFields, NotFound
from nurture.storage import audit, sessions
from nurture.storage import users as store

ROLES = ("admin", "viewer")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")


def name_problem(name: str) -> str | None:
    if not NAME.match(name):
        return "1-100 letters, digits or . _ @ + -, starting with a letter or digit"
    return None


def _check(name: str, role: str, password: str) -> None:
    problems = []
    if (why := name_problem(name)) is not None:
        problems.append(FieldProblem("name", why))
    if role not in ROLES:
        problems.append(FieldProblem("role", "must be admin or viewer"))
    if (why := passwords.problem(password)) is not None:
        problems.append(FieldProblem("password", why))
    if problems:
        raise InvalidFields(problems)


def create_user(
    db: Database, *, name: str, role: str, password: str, now: datetime, actor: str
) -> int:
    _check(name, role, password)
    password_hash = passwords.hash_password(password)
    with db.begin() as conn:
        if store.by_name(conn, name) is not None:
            raise Conflict(f"a user named {name!r} already exists")
        user_id = store.create(conn, name=name, role=role, password_hash=password_hash, now=now)
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="user.created",
            target_kind="user",
            target_id=name,
            detail={"role": role},
        )
    return user_id


def _existing(conn: Any, name: str) -> dict[str, Any]:
    user = store.by_name(conn, name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def set_password(db: Database, *, name: str, password: str, now: datetime, actor: str) -> None:
    """New password; the user's sessions end (whoever stole one is logged out too)."""
    if (why := passwords.problem(password)) is not None:
        raise InvalidFields([FieldProblem("password", why)])
    password_hash = passwords.hash_password(password)
    with db.begin() as conn:
        user = _existing(conn, name)
        store.update_user(conn, user["id"], now, password_hash=password_hash)
        ended = sessions.end_for_user(conn, user["id"])
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="user.password_changed",
            target_kind="user",
            target_id=name,
            detail={"sessions_ended": ended},
        )


def set_role(db: Database, *, name: str, role: str, now: datetime, actor: str) -> None:
    if role not in ROLES:
        raise InvalidFields([FieldProblem("role", "must be admin or viewer")])
    with db.begin() as conn:
        user = _existing(conn, name)
        store.update_user(conn, user["id"], now, role=role)
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="user.role_changed",
            target_kind="user",
            target_id=name,
            detail={"from": user["role"], "to": role},
        )


def set_disabled(db: Database, *, name: str, disabled: bool, now: datetime, actor: str) -> None:
    """Disable (sessions end at once) or enable again."""
    with db.begin() as conn:
        user = _existing(conn, name)
        store.update_user(conn, user["id"], now, disabled_at=now if disabled else None)
        if disabled:
            sessions.end_for_user(conn, user["id"])
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="user.disabled" if disabled else "user.enabled",
            target_kind="user",
            target_id=name,
        )


def list_users(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return store.list_all(conn)
