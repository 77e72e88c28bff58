"""Logging in and out, finding the session of a request, and slowing down password guessing.

A session is a random 256-bit token; the cookie carries it (signed by the web layer) and the
database keeps only its SHA-256, with the user, a CSRF token and two deadlines: an absolute one
(``lifetime``) and an idle one (``idle``). Server-side rows rather than a stateless signed
cookie because logout, a password change or disabling a person must end a session at once.

Throttling: every failed login counts against the name and against the client address. The
first ``FREE_FAILURES`` cost nothing; each further one doubles the wait (1 s, 2 s, 4 s, ... up
to 15 minutes) during which attempts for that name or from that address are refused before the
password is even checked. A successful login clears the name's count.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from nurture.accounts import passwords
from nurture.database.engine import Database
from nurture.errors import TooManyAttempts, Unauthenticated
from nurture.storage import audit, login_failures
from nurture.storage import sessions as store
from nurture.storage import users as user_store

log = logging.getLogger("nurture.console")

FREE_FAILURES = 5
MAX_BLOCK_SECONDS = 15 * 60
# last_seen_at is written at most this often, so reading pages does not write on every view.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Policy:
    lifetime: timedelta = timedelta(hours=12)
    idle: timedelta = timedelta(hours=2)


@dataclass(frozen=True)
class Session:
    token_hash: str
    user_id: int
    name: str
    role: str
    csrf_token: str
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        return f"user:{self.name}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _throttle_keys(name: str, addr: str | None) -> list[str]:
    keys = [f"name:{name.lower()[:150]}"]
    if addr:
        keys.append(f"addr:{addr[:150]}")
    return keys


def check_throttle(db: Database, name: str, addr: str | None, now: datetime) -> None:
    """Raise ``TooManyAttempts`` while the name or the address is blocked."""
    with db.read() as conn:
        until = login_failures.blocked_until(conn, _throttle_keys(name, addr))
    if until is not None and until > now:
        wait = (until - now).total_seconds()
        raise TooManyAttempts(
            f"too many failed logins; try again in {max(1, round(wait))} s", retry_after=wait
        )


def _record_failure(db: Database, keys: list[str], now: datetime) -> None:
    with db.begin() as conn:
        for key in keys:
            row = login_failures.get(conn, key)
            failures = (row["failures"] if row else 0) + 1
            until = None
            if failures > FREE_FAILURES:
                wait = min(2 ** (failures - FREE_FAILURES - 1), MAX_BLOCK_SECONDS)
                until = now + timedelta(seconds=wait)
            login_failures.save(conn, key, failures, now, until)


def login(
    db: Database,
    *,
    name: str,
    password: str,
    addr: str | None,
    now: datetime,
    policy: Policy,
) -> tuple[str, Session]:
    """The new session's token (for the cookie) and the session; blocking (Argon2 is slow on
    purpose: call it from a thread)."""
    check_throttle(db, name, addr, now)
    with db.read() as conn:
        user = user_store.by_name(conn, name)
    ok = passwords.verify(user["password_hash"] if user else None, password)
    if not ok or user is None or user["disabled_at"] is not None:
        _record_failure(db, _throttle_keys(name, addr), now)
        # The name is logged (it may be a typo of a real one); the password never is.
        log.warning(
            "console login failed",
            extra={"action": "console.login_failed", "user": name[:100], "client": addr},
        )
        raise Unauthenticated("wrong name or password")
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + policy.lifetime
    with db.begin() as conn:
        login_failures.clear(conn, _throttle_keys(name, None))
        if passwords.needs_rehash(user["password_hash"]):
            user_store.update_user(
                conn, user["id"], now, password_hash=passwords.hash_password(password)
            )
        store.prune(conn, now)
        store.create(
            conn,
            token_hash=token_hash(token),
            user_id=user["id"],
            csrf_token=csrf,
            now=now,
            expires_at=expires,
            client_addr=addr,
        )
        audit.record(
            conn,
            at=now,
            actor=f"user:{user['name']}",
            action="console.login",
            target_kind="user",
            target_id=user["name"],
            client_addr=addr,
        )
    session = Session(token_hash(token), user["id"], user["name"], user["role"], csrf, expires)
    return token, session


def resolve(db: Database, token: str, now: datetime, policy: Policy) -> Session | None:
    """The live session for ``token``, or None (unknown, expired, idle too long, disabled)."""
    hashed = token_hash(token)
    with db.read() as conn:
        row = store.find(conn, hashed)
    if row is None or row["disabled_at"] is not None:
        return None
    if row["expires_at"] <= now or row["last_seen_at"] + policy.idle <= now:
        return None
    if now - row["last_seen_at"] >= TOUCH_EVERY:
        with db.begin() as conn:
            store.touch(conn, hashed, now)
    return Session(
        hashed, row["user_id"], row["name"], row["role"], row["csrf_token"], row["expires_at"]
    )


def logout(db: Database, session: Session, now: datetime, addr: str | None) -> None:
    with db.begin() as conn:
        store.end(conn, session.token_hash)
        audit.record(
            conn,
            at=now,
            actor=session.actor,
            action="console.logout",
            target_kind="user",
            target_id=session.name,
            client_addr=addr,
        )
