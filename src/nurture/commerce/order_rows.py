"""Order-line rows of a CSV file, cleaned and validated column-wise (polars). Pure.

Every rule of the row-by-row reader this replaced is an expression here, and each rejected row
gets the first reason that applies, in this order: order id, date, e-mail, product, quantity,
unit price, net amount, gross amount. Two things stay in Python, once per distinct value rather
than once per row: dates in shapes other than the plain day-first and ISO dates (date-times,
offsets) and product keys derived from labels.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl

from nurture.commerce.csv_blocks import LINE
from nurture.commerce.purchases import product_key_from_label

REASON = "_reason"
# Date shapes parsed column-wise; the shapes are disjoint, so no value matches two formats.
DATE_SHAPES = (
    (r"^\d{1,2}/\d{1,2}/\d{4}$", "%d/%m/%Y"),
    (r"^\d{4}-\d{1,2}-\d{1,2}$", "%Y-%m-%d"),
    (r"^\d{1,2}-\d{1,2}-\d{4}$", "%d-%m-%Y"),
    (r"^\d{4}/\d{1,2}/\d{1,2}$", "%Y/%m/%d"),
    (r"^\d{1,2}\.\d{1,2}\.\d{4}$", "%d.%m.%Y"),
    (r"^\d{4}\.\d{1,2}\.\d{1,2}$", "%Y.%m.%d"),
)
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # the same test as core.events.normalise_email
UTC_US = pl.Datetime("us", "UTC")

# The frame ``clean`` returns (besides the original columns and ``_line``).
CLEAN_SCHEMA = pl.Schema(
    {
        "order_key": pl.String(),
        "email": pl.String(),
        "client_code": pl.String(),
        "ordered_at": UTC_US,
        "product_key": pl.String(),
        "label": pl.String(),
        "line_key": pl.String(),
        "quantity": pl.Float64(),
        "unit_price": pl.Float64(),
        "net_amount": pl.Float64(),
        "gross_amount": pl.Float64(),
        "currency": pl.String(),
        REASON: pl.String(),
    }
)


def text(column: pl.Expr) -> pl.Expr:
    """A cell trimmed, empty as null."""
    trimmed = column.str.strip_chars()
    return pl.when(trimmed != "").then(trimmed)


def _normalised(cell: pl.Expr) -> pl.Expr:
    """Separators removed: a comma after the last dot is the decimal separator, spaces,
    apostrophes and other commas or dots are grouping."""
    squeezed = cell.str.replace_all(r"[\s\u00a0\u202f']", "")
    decimal_comma = squeezed.str.contains(r",[^.]*$")
    return (
        pl.when(decimal_comma)
        .then(
            squeezed.str.replace_all(".", "", literal=True).str.replace_all(",", ".", literal=True)
        )
        .otherwise(squeezed.str.replace_all(",", "", literal=True))
        .cast(pl.Float64, strict=False)
    )


def numbers(cells: pl.Series) -> tuple[pl.Series, pl.Series]:
    """``(values, unreadable)`` of trimmed text cells: ``1 234,56``, ``1.234,56``,
    ``1,234.56``, ``-3``, ``1e3``. Empty is null and readable; infinities and NaN are
    unreadable (and null).

    A plain float cast first; the separator rules (string rewriting, a dozen times slower) run
    only on the distinct cells the cast could not read."""
    values = cells.cast(pl.Float64, strict=False)
    retry = values.is_null() & cells.is_not_null()
    if retry.any():
        others = cells.filter(retry).unique()
        read = pl.select(_normalised(pl.lit(others))).to_series()
        values = values.fill_null(cells.replace_strict(others, read, default=None))
    unreadable = cells.is_not_null() & (values.is_null() | ~values.is_finite())
    return values.set(unreadable, None), unreadable


def dates(cells: pl.Series, fallback: Callable[[str], datetime]) -> pl.Series:
    """Trimmed text to UTC date-times (a date alone is midnight UTC); unreadable -> null.
    ``fallback`` reads each distinct value of another shape once (raising ``ValueError``)."""
    frame = pl.DataFrame({"cell": cells})
    cell = pl.col("cell")
    parsed = pl.coalesce(
        pl.when(cell.str.contains(shape)).then(cell.str.strptime(pl.Date, fmt, strict=False))
        for shape, fmt in DATE_SHAPES
    )
    out = frame.select(parsed.cast(UTC_US).alias("at"), cell)
    others = out.filter(pl.col("at").is_null() & cell.is_not_null()).get_column("cell").unique()
    if others.len() == 0:
        return out.get_column("at")
    found: dict[str, datetime] = {}
    for value in others.to_list():
        try:
            found[value] = fallback(value).astimezone(UTC)
        except ValueError:
            continue
    if not found:
        return out.get_column("at")
    known = pl.DataFrame(
        {"cell": list(found), "other": list(found.values())},
        schema={"cell": pl.String(), "other": UTC_US},
    )
    return (
        out.join(known, on="cell", how="left", maintain_order="left")
        .select(pl.coalesce("at", "other"))
        .to_series()
        .alias(cells.name)
    )


def _keys_from_labels(labels: pl.Series) -> pl.Series:
    distinct = labels.drop_nulls().unique()
    keys = [product_key_from_label(label) or None for label in distinct.to_list()]
    return labels.replace_strict(distinct, keys, default=None, return_dtype=pl.String())


def _general(value: pl.Expr) -> pl.Expr:
    """A float the way ``f"{x:g}"`` writes the usual ones: ``-2``, ``0``, ``-2.5``."""
    whole = (value == value.round(0)) & (value.abs() < 1e15)
    return (
        pl.when(whole).then(value.cast(pl.Int64).cast(pl.String)).otherwise(value.cast(pl.String))
    )


def _quoted(cell: pl.Expr) -> pl.Expr:
    return pl.format("'{}'", cell)


def clean(
    frame: pl.DataFrame,
    cols: dict[str, str],
    currency: str | None,
    parse_date: Callable[[str], datetime],
) -> pl.DataFrame:
    """Add the ``CLEAN_SCHEMA`` columns to a frame of text cells; ``cols`` maps a target field
    (``order_id``, ``date``, ...) to the frame column holding it. A row with a ``_reason`` is
    rejected; the others are ready to store (amounts rounded to cents, keys truncated to the
    column sizes)."""

    def cell(name: str) -> pl.Expr:
        source = cols.get(name)
        return text(pl.col(source)) if source is not None else pl.lit(None, pl.String())

    raw = frame.select(
        pl.col(LINE),
        cell("order_id").alias("order_key"),
        cell("date").alias("date"),
        cell("email").alias("raw_email"),
        cell("client_code").alias("client_code"),
        cell("product_key").alias("given_key"),
        cell("product_label").str.replace_all(r"\s+", " ").alias("label"),
        cell("line").alias("line"),
        cell("quantity").alias("raw_quantity"),
        cell("unit_price").alias("raw_unit_price"),
        cell("net_amount").alias("raw_net"),
        cell("gross_amount").alias("raw_gross"),
        cell("currency").alias("raw_currency"),
    )
    raw = raw.with_columns(
        dates(raw.get_column("date"), parse_date).alias("ordered_at"),
        pl.coalesce(pl.col("given_key"), _keys_from_labels(raw.get_column("label"))).alias(
            "product_key"
        ),
    )
    email = pl.col("raw_email").str.to_lowercase()
    parsed = {
        name: numbers(raw.get_column(f"raw_{name}"))
        for name in ("quantity", "unit_price", "net", "gross")
    }
    raw = raw.with_columns(
        pl.when(email.str.contains(EMAIL)).then(email).alias("email"),
        *(parsed[n][0].alias(n) for n in parsed),
        *(parsed[n][1].alias(f"bad_{n}") for n in parsed),
    ).with_columns(
        pl.col("quantity").fill_null(pl.when(~pl.col("bad_quantity")).then(1.0)),
    )
    c = pl.col
    reason = (
        pl.when(c("order_key").is_null())
        .then(pl.lit("missing order_id"))
        .when(c("date").is_null())
        .then(pl.lit("missing date"))
        .when(c("ordered_at").is_null())
        .then(pl.format("bad date: {}", _quoted(c("date"))))
        .when(c("raw_email").is_not_null() & c("email").is_null())
        .then(pl.format("invalid email: {}", _quoted(c("raw_email"))))
        .when(c("email").is_null() & c("client_code").is_null())
        .then(pl.lit("missing email"))
        .when(c("product_key").is_null())
        .then(pl.lit("missing product: product_key or product_label"))
        .when(c("bad_quantity"))
        .then(pl.format("not a number: {}", _quoted(c("raw_quantity"))))
        .when(c("quantity") <= 0)
        .then(pl.format("quantity must be positive: {}", _general(c("quantity"))))
        .when(c("bad_unit_price"))
        .then(pl.format("not a number: {}", _quoted(c("raw_unit_price"))))
        .when(c("bad_net"))
        .then(pl.format("not a number: {}", _quoted(c("raw_net"))))
        .when(c("net").is_null() & c("unit_price").is_null())
        .then(pl.lit("missing net_amount (and no unit_price)"))
        .when(c("bad_gross"))
        .then(pl.format("not a number: {}", _quoted(c("raw_gross"))))
        .otherwise(None)
    )
    default_currency = (currency or "").strip().upper()[:3] or None
    cleaned = raw.select(
        c("order_key").str.slice(0, 200),
        c("email"),
        c("client_code"),
        c("ordered_at"),
        c("product_key").str.slice(0, 200),
        c("label").str.slice(0, 400),
        pl.coalesce(c("line"), c("product_key")).str.slice(0, 200).alias("line_key"),
        c("quantity"),
        c("unit_price"),
        pl.coalesce(c("net"), c("quantity") * c("unit_price")).round(2).alias("net_amount"),
        c("gross").round(2).alias("gross_amount"),
        pl.coalesce(c("raw_currency").str.to_uppercase(), pl.lit(default_currency, pl.String()))
        .str.slice(0, 3)
        .alias("currency"),
        reason.alias(REASON),
    )
    return pl.concat([frame, cleaned.cast(CLEAN_SCHEMA)], how="horizontal")
