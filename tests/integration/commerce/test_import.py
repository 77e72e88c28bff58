"""CSV imports (orders, contacts), the full RFM pass, and its independent cross-check."""

from __future__ import annotations

import csv
import io
import math
import random
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy import select

from nurture.commerce import imports
from nurture.commerce import purchases as commerce
from nurture.database.engine import Database
from nurture.errors import InvalidFields
from nurture.schema.tables import contacts, identities, order_lines, orders, products
from nurture.storage import contacts as contact_store
from nurture.storage import orders as order_store
from nurture.storage import rfm as rfm_store
from tests.conftest import START

CONFIG = commerce.CommerceConfig()


def run_orders(db: Database, text: str, tmp_path: Path, **kw: Any) -> imports.ImportSummary:
    return imports.import_orders(
        db,
        io.BytesIO(text.encode("utf-8")),
        START,
        reject_path=tmp_path / "rejects.csv",
        **kw,
    )


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with db.read() as conn:
        for table in (contacts, identities, orders, order_lines, products):
            rows = conn.execute(select(table).order_by(table.c.id)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


GOOD = """order_id,email,date,product_key,quantity,unit_price,net_amount,currency
A1,ann@shop.fr,2026-10-01,RIESLING,2,"12,50","25,00",EUR
A1,ann@shop.fr,2026-10-01,CREMANT,1,18,18,EUR
B1,Bob@Shop.fr,01/11/2026,RIESLING,1,12.5,"1 234,56",EUR
"""

MALFORMED = """order_id,email,date,product_key,quantity,unit_price,net_amount
C1,cat@shop.fr,2026-13-45,RIESLING,1,10,10
C2,cat@shop.fr,2026-10-02,RIESLING,-2,10,-20
C3,,2026-10-02,RIESLING,1,10,10
C4,not-an-email,2026-10-02,RIESLING,1,10,10
C5,cat@shop.fr,2026-10-02,RIESLING,1,10,abc
,cat@shop.fr,2026-10-02,RIESLING,1,10,10
C6,cat@shop.fr,2026-10-02,,1,10,10
C7,cat@shop.fr,2026-10-03,PINOT,1,,
C8,cat@shop.fr,2026-10-03,PINOT,3,9.5,
"""


def test_import_orders_builds_orders_lines_contacts_and_products(
    db: Database, tmp_path: Path
) -> None:
    summary = run_orders(db, GOOD, tmp_path)
    assert (summary.rows, summary.accepted, summary.rejected) == (3, 3, 0)
    assert (summary.contacts_created, summary.orders_created) == (2, 2)
    assert summary.reject_path is None and not (tmp_path / "rejects.csv").exists()
    with db.read() as conn:
        frame = order_store.order_frame(conn).sort("order_id")
        ann = contact_store.load_by_email(conn, "ann@shop.fr")
        bob = contact_store.load_by_email(conn, "bob@shop.fr")
        assert ann is not None and bob is not None
        assert order_store.count(conn) == (2, 3)
    assert frame.get_column("net_amount").to_list() == [43.0, 1234.56]
    assert frame.get_column("contact_id").to_list() == [ann.id, bob.id]
    assert frame.get_column("ordered_at").to_list() == [
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    ]


def test_malformed_rows_go_to_the_reject_file_with_reasons(db: Database, tmp_path: Path) -> None:
    summary = run_orders(db, MALFORMED, tmp_path)
    assert (summary.rows, summary.accepted, summary.rejected) == (9, 1, 8)
    with (tmp_path / "rejects.csv").open(encoding="utf-8") as f:
        rejected = list(csv.DictReader(f))
    reasons = {r["order_id"]: (r["_line"], r["_reason"]) for r in rejected}
    assert reasons == {
        "C1": ("2", "bad date: '2026-13-45'"),
        "C2": ("3", "quantity must be positive: -2"),
        "C3": ("4", "missing email"),
        "C4": ("5", "invalid email: 'not-an-email'"),
        "C5": ("6", "not a number: 'abc'"),
        "": ("7", "missing order_id"),
        "C6": ("8", "missing product: product_key or product_label"),
        "C7": ("9", "missing net_amount (and no unit_price)"),
    }
    assert rejected[0]["email"] == "cat@shop.fr"  # the original row is kept whole
    assert summary.reasons["bad date"] == 1
    with db.read() as conn:
        frame = order_store.order_frame(conn)
    assert frame.get_column("net_amount").to_list() == [28.5]  # 3 x 9.5 when net is empty


def test_reimporting_the_same_file_changes_nothing(db: Database, tmp_path: Path) -> None:
    run_orders(db, GOOD, tmp_path)
    before = snapshot(db)
    again = run_orders(db, GOOD, tmp_path, chunk_rows=2)
    assert (again.accepted, again.unchanged, again.contacts_created, again.orders_created) == (
        0,
        3,
        0,
        0,
    )
    assert snapshot(db) == before


def test_an_order_spanning_chunks_and_files_sums_all_its_lines(
    db: Database, tmp_path: Path
) -> None:
    run_orders(db, GOOD, tmp_path, chunk_rows=1)
    extra = (
        "order_id,email,date,product_key,quantity,net_amount\nA1,ann@shop.fr,2026-10-01,PINOT,1,7\n"
    )
    run_orders(db, extra, tmp_path)
    with db.read() as conn:
        frame = order_store.order_frame(conn).sort("order_id")
    assert frame.get_column("net_amount").to_list() == [50.0, 1234.56]


CRM = """client_code;date_livraison;produit_label;qty_line;pu_ht;mt_ht;mt_ttc;document_no;email
CL001;05/10/2026;Crémant d'Alsace Extra-Brut;6;10,00;60,00;72,00;F100;claire@vigne.fr
CL001;05/10/2026;Riesling  Grand Cru;1;25,00;25,00;30,00;F100;claire@vigne.fr
CL002;06/10/2026;Pinot Noir;2;15,00;30,00;36,00;F101;
"""


def test_french_crm_export_is_detected_and_client_codes_link_contacts(
    db: Database, tmp_path: Path
) -> None:
    contacts_csv = "client_code;nom;prenom;email;ville\nCL002;Martin;Luc;luc@vigne.fr;Colmar\n"
    people = imports.import_contacts(db, io.BytesIO(contacts_csv.encode()), START)
    assert (people.accepted, people.contacts_created) == (1, 1)
    summary = run_orders(db, CRM, tmp_path)
    assert (summary.accepted, summary.rejected, summary.orders_created) == (3, 0, 2)
    with db.read() as conn:
        luc = contact_store.load_by_email(conn, "luc@vigne.fr")
        claire = contact_store.load_by_email(conn, "claire@vigne.fr")
        names = conn.execute(select(products.c.key, products.c.name).order_by(products.c.key))
        catalogue = dict(names.all())
        frame = order_store.order_frame(conn).sort("order_id")
        gross = conn.execute(select(orders.c.gross_amount).order_by(orders.c.id)).scalars().all()
    assert luc is not None and claire is not None
    assert (luc.first_name, luc.last_name, luc.attributes) == ("Luc", "Martin", {"ville": "Colmar"})
    assert claire.identities == {"client_code": "CL001"}
    assert frame.get_column("contact_id").to_list() == [claire.id, luc.id]
    assert frame.get_column("net_amount").to_list() == [85.0, 30.0]
    assert gross == [102.0, 36.0]
    assert catalogue["CREMANT D ALSACE EXTRA BRUT"] == "Crémant d'Alsace Extra-Brut"
    assert "RIESLING GRAND CRU" in catalogue


def test_unknown_client_code_without_email_is_rejected(db: Database, tmp_path: Path) -> None:
    summary = run_orders(db, CRM, tmp_path)
    assert summary.rejected == 1
    assert summary.reasons["missing email"] == 1


def test_contacts_import_is_idempotent_and_never_resubscribes(db: Database, tmp_path: Path) -> None:
    text = "email,first_name,status,plan\nann@shop.fr,Ann,unsubscribed,gold\nbad,X,,\n"
    first = imports.import_contacts(
        db, io.BytesIO(text.encode()), START, reject_path=tmp_path / "r.csv"
    )
    assert (first.accepted, first.rejected) == (1, 1)
    before = snapshot(db)
    again = imports.import_contacts(db, io.BytesIO(text.encode()), START)
    assert (again.accepted, again.unchanged) == (0, 1)
    assert snapshot(db) == before
    resub = "email,status\nann@shop.fr,subscribed\n"
    imports.import_contacts(db, io.BytesIO(resub.encode()), START)
    with db.read() as conn:
        ann = contact_store.load_by_email(conn, "ann@shop.fr")
    assert ann is not None and ann.status == "unsubscribed" and ann.attributes == {"plan": "gold"}


def test_a_file_without_the_needed_columns_is_refused(db: Database) -> None:
    with pytest.raises(InvalidFields, match="missing columns for order_id"):
        imports.import_orders(db, io.BytesIO(b"email,date\nann@shop.fr,2026-01-01\n"), START)
    with pytest.raises(InvalidFields, match="unknown fields: colour"):
        imports.import_orders(db, io.BytesIO(GOOD.encode()), START, mapping={"colour": "x"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 234,56", 1234.56),
        ("1.234,56", 1234.56),
        ("1,234.56", 1234.56),
        ("-3", -3.0),
        ("12,5", 12.5),
        ("", None),
        ("1\u00a0000", 1000.0),
    ],
)
def test_tolerant_numbers(text: str, value: float | None) -> None:
    assert imports.parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "31/12/2026",
        "2026-12-31",
        "31-12-2026",
        "2026/12/31",
        "31.12.2026",
        "2026-12-31T00:00:00Z",
        "2026-12-31T01:00:00+01:00",
    ],
)
def test_tolerant_dates(text: str) -> None:
    assert imports.parse_date(text) == datetime(2026, 12, 31, tzinfo=UTC)


def test_full_rfm_pass_matches_an_independent_duckdb_computation(
    db: Database, tmp_path: Path
) -> None:
    rng = random.Random(7)
    path = tmp_path / "sample.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["order_id", "email", "date", "product_key", "quantity", "net_amount"])
        for order in range(400):
            email = f"c{rng.randrange(60)}@shop.fr"
            day = f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}"
            for line in range(rng.randint(1, 4)):
                amount = round(rng.uniform(1, 300), 2)
                out.writerow([f"O{order}", email, day, f"P{line}{rng.randrange(9)}", 1, amount])
    with path.open("rb") as f:
        imports.import_orders(db, f, START)
    result = commerce.recompute_all(db, START, CONFIG)
    with db.read() as conn:
        stored = {
            r.email: r.rfm for r in conn.execute(select(contacts.c.email, contacts.c.rfm)).all()
        }
    assert result.contacts == len(stored)
    expected = duckdb.sql(
        f"""
        WITH lines AS (
            SELECT * FROM read_csv('{path}', header = true, all_varchar = true)
        ), per_line AS (
            SELECT DISTINCT order_id, email, CAST(date AS DATE) AS day, product_key,
                   CAST(net_amount AS DECIMAL(14, 2)) AS net
            FROM lines
        )
        SELECT email,
               date_diff('day', max(day), DATE '2026-11-23') AS recency_days,
               count(DISTINCT order_id) AS frequency,
               CAST(sum(net) AS DOUBLE) AS monetary
        FROM per_line GROUP BY email ORDER BY email
        """
    ).fetchall()
    assert len(expected) == len(stored)
    for email, recency, frequency, monetary in expected:
        doc = stored[email]
        assert (doc["recency_days"], doc["frequency"]) == (recency, frequency), email
        assert doc["monetary"] == pytest.approx(monetary, abs=0.005), email
        assert 1 <= doc["r"] <= 4 and doc["score"] == round((doc["r"] + doc["f"] + doc["m"]) / 3, 2)


@pytest.mark.parametrize(("block_bytes", "chunk_rows"), [(7, 2), (1 << 20, 20_000)])
def test_block_and_chunk_sizes_do_not_change_the_outcome(
    db: Database, tmp_path: Path, block_bytes: int, chunk_rows: int
) -> None:
    # GOOD's quoted amounts straddle tiny blocks; MALFORMED's rows are one field short.
    text = GOOD + MALFORMED.split("\n", 1)[1]
    summary = run_orders(db, text, tmp_path, block_bytes=block_bytes, chunk_rows=chunk_rows)
    assert (summary.rows, summary.accepted, summary.rejected) == (12, 4, 8)
    with (tmp_path / "rejects.csv").open(encoding="utf-8") as f:
        rejected = list(csv.DictReader(f))
    assert [(r["order_id"], r["_line"]) for r in rejected] == [
        ("C1", "5"),
        ("C2", "6"),
        ("C3", "7"),
        ("C4", "8"),
        ("C5", "9"),
        ("", "10"),
        ("C6", "11"),
        ("C7", "12"),
    ]
    with db.read() as conn:
        frame = order_store.order_frame(conn).sort("order_id")
    assert frame.get_column("net_amount").to_list() == [43.0, 1234.56, 28.5]
    again = run_orders(db, text, tmp_path, block_bytes=block_bytes, chunk_rows=chunk_rows)
    assert (again.accepted, again.unchanged, again.rejected) == (0, 4, 8)


def test_quoted_newlines_blank_lines_and_a_windows_export(db: Database, tmp_path: Path) -> None:
    text = (
        "client_code;date_livraison;produit_label;qty_line;pu_ht;mt_ht;mt_ttc;document_no;email\r\n"
        '\r\nCL9;05/10/2026;"Riesling\r\nGrand Cru";1;25,00;25,00;30,00;F200;zoe@vigne.fr\r\n'
        "CL9;05/10/2026;Pinot Gris;0;9,00;0;0;F200;zoe@vigne.fr\r\n"
        "CL9;2026-10-06 14:30:00+02:00;Crémant;2;9,00;18,00;21,60;F201;zoe@vigne.fr\r\n"
    )
    summary = imports.import_orders(
        db,
        io.BytesIO(text.encode("cp1252")),
        START,
        encoding="cp1252",
        reject_path=tmp_path / "rejects.csv",
    )
    assert (summary.rows, summary.accepted, summary.rejected) == (3, 2, 1)
    with (tmp_path / "rejects.csv").open(encoding="utf-8") as f:
        [rejected] = list(csv.DictReader(f))
    # the quoted label spans lines 3-4, so the zero-quantity row is line 5
    assert (rejected["_line"], rejected["_reason"]) == ("5", "quantity must be positive: 0")
    with db.read() as conn:
        names = dict(conn.execute(select(products.c.key, products.c.name)).all())
        frame = order_store.order_frame(conn).sort("order_id")
    assert names == {"RIESLING GRAND CRU": "Riesling Grand Cru", "CREMANT": "Crémant"}
    assert frame.get_column("ordered_at").to_list() == [
        datetime(2026, 10, 5, tzinfo=UTC),
        datetime(2026, 10, 6, 12, 30, tzinfo=UTC),
    ]


def test_a_file_that_is_not_in_its_encoding_is_refused_with_where(db: Database) -> None:
    text = "order_id,email,date,product_key,net_amount\nA1,ann@shop.fr,2026-10-01,CRÉMANT,1\n"
    with pytest.raises(InvalidFields, match="not utf-8-sig text at line 2"):
        imports.import_orders(db, io.BytesIO(text.encode("cp1252")), START)


def _lifetimes_summary(transactions: list[tuple[str, str, float]], end: str) -> dict[str, Any]:
    """``lifetimes``' own RFM summary (frequency, recency, T, monetary_value) per customer."""
    with warnings.catch_warnings():
        # lifetimes 0.11 sets a pandas option that pandas 3 deprecates, at import time
        warnings.simplefilter("ignore")
        import pandas as pd
        from lifetimes.utils import summary_data_from_transaction_data

    frame = pd.DataFrame(transactions, columns=["customer", "date", "amount"])
    frame["date"] = pd.to_datetime(frame["date"])
    summary = summary_data_from_transaction_data(
        frame,
        "customer",
        "date",
        monetary_value_col="amount",
        observation_period_end=end,
        freq="D",
        include_first_transaction=True,
    )
    return {str(k): v for k, v in summary.to_dict("index").items()}


def test_full_rfm_pass_matches_lifetimes_summary_data(db: Database, tmp_path: Path) -> None:
    """Cross-check against an independent implementation, the ``lifetimes`` package.

    Its definitions differ from ours, so the sample is built where they can be translated: each
    contact orders at most once a day (lifetimes counts days with a purchase, we count orders).
    With ``include_first_transaction=True`` and daily periods: our frequency = its
    ``frequency``; our recency (days since the last order) = ``T - recency`` (``T``: days from
    the first purchase to the end, ``recency``: from the first to the last); our monetary (sum
    of net amounts) = ``frequency x monetary_value`` (its mean spend per purchase day).
    """
    rng = random.Random(11)
    path = tmp_path / "sample.csv"
    transactions: list[tuple[str, str, float]] = []
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["order_id", "email", "date", "product_key", "quantity", "net_amount"])
        order = 0
        for customer in range(80):
            email = f"c{customer}@shop.fr"
            # one to eight orders, on distinct days of the last two years
            days = rng.sample(range(1, 730), rng.choice((1, 1, 1, 2, 3, 8)))
            for day in days:
                order += 1
                date = (START - timedelta(days=day)).strftime("%Y-%m-%d")
                for line in range(rng.randint(1, 3)):
                    amount = round(rng.uniform(1, 250), 2)
                    out.writerow(
                        [f"O{order}", email, date, f"P{line}{rng.randrange(5)}", 1, amount]
                    )
                    transactions.append((email, date, amount))
    with path.open("rb") as f:
        imports.import_orders(db, f, START)
    commerce.recompute_all(db, START, CONFIG)
    with db.read() as conn:
        stored = {
            r.email: r.rfm for r in conn.execute(select(contacts.c.email, contacts.c.rfm)).all()
        }
    theirs = _lifetimes_summary(transactions, START.strftime("%Y-%m-%d"))
    assert set(theirs) == set(stored)
    for email, figures in theirs.items():
        doc = stored[email]
        assert doc["frequency"] == int(figures["frequency"]), email
        assert doc["recency_days"] == int(figures["T"] - figures["recency"]), email
        monetary = figures["frequency"] * figures["monetary_value"]
        assert doc["monetary"] == pytest.approx(monetary, abs=0.005), email


def test_rfm_scores_match_pandas_average_ranks(db: Database, tmp_path: Path) -> None:
    """The 1-4 scores against an independent ranking (pandas' ``rank(method="average")``):
    the mid-rank percentile (rank - 1/2) / n, times 4, rounded up, within 1..4; recency ranked
    so that fewer days is better. Many ties on purpose (one-time buyers, equal amounts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandas as pd

    rng = random.Random(5)
    text = "order_id,email,date,product_key,net_amount\n"
    order = 0
    for customer in range(60):
        for _ in range(rng.choice((1, 1, 1, 1, 2, 2, 3, 5))):
            order += 1
            day = (START - timedelta(days=rng.choice((3, 10, 10, 40, 200)))).date()
            text += f"O{order},c{customer}@shop.fr,{day},P1,{rng.choice((10, 10, 25, 80))}\n"
    run_orders(db, text, tmp_path)
    commerce.recompute_all(db, START, CONFIG)
    with db.read() as conn:
        docs = [r.rfm for r in conn.execute(select(contacts.c.rfm)).all()]
    frame = pd.DataFrame(docs)
    n = len(frame)
    for column, score, ascending in (
        ("recency_days", "r", False),
        ("frequency", "f", True),
        ("monetary", "m", True),
    ):
        ranks = frame[column].rank(method="average", ascending=ascending)
        expected = ((ranks - 0.5) / n * 4).apply(math.ceil).clip(1, 4)
        assert frame[score].tolist() == expected.astype(int).tolist(), column
    assert frame["score"].tolist() == ((frame.r + frame.f + frame.m) / 3).round(2).tolist()


def test_contacts_without_orders_are_not_reported_as_cleared(db: Database, tmp_path: Path) -> None:
    imports.import_contacts(db, io.BytesIO(b"email\nzoe@shop.fr\nyan@shop.fr\n"), START)
    run_orders(db, GOOD, tmp_path)
    assert commerce.recompute_all(db, START, CONFIG).cleared == 0
    with db.begin() as conn:
        bob = contact_store.load_by_email(conn, "bob@shop.fr")
        assert bob is not None
        conn.execute(orders.delete().where(orders.c.contact_id == bob.id))
    result = commerce.recompute_all(db, START, CONFIG)
    assert (result.contacts, result.cleared) == (1, 1)
    with db.read() as conn:
        gone = contact_store.load_by_email(conn, "bob@shop.fr")
    assert gone is not None and gone.rfm is None


def test_a_purchase_rebuilds_a_small_baseline_at_most_once_a_minute(db: Database) -> None:
    """Rebuilding reads every order: always while the base is tiny, then at most once a minute
    (a backfill of n purchases was O(n^2)); a large base is left to the nightly pass."""
    stale = commerce.baseline_is_stale
    tiny = {"contacts": commerce.TINY_BASE - 1, "computed_at": START}
    small = {"contacts": commerce.TINY_BASE, "computed_at": START}
    large = {"contacts": commerce.SMALL_BASE, "computed_at": START - timedelta(days=3)}
    assert stale(tiny, START)
    assert not stale(small, START + timedelta(seconds=59))
    assert stale(small, START + commerce.BASELINE_MAX_AGE)
    assert not stale(large, START)

    # Through the real path: 250 buyers, a stored baseline of all of them; one more purchase
    # within the minute scores against it and leaves it alone, one after the minute rebuilds it.
    with db.begin() as conn:
        ids = [contact_store.create(conn, f"b{i}@shop.fr", START).id for i in range(251)]
        for i, cid in enumerate(ids[:250]):
            order_store.record(
                conn,
                {
                    "order_key": f"O{i}",
                    "contact_id": cid,
                    "ordered_at": START - timedelta(days=i % 90),
                    "net_amount": float(10 + i),
                    "currency": "EUR",
                    "source": "test",
                    "created_at": START,
                },
                [],
            )
        first = commerce.contact_rfm(conn, ids[0], START, CONFIG)
        assert first is not None
    with db.read() as conn:
        saved = rfm_store.load_baseline(conn)
    assert saved is not None and saved["contacts"] == 250 and saved["computed_at"] == START
    with db.begin() as conn:
        commerce.contact_rfm(conn, ids[1], START + timedelta(seconds=30), CONFIG)
        assert rfm_store.load_baseline(conn)["computed_at"] == START  # type: ignore[index]
        later = START + timedelta(seconds=61)
        commerce.contact_rfm(conn, ids[1], later, CONFIG)
        assert rfm_store.load_baseline(conn)["computed_at"] == later  # type: ignore[index]
