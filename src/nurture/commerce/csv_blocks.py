"""A CSV file as a stream of polars frames: every column as text, every row with its line number.

The file is read in byte blocks cut at a record boundary (a newline outside quotes: RFC 4180
doubles a quote inside a quoted field, so the quote count before a boundary is even), and each
block is parsed by polars. Memory is bounded by the block size whatever the file size, and the
caller can report progress from the file position.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import polars as pl

from nurture.errors import FieldProblem, InvalidFields

# About 40,000 typical order lines: large enough that polars' per-call cost is noise, small
# enough for a progress bar that moves and a flat memory profile (~10x the block in frames).
BLOCK_BYTES = 2 << 20
LINE = "_line"
_UTF8 = frozenset({"utf-8", "utf-8-sig"})


@dataclass(frozen=True)
class CsvHeader:
    names: list[str]
    delimiter: str
    encoding: str

    @property
    def columns(self) -> list[str]:
        """The frame's column names: positional, since a header may repeat or omit names."""
        return [f"c{i}" for i in range(len(self.names))]


def read_header(source: IO[bytes], encoding: str, delimiter: str | None) -> CsvHeader:
    """Read the header line; the delimiter, unless given, is the most frequent of ``; , tab |``
    in it."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InvalidFields([FieldProblem("encoding", f"unknown encoding {encoding!r}")]) from None
    if name.startswith(("utf-16", "utf-32")):
        raise InvalidFields([FieldProblem("encoding", f"{encoding}: convert the file to UTF-8")])
    first = source.readline()
    if not first:
        raise InvalidFields([FieldProblem("file", "is empty (no header row)")])
    text = _decode(first, encoding, 1)
    if delimiter is None:
        counts = {d: text.count(d) for d in (";", ",", "\t", "|")}
        delimiter = max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    names = next(csv.reader([text], delimiter=delimiter), [])
    if not names:
        raise InvalidFields([FieldProblem("file", "is empty (no header row)")])
    return CsvHeader(names=names, delimiter=delimiter, encoding=name)


def _decode(data: bytes, encoding: str, first_line: int) -> str:
    """``data`` (starting at line ``first_line``) as text; an undecodable byte is reported
    with its line."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        problem = f"not {encoding} text at line {line} ({exc.reason}); try --encoding cp1252"
        raise InvalidFields([FieldProblem("file", problem)]) from None


def _boundary(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` that ends with a newline outside quotes (0 if
    none yet)."""
    quotes = buf.count(b'"')
    end = len(buf)
    while (pos := buf.rfind(b"\n", 0, end)) >= 0:
        quotes -= buf.count(b'"', pos + 1, end)
        if quotes % 2 == 0:
            return pos + 1
        end = pos
    return 0


def blocks(source: IO[bytes], size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Record-aligned blocks of the rest of the file (after the header)."""
    pending = b""
    while data := source.read(size):
        buf = pending + data
        cut = _boundary(buf)
        pending = buf[cut:]
        if cut:
            yield buf[:cut]
    if pending:
        yield pending


def frames(source: IO[bytes], header: CsvHeader, size: int = BLOCK_BYTES) -> Iterator[pl.DataFrame]:
    """Each block as a frame of text columns ``c0..cN`` plus ``_line`` (where the row starts in
    the file, the header being line 1); blank rows are dropped, short rows padded with nulls,
    long rows truncated."""
    columns = header.columns
    first_line = 2
    for block in blocks(source, size):
        data = block
        if header.encoding not in _UTF8:
            data = _decode(block, header.encoding, first_line).encode()
        try:
            frame = pl.read_csv(
                data,
                has_header=False,
                schema=dict.fromkeys(columns, pl.String()),
                separator=header.delimiter,
                truncate_ragged_lines=True,
                missing_columns="insert",  # a block may hold only short (or blank) rows
                raise_if_empty=False,
            )
        except pl.exceptions.PolarsError as exc:
            _decode(block, header.encoding, first_line)  # polars checks UTF-8 but says not where
            problem = f"unreadable after line {first_line}: {str(exc).splitlines()[0]}"
            raise InvalidFields([FieldProblem("file", problem)]) from None
        newlines = block.count(b"\n")
        physical = newlines + (0 if block.endswith(b"\n") else 1)
        index = pl.int_range(pl.len(), dtype=pl.Int64)
        if frame.height == physical:
            line = index + first_line
        else:  # quoted fields with newlines: a row starts after all earlier rows' lines
            inside = pl.sum_horizontal(
                pl.col(c).str.count_matches("\n", literal=True).fill_null(0) for c in columns
            )
            line = index + first_line + inside.cum_sum() - inside
        blank = pl.all_horizontal(
            pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in columns
        )
        yield frame.with_columns(line.cast(pl.Int64).alias(LINE)).filter(~blank)
        first_line += newlines
