"""Contacts and their identities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    String,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    type_coerce,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from nurture.core.contacts import ContactState
from nurture.database.encode import json_text
from nurture.schema.tables import contacts, identities
from nurture.storage.dialect import insert_ignore

_STATE_COLUMNS = (
    "first_name",
    "last_name",
    "phone",
    "time_zone",
    "attributes",
    "tags",
    "segments",
    "status",
    "score",
    "engagement",
    "rfm",
    "last_event_at",
)


def _state(m: Mapping[Any, Any], idents: dict[str, str]) -> ContactState:
    return ContactState(
        id=m["id"],
        email=m["email"],
        first_name=m["first_name"],
        last_name=m["last_name"],
        phone=m["phone"],
        time_zone=m["time_zone"],
        attributes=dict(m["attributes"] or {}),
        tags=list(m["tags"] or []),
        segments=dict(m["segments"] or {}),
        status=m["status"],
        score=m["score"],
        engagement=dict(m["engagement"] or {}),
        rfm=m["rfm"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        last_event_at=m["last_event_at"],
        identities=idents,
    )


# PostgreSQL: the processor reads, creates and writes back a batch's contacts in one statement
# each, at the driver level: arrays, not an expanding IN list (past psycopg's query cache at 50
# parameters: re-parsed every batch); one JSON document, not an executemany (one UPDATE run and
# planned per contact). A JSON null in the document reads as SQL NULL, and Core writes ``None``
# as JSON ``null`` (``rfm`` tells the two apart): ``coalesce`` writes what Core would.
_JSON = ("attributes", "tags", "segments", "engagement", "rfm")
_PG_TYPES = {
    **dict.fromkeys(("first_name", "last_name", "phone", "time_zone", "status"), "text"),
    **dict.fromkeys(_JSON, "jsonb"),
    **{"score": "integer", "last_event_at": "timestamptz"},
}
_READ = ("id", "email", *_STATE_COLUMNS, "created_at", "updated_at")
_PG_LOAD = (
    f"SELECT {', '.join(f'c.{c}::text' if c in _JSON else f'c.{c}' for c in _READ)}, "
    "(SELECT json_object_agg(i.kind, i.value) FROM identities AS i WHERE i.contact_id = c.id)"
    "::text FROM contacts AS c WHERE c.email = ANY(%s::text[]) OR c.id = ANY(%s::bigint[])"
)
_PG_CREATE = (
    f"INSERT INTO contacts (email, {', '.join(_STATE_COLUMNS)}, created_at, updated_at) SELECT "
    f"t.email, {', '.join(f'%s::{_PG_TYPES[c]}' for c in _STATE_COLUMNS)}, %s, %s "
    "FROM unnest(%s::text[]) WITH ORDINALITY AS t(email, n) ORDER BY t.n RETURNING id"
)
_PG_SAVE = (
    "UPDATE contacts AS c SET email = v.email, "
    + ", ".join(
        f"{c} = coalesce(v.{c}, 'null')" if c in _JSON else f"{c} = v.{c}" for c in _STATE_COLUMNS
    )
    + ", updated_at = %s FROM json_to_recordset(%s::json) AS v(id bigint, email text, "
    + ", ".join(f"{c} {_PG_TYPES[c]}" for c in _STATE_COLUMNS)
    + ") WHERE c.id = v.id"
)


def _load_many_postgresql(
    conn: Connection, emails: Sequence[str], ids: Sequence[int]
) -> list[ContactState]:
    out = []
    for r in conn.exec_driver_sql(_PG_LOAD, (list(emails), list(ids))).all():
        m = dict(zip(_READ, r, strict=False))
        for name in _JSON:
            m[name] = orjson.loads(m[name]) if m[name] is not None else None
        for name in ("created_at", "updated_at", "last_event_at"):
            m[name] = m[name].astimezone(UTC) if m[name] is not None else None
        out.append(_state(m, orjson.loads(r[-1]) if r[-1] is not None else {}))
    return out


def load_many(
    conn: Connection, *, emails: Sequence[str] = (), ids: Sequence[int] = ()
) -> list[ContactState]:
    """Contacts by e-mail and/or id, with their identities: two queries (PostgreSQL: one)."""
    if not emails and not ids:
        return []
    if conn.dialect.name == "postgresql":
        return _load_many_postgresql(conn, emails, ids)
    conds = []
    if emails:
        conds.append(contacts.c.email.in_(list(emails)))
    if ids:
        conds.append(contacts.c.id.in_(list(ids)))
    rows = conn.execute(select(contacts).where(or_(*conds))).all()
    idents: dict[int, dict[str, str]] = {r.id: {} for r in rows}
    if idents:
        for r in conn.execute(
            select(identities.c.contact_id, identities.c.kind, identities.c.value).where(
                identities.c.contact_id.in_(list(idents))
            )
        ):
            idents[r.contact_id][r.kind] = r.value
    return [_state(r._mapping, idents[r.id]) for r in rows]


def ids_by_identities(
    conn: Connection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """``{(kind, value): contact_id}`` for the identities that exist."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in pairs:
        by_kind.setdefault(kind, []).append(value)
    out: dict[tuple[str, str], int] = {}
    for kind, values in by_kind.items():
        rows = conn.execute(
            select(identities.c.value, identities.c.contact_id).where(
                identities.c.kind == kind, identities.c.value.in_(values)
            )
        )
        for r in rows:
            out[(kind, r.value)] = r.contact_id
    return out


def create_many(
    conn: Connection, emails: Sequence[str | None], now: datetime
) -> list[ContactState]:
    """Insert new contacts in one statement; the states come back in the order given."""
    if not emails:
        return []
    blank = ContactState(id=0, email=None)
    base = {name: getattr(blank, name) for name in _STATE_COLUMNS}
    if conn.dialect.name == "postgresql":
        _utc(now)
        blanks = [json_text(v) if c in _JSON else v for c, v in base.items()]
        result = conn.exec_driver_sql(_PG_CREATE, (*blanks, now, now, list(emails)))
        # The ids come from the sequence in the order the rows are inserted (ORDER BY t.n), as
        # SQLAlchemy's own "insertmanyvalues" relies on: sorted, they line up with ``emails``.
        ids = sorted(r[0] for r in result)
    else:
        rows = [{**base, "email": e, "created_at": now, "updated_at": now} for e in emails]
        result = conn.execute(
            insert(contacts).returning(contacts.c.id, sort_by_parameter_order=True), rows
        )
        ids = [r.id for r in result]
    return [
        ContactState(id=i, email=e, created_at=now, updated_at=now, is_new=True)
        for i, e in zip(ids, emails, strict=True)
    ]


def save_many(conn: Connection, states: Sequence[ContactState], now: datetime) -> None:
    """Write back every changed contact in one statement (SQLite: one executemany)."""
    if not states:
        return
    if conn.dialect.name == "postgresql":
        _utc(now)
        for state in states:
            _utc(state.last_event_at)
        # orjson writes the dataclasses themselves; the record type takes the columns it names.
        conn.exec_driver_sql(_PG_SAVE, (now, json_text(states)))
        for state in states:
            state.updated_at = now
            state.dirty = False
        return
    params = []
    for state in states:
        row = {f"v_{name}": getattr(state, name) for name in _STATE_COLUMNS}
        row.update(v_email=state.email, v_updated_at=now, b_id=state.id)
        params.append(row)
        state.updated_at = now
        state.dirty = False
    names = (*_STATE_COLUMNS, "email", "updated_at")
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in names}
    conn.execute(update(contacts).where(contacts.c.id == bindparam("b_id")).values(values), params)


def _utc(value: datetime | None) -> None:
    # The same refusal as ``UtcDateTime``: a naive time would silently shift by the offset.
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive value for a UTC column: {value!r}")


def _identities(conn: Connection, contact_id: int) -> dict[str, str]:
    rows = conn.execute(
        select(identities.c.kind, identities.c.value).where(identities.c.contact_id == contact_id)
    )
    return {r.kind: r.value for r in rows}


def load(conn: Connection, contact_id: int) -> ContactState | None:
    row = conn.execute(select(contacts).where(contacts.c.id == contact_id)).first()
    return _state(row._mapping, _identities(conn, contact_id)) if row else None


def load_by_email(conn: Connection, email: str) -> ContactState | None:
    row = conn.execute(select(contacts).where(contacts.c.email == email)).first()
    return _state(row._mapping, _identities(conn, row.id)) if row else None


def create(
    conn: Connection, email: str | None, now: datetime, traits: dict[str, Any] | None = None
) -> ContactState:
    state = ContactState(id=0, email=email, created_at=now, updated_at=now, is_new=True)
    if traits:
        state.apply_traits(traits)
    values = {name: getattr(state, name) for name in _STATE_COLUMNS}
    values.update(email=email, created_at=now, updated_at=now)
    state.id = conn.execute(insert(contacts).values(**values).returning(contacts.c.id)).scalar_one()
    state.dirty = False
    return state


def save(conn: Connection, state: ContactState, now: datetime) -> None:
    values = {name: getattr(state, name) for name in _STATE_COLUMNS}
    values.update(email=state.email, updated_at=now)
    conn.execute(update(contacts).where(contacts.c.id == state.id).values(**values))
    state.updated_at = now
    state.dirty = False


def add_identities(conn: Connection, contact_id: int, idents: dict[str, str]) -> None:
    """Attach identities; one already owned by another contact stays with that contact."""
    if idents:
        conn.execute(
            insert_ignore(conn, identities),
            [{"contact_id": contact_id, "kind": k, "value": v} for k, v in idents.items()],
        )


def search(
    conn: Connection, query: str | None, *, after_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    stmt = select(contacts).order_by(contacts.c.id).limit(limit)
    if query:
        like = f"%{query.strip().lower()}%"
        stmt = stmt.where(
            or_(
                contacts.c.email.like(like),
                contacts.c.first_name.ilike(like),
                contacts.c.last_name.ilike(like),
                cast(contacts.c.tags, String).like(like),
                contacts.c.id.in_(
                    select(identities.c.contact_id).where(identities.c.value.ilike(like))
                ),
            )
        )
    if after_id is not None:
        stmt = stmt.where(contacts.c.id > after_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def get_row(conn: Connection, contact_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(contacts).where(contacts.c.id == contact_id)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["identities"] = _identities(conn, contact_id)
    return out


def id_by_email(conn: Connection, email: str) -> int | None:
    return conn.execute(select(contacts.c.id).where(contacts.c.email == email)).scalar_one_or_none()


def insert_emails(conn: Connection, emails: Sequence[str], now: datetime) -> None:
    """Blank contacts for these e-mails in one executemany, without RETURNING (which SQLite
    runs row by row); e-mails already known are skipped. For bulk imports."""
    if not emails:
        return
    blank = ContactState(id=0, email=None)
    shared: dict[str, Any] = {name: getattr(blank, name) for name in _STATE_COLUMNS}
    shared.update(created_at=now, updated_at=now)
    # Every row shares all values but the e-mail: bind them once through their column types
    # (JSON, UTC times) instead of once per row, which cost more than the inserts themselves
    # on an import creating 100,000 contacts.
    fixed = []
    for name, value in shared.items():
        kind = contacts.c[name].type.dialect_impl(conn.dialect)
        process = kind.bind_processor(conn.dialect)
        evaluate = value is not None or kind.should_evaluate_none
        fixed.append(process(value) if process is not None and evaluate else value)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(["email", *shared])
    marks = ", ".join([mark] * (len(shared) + 1))
    conn.exec_driver_sql(
        f"INSERT INTO contacts ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING",
        [(email, *fixed) for email in emails],
    )


def add_identities_many(conn: Connection, rows: Sequence[tuple[int, str, str]]) -> None:
    """``(contact_id, kind, value)`` in one statement (imports); taken identities stay put."""
    if rows:
        conn.execute(
            insert_ignore(conn, identities),
            [{"contact_id": c, "kind": k, "value": v} for c, k, v in rows],
        )


def erase(conn: Connection, contact_id: int) -> bool:
    return conn.execute(delete(contacts).where(contacts.c.id == contact_id)).rowcount == 1


# -- the console's search -------------------------------------------------------------------


def _prefix(column: Any, prefix: str) -> Any:
    """``column`` starts with ``prefix``: a range the column's index answers, plus the LIKE
    that keeps it exact under any collation (PostgreSQL's may order punctuation loosely)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper, column.like(escaped + "%", escape="\\"))


def _has_tag(conn: Connection, tag: str) -> Any:
    if conn.dialect.name == "postgresql":
        return type_coerce(contacts.c.tags, JSONB).contains([tag])
    return exists(
        select(literal_column("1"))
        .select_from(func.json_each(contacts.c.tags).table_valued("value"))
        .where(literal_column("value") == tag)
    )


def browse(
    conn: Connection,
    *,
    text: str | None = None,
    tag: str | None = None,
    segment: tuple[str, str] | None = None,
    score_min: int | None = None,
    score_max: int | None = None,
    before_id: int | None = None,
    window: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """One page of contacts, newest first (keyset: ``id < before_id``).

    ``text`` is an e-mail prefix when it holds an ``@``, else a prefix of the e-mail, the first
    or the last name (as typed, lower-case, capitalised or upper-case: each a range on that
    column's index). ``window`` bounds the ids looked at (``before_id - window`` upwards):
    tags and segments live in JSON no index reads, so a search by them alone walks a window
    of ids per page instead of the whole table.
    """
    cols = [
        contacts.c.id,
        contacts.c.email,
        contacts.c.first_name,
        contacts.c.last_name,
        contacts.c.tags,
        contacts.c.segments,
        contacts.c.status,
        contacts.c.score,
        contacts.c.time_zone,
        contacts.c.last_event_at,
    ]
    stmt = select(*cols).order_by(contacts.c.id.desc()).limit(limit)
    if text:
        lowered = text.lower()
        terms = [_prefix(contacts.c.email, lowered)]
        if "@" not in text:
            variants = dict.fromkeys([text, lowered, text.capitalize(), text.upper()])
            for v in variants:
                terms += [_prefix(contacts.c.first_name, v), _prefix(contacts.c.last_name, v)]
        # One indexed select per term, united: an OR of ranges would walk the whole table.
        matching = union(*(select(contacts.c.id).where(t) for t in terms)).subquery()
        stmt = stmt.where(contacts.c.id.in_(select(matching.c.id)))
    if tag:
        stmt = stmt.where(_has_tag(conn, tag))
    if segment is not None:
        stmt = stmt.where(contacts.c.segments[segment[0]].as_string() == segment[1])
    if score_min is not None:
        stmt = stmt.where(contacts.c.score >= score_min)
    if score_max is not None:
        stmt = stmt.where(contacts.c.score <= score_max)
    if before_id is not None:
        stmt = stmt.where(contacts.c.id < before_id)
        if window is not None:
            stmt = stmt.where(contacts.c.id >= before_id - window)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def max_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(contacts.c.id), 0))).scalar_one())
