"""CSV imports of orders (one row per order line) and contacts: streamed, tolerant, idempotent.

Rows are read and written in chunks, so memory stays flat whatever the file size; nothing is
remembered across chunks except counters (a duplicate is recognised by the database: the order
key, then the order id + line key). A row that cannot be read goes to the reject file with its
line number and reason; the rest of the file is imported. Importing the same file twice changes
nothing the second time.

Orders are the bulk case (a million lines): blocks of the file are parsed and validated
column-wise with polars (``csv_blocks``, ``order_rows``) and written with driver-level bulk
inserts. Contacts are fewer and merge into existing profiles, so they are read row by row.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import polars as pl
from sqlalchemy import Connection

from nurture.commerce import csv_blocks, order_rows
from nurture.contacts import suppression
from nurture.core.contacts import PROFILE_FIELDS, STATUS_RANK
from nurture.core.events import normalise_email
from nurture.database.engine import Database
from nurture.errors import FieldProblem, InvalidFields
from nurture.storage import contacts as contact_store
from nurture.storage import orders as order_store
from nurture.storage import products as product_store

# Big enough that the per-commit fsync is noise, small enough to keep memory flat (~10 MB).
CHUNK_ROWS = 20_000

# Target field -> column name in the file. ``line`` identifies a line inside its order; without
# it the product key does (one line per product per order, as the prototype's UNIQUE did).
ORDER_PRESETS: dict[str, dict[str, str]] = {
    "default": {
        "order_id": "order_id",
        "email": "email",
        "date": "date",
        "product_key": "product_key",
        "quantity": "quantity",
        "unit_price": "unit_price",
        "net_amount": "net_amount",
        "gross_amount": "gross_amount",
        "currency": "currency",
        "product_label": "product_label",
        "client_code": "client_code",
        "line": "line",
    },
    # The CRM prototype's sales export (ventes_lignes), French column names.
    "crm": {
        "order_id": "document_no",
        "email": "email",
        "date": "date_livraison",
        "product_label": "produit_label",
        "quantity": "qty_line",
        "unit_price": "pu_ht",
        "net_amount": "mt_ht",
        "gross_amount": "mt_ttc",
        "client_code": "client_code",
        "line": "order_detail_no",
    },
}
ORDER_REQUIRED = ("order_id", "date")

CONTACT_PRESETS: dict[str, dict[str, str]] = {
    "default": {
        "email": "email",
        "first_name": "first_name",
        "last_name": "last_name",
        "phone": "phone",
        "time_zone": "time_zone",
        "client_code": "client_code",
        "status": "status",
    },
    "crm": {
        "email": "email",
        "first_name": "prenom",
        "last_name": "nom",
        "phone": "telephone",
        "client_code": "client_code",
    },
}

_DATE_FORMATS = ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%Y/%m/%d", "%d.%m.%Y", "%Y.%m.%d")


class RowError(ValueError):
    """Why one row is rejected."""


def parse_number(text: str) -> float | None:
    """``1 234,56``, ``1.234,56``, ``1,234.56``, ``-3`` -> float; empty -> None. One value
    through the column-wise rule the orders import applies (``order_rows.numbers``)."""
    cell = pl.select(order_rows.text(pl.lit(text, pl.String()))).to_series()
    values, unreadable = order_rows.numbers(cell)
    if unreadable[0]:
        raise RowError(f"not a number: {text.strip()!r}")
    value: float | None = values[0]
    return value


@lru_cache(maxsize=8192)
def parse_date(text: str) -> datetime:
    """``%d/%m/%Y`` first (the prototype's exports), then ISO dates and date-times, then other
    day-first forms. A date without a time is midnight UTC; a naive date-time is taken as UTC."""
    text = text.strip()
    if not text:
        raise RowError("missing date")
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"bad date: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass
class ImportSummary:
    rows: int = 0
    accepted: int = 0  # new lines (orders) or new/changed contacts
    unchanged: int = 0  # already imported (duplicates) or identical contacts
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    reject_path: Path | None = None
    contacts_created: int = 0
    orders_created: int = 0
    contact_ids: set[int] = field(default_factory=set, repr=False)


class _Rejects:
    """The reject file: the original columns plus ``_line`` and ``_reason``; opened on the first
    rejected row, so a clean import leaves no file behind."""

    def __init__(self, path: Path | None, header: list[str], summary: ImportSummary) -> None:
        self.path = path
        self.header = header
        self.summary = summary
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, line: int, row: list[str], reason: str) -> None:
        self.summary.rejected += 1
        self.summary.reasons[reason.split(":")[0]] += 1
        if self.path is None:
            return
        if self._writer is None:
            self._file = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow([*self.header, "_line", "_reason"])
            self.summary.reject_path = self.path
        self._writer.writerow([*row, line, reason])

    def add_frame(self, frame: pl.DataFrame, columns: list[str]) -> None:
        """Rejected rows of a cleaned frame: its original cells, ``_line`` and ``_reason``."""
        if frame.height == 0:
            return
        cells = frame.select(
            *(pl.col(c).fill_null("") for c in columns),
            csv_blocks.LINE,
            order_rows.REASON,
        )
        for *row, line, reason in cells.iter_rows():
            self.add(line, row, reason)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _open(
    source: IO[bytes], encoding: str, delimiter: str | None
) -> tuple[list[str], Any, io.TextIOWrapper]:
    """Header, a csv reader over the remaining rows, and the text wrapper (to ``detach`` when
    done: the caller owns the binary file, the wrapper must not close it)."""
    text = io.TextIOWrapper(source, encoding=encoding, newline="")
    first = text.readline()
    if not first:
        text.detach()
        raise InvalidFields([FieldProblem("file", "is empty (no header row)")])
    if delimiter is None:
        counts = {d: first.count(d) for d in (";", ",", "\t", "|")}
        delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    header = next(csv.reader([first], delimiter=delimiter))
    return header, csv.reader(text, delimiter=delimiter), text


def _columns(
    header: list[str], presets: dict[str, dict[str, str]], preset: str, overrides: dict[str, str]
) -> dict[str, int]:
    names = {h.strip().lower(): i for i, h in enumerate(header)}
    if preset == "auto":
        preset = next(
            (
                name
                for name, cols in presets.items()
                if name != "default" and sum(c in names for c in cols.values()) >= 4
            ),
            "default",
        )
    if preset not in presets:
        raise InvalidFields([FieldProblem("preset", f"unknown preset {preset!r}")])
    mapping = {**presets[preset], **{k: v.strip().lower() for k, v in overrides.items()}}
    unknown = set(overrides) - set(presets["default"]) - {"product_label"}
    if unknown:
        raise InvalidFields([FieldProblem("map", f"unknown fields: {', '.join(sorted(unknown))}")])
    return {target: names[col] for target, col in mapping.items() if col in names}


def _chunks(
    reader: Any, size: int, progress: Callable[[], None] | None
) -> Iterator[list[tuple[int, list[str]]]]:
    chunk: list[tuple[int, list[str]]] = []
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        chunk.append((reader.line_num + 1, row))  # +1: the header was read apart
        if len(chunk) >= size:
            yield chunk
            chunk = []
            if progress:
                progress()
    if chunk:
        yield chunk
        if progress:
            progress()


# -- orders -----------------------------------------------------------------------------------


def import_orders(
    db: Database,
    source: IO[bytes],
    now: datetime,
    *,
    preset: str = "auto",
    mapping: dict[str, str] | None = None,
    currency: str | None = None,
    encoding: str = "utf-8-sig",
    delimiter: str | None = None,
    reject_path: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
    block_bytes: int = csv_blocks.BLOCK_BYTES,
    progress: Callable[[], None] | None = None,
) -> ImportSummary:
    """Import order lines; one transaction per ``chunk_rows`` accepted rows, so an interrupted
    import resumes by simply running it again.

    Each block of the file is parsed and validated column-wise (``order_rows.clean``), then its
    accepted rows are written in bulk: contacts resolved per distinct e-mail, orders and lines
    inserted with ``ON CONFLICT DO NOTHING``."""
    header = csv_blocks.read_header(source, encoding, delimiter)
    index = _columns(header.names, ORDER_PRESETS, preset, mapping or {})
    missing = [f for f in ORDER_REQUIRED if f not in index]
    if "product_key" not in index and "product_label" not in index:
        missing.append("product_key or product_label")
    if "email" not in index and "client_code" not in index:
        missing.append("email or client_code")
    if missing:
        problem = f"missing columns for {', '.join(missing)} (header: {', '.join(header.names)})"
        raise InvalidFields([FieldProblem("header", problem)])
    cols = {target: header.columns[i] for target, i in index.items()}
    summary = ImportSummary()
    rejects = _Rejects(reject_path, header.names, summary)
    try:
        for frame in csv_blocks.frames(source, header, block_bytes):
            summary.rows += frame.height
            cleaned = order_rows.clean(frame, cols, currency, parse_date)
            rejected = cleaned.get_column(order_rows.REASON).is_not_null()
            rejects.add_frame(cleaned.filter(rejected), header.columns)
            for rows in cleaned.filter(~rejected).iter_slices(chunk_rows):
                with db.begin() as conn:
                    unknown = _store_lines(conn, rows, now, summary)
                rejects.add_frame(
                    unknown.with_columns(
                        pl.lit("missing email: unknown client_code").alias(order_rows.REASON)
                    ),
                    header.columns,
                )
            if progress:
                progress()
    finally:
        rejects.close()
    return summary


def _store_lines(
    conn: Connection, rows: pl.DataFrame, now: datetime, summary: ImportSummary
) -> pl.DataFrame:
    """Write one slice of accepted rows; returns the rows whose contact is unknown."""
    rows = _with_contacts(conn, rows, now, summary)
    unknown = rows.filter(pl.col("contact_id").is_null())
    _write_orders(conn, rows.filter(pl.col("contact_id").is_not_null()), now, summary)
    return unknown


def _with_contacts(
    conn: Connection, rows: pl.DataFrame, now: datetime, summary: ImportSummary
) -> pl.DataFrame:
    """Add ``contact_id``: e-mails find or create contacts, a known client_code alone suffices,
    and a client_code next to an e-mail becomes that contact's identity if it is free."""
    emails = rows.get_column("email").drop_nulls().unique().sort()
    email_ids = order_store.contact_ids(conn, emails.to_list())
    new = emails.filter(~emails.is_in(email_ids.get_column("email").implode())).to_list()
    if new:
        contact_store.insert_emails(conn, new, now)
        created = order_store.contact_ids(conn, new)
        email_ids = pl.concat([email_ids, created])
        suppression.carry_over_emails(conn, new, now)
        summary.contacts_created += len(new)
    email_ids = email_ids.rename({"contact_id": "email_contact"})
    codes = rows.get_column("client_code").drop_nulls().unique().sort().to_list()
    by_code = (
        contact_store.ids_by_identities(conn, [("client_code", c) for c in codes]) if codes else {}
    )
    code_ids = pl.DataFrame(
        {"client_code": [k[1] for k in by_code], "code_contact": list(by_code.values())},
        schema={"client_code": pl.String(), "code_contact": pl.Int64()},
    )
    rows = rows.join(email_ids, on="email", how="left", maintain_order="left").join(
        code_ids, on="client_code", how="left", maintain_order="left"
    )
    claims = rows.filter(
        pl.col("email_contact").is_not_null()
        & pl.col("client_code").is_not_null()
        & pl.col("code_contact").is_null()
    ).unique("client_code", keep="first", maintain_order=True)
    contact_store.add_identities_many(
        conn,
        [
            (contact_id, "client_code", code)
            for contact_id, code in claims.select("email_contact", "client_code").iter_rows()
        ],
    )
    return rows.with_columns(pl.coalesce("email_contact", "code_contact").alias("contact_id")).drop(
        "email_contact", "code_contact"
    )


def _write_orders(
    conn: Connection, rows: pl.DataFrame, now: datetime, summary: ImportSummary
) -> None:
    """Orders by key (the first row of an order gives its contact, date and currency), then the
    lines not stored yet; a repeat inside the file counts as already present too."""
    lines = rows.unique(["order_key", "line_key"], keep="first", maintain_order=True)
    summary.unchanged += rows.height - lines.height
    heads = lines.unique("order_key", keep="first", maintain_order=True)
    known = order_store.find_keys(conn, heads.get_column("order_key").to_list())
    # Only orders stored before this slice can hold lines already: a fresh import asks nothing.
    stored = order_store.find_line_keys(conn, known.get_column("order_id").to_list())
    old = lines.join(known, on="order_key", how="inner", maintain_order="left").join(
        stored, on=["order_id", "line_key"], how="anti", maintain_order="left"
    )
    fresh_lines = lines.join(known, on="order_key", how="anti", maintain_order="left")
    summary.unchanged += lines.height - fresh_lines.height - old.height
    totals = fresh_lines.group_by("order_key").agg(
        pl.col("net_amount").sum().round(2),
        # SUM() of nothing but nulls is null: no gross amount known.
        pl.when(pl.col("gross_amount").count() > 0)
        .then(pl.col("gross_amount").sum().round(2))
        .otherwise(None)
        .alias("gross_amount"),
    )
    fresh = (
        heads.join(known, on="order_key", how="anti", maintain_order="left")
        .select("order_key", "contact_id", "ordered_at", "currency")
        .join(totals, on="order_key", how="left", maintain_order="left")
        .with_columns(
            pl.lit("import").alias("source"),
            pl.lit(now).cast(order_rows.UTC_US).alias("created_at"),
        )
    )
    order_store.insert_order_frame(conn, fresh)
    summary.orders_created += fresh.height
    created = order_store.find_keys(conn, fresh.get_column("order_key").to_list())
    new = pl.concat(
        [old, fresh_lines.join(created, on="order_key", how="inner", maintain_order="left")],
        how="vertical_relaxed",
    )
    order_store.insert_line_frame(conn, new)
    summary.accepted += new.height
    summary.contact_ids.update(new.get_column("owner_id").unique().to_list())
    names = new.group_by("product_key").agg(pl.col("label").drop_nulls().last())
    product_store.remember(conn, dict(names.iter_rows()), now)
    order_store.refresh_totals(conn, old.get_column("order_id").unique().sort().to_list())


# -- contacts ---------------------------------------------------------------------------------


def _cell(row: list[str], cols: dict[str, int], name: str) -> str:
    i = cols.get(name)
    return row[i].strip() if i is not None and i < len(row) else ""


def import_contacts(
    db: Database,
    source: IO[bytes],
    now: datetime,
    *,
    preset: str = "auto",
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8-sig",
    delimiter: str | None = None,
    reject_path: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[], None] | None = None,
) -> ImportSummary:
    """Upsert contacts by e-mail. Profile columns fill the profile, a ``status`` column can only
    make a contact more restricted (an import never re-subscribes anyone), every other non-empty
    column becomes an attribute."""
    header, reader, text = _open(source, encoding, delimiter)
    try:
        return _import_contacts(
            db, header, reader, now, preset, mapping, reject_path, chunk_rows, progress
        )
    finally:
        text.detach()


def _import_contacts(
    db: Database,
    header: list[str],
    reader: Any,
    now: datetime,
    preset: str,
    mapping: dict[str, str] | None,
    reject_path: Path | None,
    chunk_rows: int,
    progress: Callable[[], None] | None,
) -> ImportSummary:
    names = [h.strip().lower() for h in header]
    cols = _columns_contacts(names, preset, mapping or {})
    if "email" not in cols:
        raise InvalidFields(
            [FieldProblem("header", f"no email column (header: {', '.join(header)})")]
        )
    mapped = set(cols.values())
    extra = [(i, n) for i, n in enumerate(names) if i not in mapped and n]
    summary = ImportSummary()
    rejects = _Rejects(reject_path, header, summary)
    try:
        for chunk in _chunks(reader, chunk_rows, progress):
            summary.rows += len(chunk)
            wanted: dict[str, tuple[dict[str, Any], str | None, str | None]] = {}
            for line, row in chunk:
                raw_email = _cell(row, cols, "email")
                email = normalise_email(raw_email) if raw_email else None
                if email is None:
                    rejects.add(line, row, "invalid email" if raw_email else "missing email")
                    continue
                status = _cell(row, cols, "status").lower() or None
                if status is not None and status not in STATUS_RANK:
                    rejects.add(line, row, f"unknown status: {status!r}")
                    continue
                traits: dict[str, Any] = {f: _cell(row, cols, f) for f in PROFILE_FIELDS}
                traits.update({n: row[i].strip() for i, n in extra if i < len(row)})
                wanted[email] = (traits, status, _cell(row, cols, "client_code") or None)
            with db.begin() as conn:
                _upsert_contacts(conn, wanted, now, summary)
    finally:
        rejects.close()
    return summary


def _columns_contacts(names: list[str], preset: str, overrides: dict[str, str]) -> dict[str, int]:
    index = {n: i for i, n in enumerate(names)}
    if preset == "auto":
        preset = "crm" if "nom" in index or "prenom" in index else "default"
    if preset not in CONTACT_PRESETS:
        raise InvalidFields([FieldProblem("preset", f"unknown preset {preset!r}")])
    unknown = set(overrides) - set(CONTACT_PRESETS["default"])
    if unknown:
        raise InvalidFields([FieldProblem("map", f"unknown fields: {', '.join(sorted(unknown))}")])
    mapping = {**CONTACT_PRESETS[preset], **{k: v.strip().lower() for k, v in overrides.items()}}
    return {target: index[col] for target, col in mapping.items() if col in index}


def _upsert_contacts(
    conn: Connection,
    wanted: dict[str, tuple[dict[str, Any], str | None, str | None]],
    now: datetime,
    summary: ImportSummary,
) -> None:
    states = {s.email: s for s in contact_store.load_many(conn, emails=sorted(wanted))}
    missing = [e for e in sorted(wanted) if e not in states]
    created = contact_store.create_many(conn, missing, now)
    for state in created:
        state.is_new = True
        states[state.email] = state
    suppression.carry_over(conn, created)
    summary.contacts_created += len(missing)
    changed = []
    idents: list[tuple[int, str, str]] = []
    for email, (traits, status, client_code) in wanted.items():
        state = states[email]
        state.apply_traits(traits)
        if status is not None:
            state.degrade_status(status)
        new_code = bool(client_code) and state.identities.get("client_code") != client_code
        if new_code and client_code:
            idents.append((state.id, "client_code", client_code))
        if state.dirty or state.is_new or new_code:
            summary.accepted += 1
            summary.contact_ids.add(state.id)
            if state.dirty:
                changed.append(state)
        else:
            summary.unchanged += 1
    contact_store.save_many(conn, changed, now)
    contact_store.add_identities_many(conn, idents)
