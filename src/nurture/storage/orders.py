"""Orders and order lines: idempotent writes (order key, then order + line key) and the bulk
reads the RFM and recommendation passes run on (as polars frames, built in one fetch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Connection, Table, func, select, update

from nurture.database.encode import read_sqlite_time
from nurture.schema.tables import order_lines, orders

ORDER_FRAME = pl.Schema(
    {
        "contact_id": pl.Int64(),
        "order_id": pl.Int64(),
        "epoch": pl.Int64(),
        "net_amount": pl.Float64(),
    }
)
LINE_HEADS = pl.Schema({"contact_id": pl.Int64(), "order_id": pl.Int64(), "epoch": pl.Int64()})
LINE_FRAME = pl.Schema(
    {
        "contact_id": pl.Int64(),
        "order_id": pl.Int64(),
        "product_key": pl.String(),
        "ordered_at": pl.Datetime("us", "UTC"),
    }
)
_CHUNK = 900  # stays under SQLite's bound-parameter limit with room to spare


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _insert_ignore_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` as one driver-level executemany: imports write a
    million lines, and per-row statement building costs more than SQLite's insert itself."""
    if not rows:
        return
    sql, params = _insert_ignore_sql(conn, table, rows)
    conn.exec_driver_sql(sql, params)


def _insert_ignore_sql(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]]
) -> tuple[str, list[tuple[Any, ...]]]:
    """That statement and its parameter rows; values still go through each column type's bind
    processor (UTC datetimes, JSON)."""
    names = list(rows[0])
    procs = [table.c[n].type.bind_processor(conn.dialect) for n in names]
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"VALUES ({', '.join([mark] * len(names))}) ON CONFLICT DO NOTHING"
    )
    params = [
        tuple(
            proc(row[n]) if proc is not None and row[n] is not None else row[n]
            for n, proc in zip(names, procs, strict=True)
        )
        for row in rows
    ]
    return sql, params


# What ``UtcDateTime`` writes on SQLite (fixed width, so text order is time order).
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S%.6f"
ORDER_COLUMNS = (
    "order_key",
    "contact_id",
    "ordered_at",
    "net_amount",
    "gross_amount",
    "currency",
    "source",
    "created_at",
)
LINE_COLUMNS = (
    "order_id",
    "line_key",
    "product_key",
    "label",
    "quantity",
    "unit_price",
    "net_amount",
    "gross_amount",
)


def _listed(conn: Connection, column: str, values: Sequence[Any]) -> tuple[str, str, Any]:
    """A ``FROM`` addition, a condition and one parameter matching ``column`` against a whole
    list: SQLite joins ``json_each`` of a JSON array (one bound value, an index probe per item),
    PostgreSQL compares with ``= ANY`` of an array. Either way one statement per batch, however
    long the list, instead of hundreds of ``IN (...)`` statements of 900 parameters."""
    if conn.dialect.name == "postgresql":
        return "", f"{column} = ANY(%s)", list(values)
    return ", json_each(?) AS k", f"{column} = k.value", orjson.dumps(list(values)).decode()


def _bulk_insert(conn: Connection, table: str, frame: pl.DataFrame, times: Sequence[str]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` of a frame's rows as one driver-level executemany.

    Values are encoded column-wise by polars (UTC times as the text ``UtcDateTime`` writes on
    SQLite) and handed over as plain tuples: per-value bind processing in Python cost more than
    SQLite's insert itself on a million-line import."""
    if frame.height == 0:
        return
    if conn.dialect.name == "sqlite":
        frame = frame.with_columns(
            pl.col(c).dt.convert_time_zone("UTC").dt.strftime(_SQLITE_TIME) for c in times
        )
        mark = "?"
    else:
        mark = "%s"
    names = ", ".join(frame.columns)
    marks = ", ".join([mark] * frame.width)
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    conn.exec_driver_sql(sql, frame.rows())


def insert_order_frame(conn: Connection, frame: pl.DataFrame) -> None:
    """Bulk insert of orders (columns ``ORDER_COLUMNS``); a key already stored keeps its row."""
    _bulk_insert(conn, "orders", frame.select(ORDER_COLUMNS), ("ordered_at", "created_at"))


def insert_line_frame(conn: Connection, frame: pl.DataFrame) -> None:
    """Bulk insert of order lines (columns ``LINE_COLUMNS``); a stored (order, line key) stays."""
    _bulk_insert(conn, "order_lines", frame.select(LINE_COLUMNS), ())


def find_keys(conn: Connection, keys: Sequence[str]) -> pl.DataFrame:
    """``order_key, order_id, owner_id`` of the stored orders among ``keys``."""
    schema = {"order_key": pl.String(), "order_id": pl.Int64(), "owner_id": pl.Int64()}
    if not keys:
        return pl.DataFrame(schema=schema)
    extra, cond, param = _listed(conn, "o.order_key", keys)
    sql = f"SELECT o.order_key, o.id, o.contact_id FROM orders o{extra} WHERE {cond}"
    return pl.DataFrame(_fetch(conn, sql, (param,)), schema=schema, orient="row")


def contact_ids(conn: Connection, emails: Sequence[str]) -> pl.DataFrame:
    """``email, contact_id`` of the contacts with these (normalised) e-mails: the bulk import's
    lookup, one statement for a whole slice of buyers."""
    schema = {"email": pl.String(), "contact_id": pl.Int64()}
    if not emails:
        return pl.DataFrame(schema=schema)
    extra, cond, param = _listed(conn, "c.email", emails)
    sql = f"SELECT c.email, c.id FROM contacts c{extra} WHERE {cond}"
    return pl.DataFrame(_fetch(conn, sql, (param,)), schema=schema, orient="row")


def find_line_keys(conn: Connection, order_ids: Sequence[int]) -> pl.DataFrame:
    """``order_id, line_key`` stored for these orders."""
    schema = {"order_id": pl.Int64(), "line_key": pl.String()}
    if not order_ids:
        return pl.DataFrame(schema=schema)
    extra, cond, param = _listed(conn, "l.order_id", order_ids)
    sql = f"SELECT l.order_id, l.line_key FROM order_lines l{extra} WHERE {cond}"
    return pl.DataFrame(_fetch(conn, sql, (param,)), schema=schema, orient="row")


def insert_orders(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert orders; an order key already present keeps its first version."""
    _insert_ignore_many(conn, orders, rows)


def ids_by_keys(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{order_key: (order id, contact id)}`` for the keys that exist."""
    out: dict[str, tuple[int, int]] = {}
    for chunk in _chunks(list(keys)):
        rows = conn.execute(
            select(orders.c.order_key, orders.c.id, orders.c.contact_id).where(
                orders.c.order_key.in_(chunk)
            )
        )
        out.update({r.order_key: (r.id, r.contact_id) for r in rows})
    return out


def insert_lines(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    _insert_ignore_many(conn, order_lines, rows)


def refresh_totals(conn: Connection, order_ids: Sequence[int]) -> None:
    """An imported order's amounts are the sums of its lines (lines may span import chunks)."""
    net = (
        select(func.coalesce(func.sum(order_lines.c.net_amount), 0))
        .where(order_lines.c.order_id == orders.c.id)
        .scalar_subquery()
    )
    gross = (
        select(func.sum(order_lines.c.gross_amount))
        .where(order_lines.c.order_id == orders.c.id)
        .scalar_subquery()
    )
    for chunk in _chunks(list(order_ids)):
        conn.execute(
            update(orders).where(orders.c.id.in_(chunk)).values(net_amount=net, gross_amount=gross)
        )


def record(conn: Connection, order: dict[str, Any], lines: Sequence[dict[str, Any]]) -> bool:
    """Write one order with its lines; ``False`` when the order key was already stored (one
    statement decides, so two deliveries of one order cannot both record it)."""
    sql, params = _insert_ignore_sql(conn, orders, [order])
    row = conn.exec_driver_sql(sql + " RETURNING id", params[0]).first()
    if row is None:
        return False
    insert_lines(conn, [{**line, "order_id": int(row[0])} for line in lines])
    return True


def count(conn: Connection) -> tuple[int, int]:
    """``(orders, order lines)``."""
    n_orders = conn.execute(select(func.count()).select_from(orders)).scalar_one()
    n_lines = conn.execute(select(func.count()).select_from(order_lines)).scalar_one()
    return int(n_orders), int(n_lines)


def _time(conn: Connection, column: str) -> str:
    """SQLite hands back ``UtcDateTime``'s fixed-width text, which polars parses column-wise
    (several times cheaper than ``strftime`` per row); PostgreSQL gives epoch seconds."""
    if conn.dialect.name == "postgresql":
        return f"CAST(EXTRACT(EPOCH FROM {column}) AS BIGINT)"
    return column


def _real(conn: Connection, column: str) -> str:
    kind = "DOUBLE PRECISION" if conn.dialect.name == "postgresql" else "REAL"
    return f"CAST({column} AS {kind})"


def _fetch(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Plain driver tuples: no per-row ``Row`` objects on a full pass's hundreds of thousands.
    ``sql`` uses the driver's parameter marks (``?`` on SQLite, ``%s`` on PostgreSQL)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _frame(conn: Connection, rows: Sequence[tuple[Any, ...]], schema: pl.Schema) -> pl.DataFrame:
    sqlite = conn.dialect.name != "postgresql"
    raw = pl.Schema({n: (pl.String() if n == "epoch" and sqlite else t) for n, t in schema.items()})
    frame = pl.DataFrame(rows, schema=raw, orient="row")
    if sqlite:
        at = pl.col("epoch").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_zone="UTC")
    else:
        at = pl.from_epoch(pl.col("epoch"), time_unit="s").dt.replace_time_zone("UTC")
    return frame.with_columns(at.cast(pl.Datetime("us", "UTC")).alias("ordered_at")).drop("epoch")


def order_frame(conn: Connection, contact_id: int | None = None) -> pl.DataFrame:
    """``contact_id, order_id, net_amount, ordered_at``: every order, or one contact's."""
    sql = (
        f"SELECT contact_id, id, {_time(conn, 'ordered_at')}, {_real(conn, 'net_amount')} "
        "FROM orders"
    )
    if contact_id is None:
        return _frame(conn, _fetch(conn, sql), ORDER_FRAME)
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    return _frame(
        conn, _fetch(conn, f"{sql} WHERE contact_id = {mark}", (contact_id,)), ORDER_FRAME
    )


def contact_orders(
    conn: Connection, contact_id: int
) -> list[tuple[int, datetime | None, float | None]]:
    """``(order_id, ordered_at, net_amount)`` of one contact's orders, as ``order_frame`` reads
    them (PostgreSQL times to the second), without building a frame: a purchase refreshes one
    contact, and polars' fixed cost per frame was most of that refresh."""
    sql = (
        f"SELECT id, {_time(conn, 'ordered_at')}, {_real(conn, 'net_amount')} FROM orders "
        f"WHERE contact_id = {'%s' if conn.dialect.name == 'postgresql' else '?'}"
    )
    sqlite = conn.dialect.name != "postgresql"
    out: list[tuple[int, datetime | None, float | None]] = []
    for order_id, at, amount in _fetch(conn, sql, (contact_id,)):
        when: datetime | None = None
        if at is not None:
            when = read_sqlite_time(at) if sqlite else datetime.fromtimestamp(int(at), UTC)
        out.append((int(order_id), when, None if amount is None else float(amount)))
    return out


def line_frame(conn: Connection, contact_ids: Sequence[int] | None = None) -> pl.DataFrame:
    """``contact_id, order_id, product_key, ordered_at`` for every line, or for some contacts'
    lines. Lines and orders are fetched apart and joined by polars: a million joined rows cost
    the database more than the two plain scans."""
    heads_sql = f"SELECT o.contact_id, o.id, {_time(conn, 'o.ordered_at')} FROM orders o"
    lines_sql = "SELECT l.order_id, l.product_key FROM order_lines l"
    if contact_ids is None:
        heads = _fetch(conn, heads_sql)
        lines = _fetch(conn, lines_sql)
    else:
        extra, cond, param = _listed(conn, "o.contact_id", contact_ids)
        heads = _fetch(conn, f"{heads_sql}{extra} WHERE {cond}", (param,))
        extra, cond, param = _listed(conn, "l.order_id", [h[1] for h in heads])
        lines = _fetch(conn, f"{lines_sql}{extra} WHERE {cond}", (param,)) if heads else []
    frame = pl.DataFrame(
        lines, schema={"order_id": pl.Int64(), "product_key": pl.String()}, orient="row"
    )
    return (
        _frame(conn, heads, LINE_HEADS)
        .join(frame, on="order_id", how="inner")
        .select(list(LINE_FRAME))
    )


BUYER_FRAME = pl.Schema(
    {
        "contact_id": pl.Int64(),
        "email": pl.String(),
        "status": pl.String(),
        "segment": pl.String(),
        "recency_days": pl.Int64(),
        "frequency": pl.Int64(),
        "score": pl.Float64(),
        "last_marketing_at": pl.String(),
    }
)


def buyers(conn: Connection) -> pl.DataFrame:
    """Contacts with at least one order, with what a recommendation pass needs of each
    (``BUYER_FRAME``: the ``value`` segment, RFM figures, the ``last_marketing_at`` attribute
    as stored), by contact id. The JSON fields are read by the database, not decoded per row."""
    if conn.dialect.name == "postgresql":
        fields = (
            "c.segments->>'value', CAST(c.rfm->>'recency_days' AS BIGINT), "
            "CAST(c.rfm->>'frequency' AS BIGINT), CAST(c.rfm->>'score' AS DOUBLE PRECISION), "
            "c.attributes->>'last_marketing_at'"
        )
    else:
        fields = (
            "json_extract(c.segments, '$.value'), json_extract(c.rfm, '$.recency_days'), "
            "json_extract(c.rfm, '$.frequency'), json_extract(c.rfm, '$.score'), "
            "CAST(json_extract(c.attributes, '$.last_marketing_at') AS TEXT)"
        )
    sql = (
        f"SELECT c.id, c.email, c.status, {fields} FROM contacts c "
        "WHERE c.id IN (SELECT contact_id FROM orders) ORDER BY c.id"
    )
    return pl.DataFrame(_fetch(conn, sql), schema=BUYER_FRAME, orient="row")
