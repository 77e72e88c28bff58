"""Column-wise cleaning of order-line rows (commerce/order_rows.py) and the CSV block reader
(commerce/csv_blocks.py)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import polars as pl
import pytest

from nurture.commerce import csv_blocks, imports, order_rows
from nurture.errors import InvalidFields

COLS = {
    "order_id": "c0",
    "email": "c1",
    "date": "c2",
    "product_key": "c3",
    "quantity": "c4",
    "unit_price": "c5",
    "net_amount": "c6",
    "gross_amount": "c7",
    "product_label": "c8",
    "client_code": "c9",
}


def clean(*rows: tuple[str | None, ...], currency: str | None = None) -> list[dict[str, object]]:
    names = [f"c{i}" for i in range(10)]
    frame = pl.DataFrame(
        [tuple(r) + (None,) * (10 - len(r)) for r in rows],
        schema=dict.fromkeys(names, pl.String()),
        orient="row",
    ).with_row_index(csv_blocks.LINE, offset=2)
    out = order_rows.clean(
        frame.with_columns(pl.col(csv_blocks.LINE).cast(pl.Int64)),
        COLS,
        currency,
        imports.parse_date,
    )
    return out.drop(names).to_dicts()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("", "a@b.fr", "bad", "P", "-1"), "missing order_id"),
        (("O1", "nope", "", "P", "-1"), "missing date"),
        (("O1", "nope", "31/02/2026", "P", "-1"), "bad date: '31/02/2026'"),
        (("O1", "nope", "2026-01-02", "", "-1"), "invalid email: 'nope'"),
        (("O1", "", "2026-01-02", "", "-1"), "missing email"),
        (("O1", "a@b.fr", "2026-01-02", "", "-1"), "missing product: product_key or product_label"),
        (("O1", "a@b.fr", "2026-01-02", "P", "x2"), "not a number: 'x2'"),
        (("O1", "a@b.fr", "2026-01-02", "P", "-2,5"), "quantity must be positive: -2.5"),
        (("O1", "a@b.fr", "2026-01-02", "P", "0"), "quantity must be positive: 0"),
        (("O1", "a@b.fr", "2026-01-02", "P", "1", "inf"), "not a number: 'inf'"),
        (("O1", "a@b.fr", "2026-01-02", "P", "1", "2", "1..2"), "not a number: '1..2'"),
        (("O1", "a@b.fr", "2026-01-02", "P", "1", ""), "missing net_amount (and no unit_price)"),
        (("O1", "a@b.fr", "2026-01-02", "P", "1", "2", "2", "zwei"), "not a number: 'zwei'"),
    ],
)
def test_each_row_gets_the_first_reason_that_applies(row: tuple[str, ...], reason: str) -> None:
    [out] = clean(row)
    assert out[order_rows.REASON] == reason


def test_accepted_rows_are_normalised() -> None:
    rows = clean(
        (
            " O1 ",
            " Ann@Shop.FR ",
            "05/10/2026",
            "",
            "",
            "12,50",
            "",
            "1 234,56",
            "  Crémant  d'Alsace ",
        ),
        ("O2", "", "2026-10-05T10:30:00+02:00", "P9", "2", "", "3.333", None, None, "CL1"),
        currency="eur",
    )
    first, second = rows
    assert first == {
        csv_blocks.LINE: 2,
        "order_key": "O1",
        "email": "ann@shop.fr",
        "client_code": None,
        "ordered_at": datetime(2026, 10, 5, tzinfo=UTC),
        "product_key": "CREMANT D ALSACE",
        "label": "Crémant d'Alsace",
        "line_key": "CREMANT D ALSACE",
        "quantity": 1.0,
        "unit_price": 12.5,
        "net_amount": 12.5,  # empty net: quantity x unit price
        "gross_amount": 1234.56,
        "currency": "EUR",
        order_rows.REASON: None,
    }
    # a date-time with an offset goes through the per-value fallback and lands in UTC
    assert second["ordered_at"] == datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
    assert (second["net_amount"], second["client_code"], second["email"]) == (3.33, "CL1", None)


def test_numbers_column_wise() -> None:
    cells = pl.Series(["1 234,56", "1.234,56", "1,234.56", "-3", "12,5", None, "1\u00a0000", "nan"])
    values, unreadable = order_rows.numbers(cells)
    assert values.to_list() == [1234.56, 1234.56, 1234.56, -3.0, 12.5, None, 1000.0, None]
    assert unreadable.to_list() == [False] * 7 + [True]


def test_dates_column_wise_fall_back_once_per_distinct_value() -> None:
    seen: list[str] = []

    def fallback(text: str) -> datetime:
        seen.append(text)
        return imports.parse_date(text)

    cells = pl.Series(["31/12/2026", "2026-12-31T23:00:00Z", "2026-12-31T23:00:00Z", "soon", None])
    got = order_rows.dates(cells, fallback).to_list()
    assert got[:2] == [datetime(2026, 12, 31, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC)]
    assert got[2:] == [datetime(2026, 12, 31, 23, tzinfo=UTC), None, None]
    assert sorted(seen) == ["2026-12-31T23:00:00Z", "soon"]


@pytest.mark.parametrize(
    ("data", "cut"),
    [
        (b"a,b\nc,d\ne", 8),
        (b'a,"b\nc",d\n', 10),
        (b'a,"b\nc', 0),  # the only newline is inside quotes: wait for more
        (b'a,"say ""hi""",c\nd', 17),
    ],
)
def test_blocks_end_outside_quotes(data: bytes, cut: int) -> None:
    assert csv_blocks._boundary(data) == cut


def read(text: bytes, size: int, encoding: str = "utf-8-sig") -> list[pl.DataFrame]:
    source = io.BytesIO(text)
    header = csv_blocks.read_header(source, encoding, None)
    return list(csv_blocks.frames(source, header, size))


def test_frames_number_lines_across_blocks_blanks_and_quoted_newlines() -> None:
    text = b'a;b\n1;x\n\n2;"two\nlines"\n   ;  \n3;y\r\n4;"z"\n'
    expected = [(2, "1", "x"), (4, "2", "two\nlines"), (7, "3", "y"), (8, "4", "z")]
    for size in (1, 5, 1 << 20):
        frames = read(text, size)
        rows = [r for f in frames for r in f.select(csv_blocks.LINE, "c0", "c1").rows()]
        assert rows == expected, size


def test_frames_decode_other_encodings_and_refuse_bad_bytes() -> None:
    [frame] = read("n;nom\n1;Crémant\n".encode("cp1252"), 1 << 20, "cp1252")
    assert frame.get_column("c1").to_list() == ["Crémant"]
    with pytest.raises(InvalidFields, match="not utf-8-sig text at line 3"):
        read(b"n;nom\n1;ok\n2;Cr\xe9mant\n", 1 << 20)
    with pytest.raises(InvalidFields, match="convert the file to UTF-8"):
        read(b"a\n", 10, "utf-16")
    with pytest.raises(InvalidFields, match="is empty"):
        read(b"", 10)
