"""Users, sessions and login throttling against the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nurture.accounts import sessions, users
from nurture.accounts.sessions import Policy
from nurture.clock import VirtualClock
from nurture.database.engine import Database
from nurture.errors import Conflict, InvalidFields, NotFound, TooManyAttempts, Unauthenticated
from nurture.storage import audit
from nurture.storage import users as user_store

POLICY = Policy()
PASSWORD = "a-long-password"


def make(db: Database, clock: VirtualClock, name: str = "ada", role: str = "admin") -> None:
    users.create_user(db, name=name, role=role, password=PASSWORD, now=clock.now(), actor="t")


def login(
    db: Database,
    clock: VirtualClock,
    name: str = "ada",
    password: str = PASSWORD,
    addr: str | None = "198.51.100.1",
) -> tuple[str, sessions.Session]:
    return sessions.login(
        db, name=name, password=password, addr=addr, now=clock.now(), policy=POLICY
    )


def test_create_validates_every_field(db: Database, clock: VirtualClock) -> None:
    with pytest.raises(InvalidFields) as err:
        users.create_user(
            db, name=" bad name", role="root", password="short", now=clock.now(), actor="t"
        )
    assert [p.field for p in err.value.problems] == ["name", "role", "password"]
    make(db, clock)
    with pytest.raises(Conflict):
        make(db, clock)
    with db.read() as conn:
        stored = user_store.by_name(conn, "ada")
        entry = audit.recent(conn, target_kind="user")[0]
    assert stored is not None
    assert stored["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in stored["password_hash"]
    assert (entry["action"], entry["actor"], entry["detail"]) == (
        "user.created",
        "t",
        {"role": "admin"},
    )


def test_login_resolve_and_logout(db: Database, clock: VirtualClock) -> None:
    make(db, clock)
    token, session = login(db, clock)
    assert session.is_admin and session.actor == "user:ada"
    found = sessions.resolve(db, token, clock.now(), POLICY)
    assert found is not None and found.csrf_token == session.csrf_token
    assert sessions.resolve(db, token + "x", clock.now(), POLICY) is None
    sessions.logout(db, session, clock.now(), None)
    assert sessions.resolve(db, token, clock.now(), POLICY) is None


def test_a_new_password_or_disabling_ends_every_session(db: Database, clock: VirtualClock) -> None:
    make(db, clock)
    token, _ = login(db, clock)
    users.set_password(db, name="ada", password="another-long-one", now=clock.now(), actor="t")
    assert sessions.resolve(db, token, clock.now(), POLICY) is None
    with pytest.raises(Unauthenticated):
        login(db, clock)
    token, _ = login(db, clock, password="another-long-one")
    users.set_disabled(db, name="ada", disabled=True, now=clock.now(), actor="t")
    assert sessions.resolve(db, token, clock.now(), POLICY) is None
    with pytest.raises(Unauthenticated):
        login(db, clock, password="another-long-one")
    users.set_disabled(db, name="ada", disabled=False, now=clock.now(), actor="t")
    login(db, clock, password="another-long-one")
    with pytest.raises(NotFound):
        users.set_role(db, name="nobody", role="viewer", now=clock.now(), actor="t")
    users.set_role(db, name="ada", role="viewer", now=clock.now(), actor="t")
    assert not login(db, clock, password="another-long-one")[1].is_admin


def test_failures_from_one_address_slow_down_every_name(db: Database, clock: VirtualClock) -> None:
    make(db, clock)
    for i in range(6):
        with pytest.raises(Unauthenticated):
            login(db, clock, name=f"guess{i}", password="wrong-wrong")
    # The address is blocked now, whatever name it tries, even the right one.
    with pytest.raises(TooManyAttempts) as err:
        login(db, clock)
    assert err.value.retry_after == pytest.approx(1.0)
    # Another address is not.
    login(db, clock, addr="203.0.113.9")
    clock.advance(timedelta(seconds=1))
    login(db, clock)


def test_the_wait_doubles_up_to_fifteen_minutes(db: Database, clock: VirtualClock) -> None:
    make(db, clock)
    waits = []
    for _ in range(40):
        try:
            login(db, clock, password="wrong-wrong", addr=None)
        except TooManyAttempts as exc:
            waits.append(exc.retry_after)
            clock.advance(timedelta(seconds=exc.retry_after))
        except Unauthenticated:
            pass
    assert waits[:5] == [1, 2, 4, 8, 16]
    assert waits[-3:] == [900, 900, 900]


def test_idle_and_absolute_expiry(db: Database, clock: VirtualClock) -> None:
    make(db, clock)
    token, _ = login(db, clock)
    clock.advance(POLICY.idle - timedelta(seconds=1))
    assert sessions.resolve(db, token, clock.now(), POLICY) is not None  # touched now
    clock.advance(POLICY.idle - timedelta(seconds=1))
    assert sessions.resolve(db, token, clock.now(), POLICY) is not None
    clock.advance(POLICY.lifetime)
    assert sessions.resolve(db, token, clock.now(), POLICY) is None
