"""Raw columns of an event file, read by PyArrow, and their conversion to ids, numbers, times.

A text file is parsed by PyArrow's multi-threaded CSV reader into Arrow string columns (a
few bytes a value, not a Python object each), and every conversion runs chunk by chunk with
``pyarrow.compute``. :func:`read_blocks` converts a text file a block at a time, so that only
one block's raw columns are held beside the numeric result. Every problem is reported as one
:class:`~nextclick.errors.DataError` line naming the file, the line (or Parquet row) and the
column. Where PyArrow's fast path rejects a chunk, pandas parses that chunk the way nextclick
always has (its ISO-8601 reader accepts more layouts than Arrow's), so a rare layout costs
time, never a different result.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nextclick.errors import DataError

_MISSING = ["", "nan", "NaN", "NAN", "NA", "N/A", "null", "NULL", "None"]
#: An integer id as text (what makes an id column integer, and what ItemIndex accepts).
INT_RE = re.compile(r"^-?\d{1,18}$")
#: What :meth:`Table.ids` reads as an integer (ASCII digits, as int64 parsing needs).
INT_TEXT = r"-?[0-9]{1,18}"
_INT_RE2 = f"^{INT_TEXT}$"  # for pyarrow.compute
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$", re.I)
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_SEP_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon"}
_NOT_TIME = "is not a number or an ISO-8601 timestamp"
# Times are held as nanoseconds in int64 on their way to seconds.
_FIRST, _LAST = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
_OUT_OF_RANGE = "a time outside the years 1678-2261, which nextclick cannot hold"

Required = list[str] | Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class Table:
    """Raw columns of a file with enough bookkeeping to name the line of a bad value."""

    path: Path
    #: Text files: one string column per wanted name; Parquet: the file's own types.
    data: pa.Table
    #: ``"line"`` for text files, ``"row"`` for Parquet.
    where: str
    #: Line number of the first data row (2 with a header line, 1 without).
    first_line: int
    #: 0-based data row in the file of each row, once :meth:`subset` dropped some.
    rows: np.ndarray | None = None
    #: Blocks of one file (:func:`read_blocks`): whether each time column holds numbers
    #: (True) or ISO-8601 text (False), as the file's first value decided. None: the table
    #: is a whole file, and each :meth:`times` call decides from its own first value.
    time_kinds: dict[str, bool] | None = field(default=None, compare=False)

    @property
    def columns(self) -> list[str]:
        return list(self.data.column_names)

    def __len__(self) -> int:
        return self.data.num_rows

    def at(self, position: int) -> str:
        """``file:line`` of the 0-based row ``position`` (``file: row N`` for Parquet)."""
        if self.rows is not None:
            position = int(self.rows[position])
        if self.where == "row":
            return f"{self.path}: row {position + 1}"
        return f"{self.path}:{position + self.first_line}"

    def fail(self, position: int, column: str, what: str) -> DataError:
        return DataError(f"{self.at(position)}: column {column!r}: {what}")

    def subset(self, mask: np.ndarray) -> Table:
        """The rows where ``mask`` is true, still naming their own lines in errors.

        Used to parse a column only on the rows where it must be valid (e.g. the item of
        view events: Coveo page views have no product).
        """
        keep = np.flatnonzero(mask)
        rows = keep if self.rows is None else self.rows[keep]
        return replace(self, data=self.data.take(pa.array(keep)), rows=rows)

    def with_column(self, column: str, values: pa.ChunkedArray) -> Table:
        """The same table with ``column`` replaced (e.g. a suffix stripped from its text)."""
        data = self.data.set_column(self.data.column_names.index(column), column, values)
        return replace(self, data=data)

    def text(self, column: str) -> pa.ChunkedArray:
        """A column as stripped strings, missing values as ``""``."""
        values = self.data.column(column)
        if not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        return pc.fill_null(pc.utf8_trim_whitespace(values), "")

    def equals(self, column: str, value: str) -> np.ndarray:
        """Where the stripped ``column`` is ``value`` (``""``: empty or missing)."""
        return _bools(pc.equal(self.text(column), value))

    def ids(self, column: str) -> np.ndarray:
        """Ids as int64 when every value is an integer, else as str."""
        values = self.data.column(column)
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            self._check_present(column)
            numbers = values.to_numpy()
            if pa.types.is_integer(values.type) or np.all(np.mod(numbers, 1) == 0):
                return numbers.astype(np.int64)
        chunks = list(self._strings(column))
        if all(pc.all(pc.match_substring_regex(chunk, _INT_RE2)).as_py() for _, chunk in chunks):
            return _concat((pc.cast(chunk, pa.int64()).to_numpy() for _, chunk in chunks), np.int64)
        text = (chunk.to_numpy(zero_copy_only=False) for _, chunk in chunks)
        return _concat(text, np.str_).astype(str)

    def numbers(self, column: str) -> np.ndarray:
        """Finite numbers as float64."""
        return self._numbers(column, "is not a number")

    def times(self, column: str) -> np.ndarray:
        """Times as float64: numbers as they are, ISO-8601 timestamps as Unix seconds.

        The first value decides which of the two the column holds; the first value of the
        other kind is then the error.
        """
        values = self.data.column(column)
        if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
            self._check_present(column)
            try:
                stamps = pc.cast(values, pa.timestamp("ns"))
            except pa.ArrowInvalid:
                raise DataError(f"{self.path}: column {column!r}: {_OUT_OF_RANGE}") from None
            return _ns_seconds(stamps.to_numpy().view(np.int64))
        if not _is_text(values.type):
            return self._numbers(column, _NOT_TIME)
        chunks = self._strings(column)
        first = next(chunks, None)
        if first is None:
            return np.zeros(0, dtype=np.float64)
        kinds = {} if self.time_kinds is None else self.time_kinds
        if kinds.setdefault(column, bool(_NUMBER_RE.match(first[1][0].as_py()))):
            return self._numbers(column, _NOT_TIME)
        parts = [self._iso_chunk(column, *first)]
        parts.extend(self._iso_chunk(column, offset, chunk) for offset, chunk in chunks)
        return _concat(parts, np.float64)

    def _iso_chunk(self, column: str, offset: int, chunk: pa.Array) -> np.ndarray:
        try:  # Arrow's reader never takes a bare number for a timestamp, as the rule needs
            stamps = pc.cast(chunk, pa.timestamp("ns", tz="UTC"))
            return _ns_seconds(stamps.to_numpy().view(np.int64))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        text = chunk.to_pandas()
        stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        bad = stamps.isna().to_numpy() | pd.to_numeric(text, errors="coerce").notna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise self.fail(offset + pos, column, f"{chunk[pos].as_py()!r} {_NOT_TIME}")
        outside = ~stamps.between(_FIRST, _LAST).to_numpy()
        if outside.any():
            pos = int(np.flatnonzero(outside)[0])
            raise self.fail(offset + pos, column, f"{chunk[pos].as_py()!r}: {_OUT_OF_RANGE}")
        return _datetime_seconds(stamps)

    def _numbers(self, column: str, what: str) -> np.ndarray:
        values = self.data.column(column)
        if _is_text(values.type):
            parts = (self._number_chunk(column, offset, chunk, what)
                     for offset, chunk in self._strings(column))  # fmt: skip
            return _concat(parts, np.float64)
        self._check_present(column)
        numbers = values.to_numpy().astype(np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise self.fail(pos, column, f"{str(numbers[pos])!r} {what}")
        return numbers

    def _number_chunk(self, column: str, offset: int, chunk: pa.Array, what: str) -> np.ndarray:
        try:
            numbers = pc.cast(chunk, pa.float64()).to_numpy()
        except pa.ArrowInvalid:  # find the value; take pandas' reading of what Arrow refused
            numbers = pd.to_numeric(chunk.to_pandas(), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise self.fail(offset + pos, column, f"{chunk[pos].as_py()!r} {what}")
        return numbers

    def _strings(self, column: str) -> Iterator[tuple[int, pa.Array]]:
        """(offset, stripped chunk) of a text column, after checking that none is missing."""
        values = self.data.column(column)
        if not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        offset = 0
        for chunk in values.chunks:
            if len(chunk) == 0:
                continue
            chunk = pc.utf8_trim_whitespace(chunk)
            missing = pc.or_kleene(pc.is_null(chunk), pc.is_in(chunk, pa.array(_MISSING)))
            self._raise_first(missing, offset, column)
            yield offset, chunk
            offset += len(chunk)

    def _check_present(self, column: str) -> None:
        """Nulls (and NaN in float columns) of a typed column are missing values."""
        offset = 0
        for chunk in self.data.column(column).chunks:
            missing = pc.is_null(chunk, nan_is_null=True)
            self._raise_first(missing, offset, column)
            offset += len(chunk)

    def _raise_first(self, mask: pa.Array, offset: int, column: str) -> None:
        if pc.any(mask).as_py():
            raise self.fail(offset + int(np.flatnonzero(_bools(mask))[0]), column, "missing value")


def release_unused() -> None:
    """Hand the memory of dropped Arrow columns back to the system. Arrow's allocator keeps
    freed memory for its own reuse, out of NumPy's and pandas' reach: after reading RSC15's
    33M raw clicks that is ~2.7 GB that the protocol's sorts would otherwise add to."""
    pa.default_memory_pool().release_unused()


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _bools(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _concat(parts: Iterable[np.ndarray], dtype: type) -> np.ndarray:
    parts = list(parts)
    if not parts:  # a subset without rows
        return np.zeros(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _ns_seconds(ns: np.ndarray) -> np.ndarray:
    # The one conversion of every time path (ns, then seconds), so all give the same floats.
    return ns.astype(np.float64) / 1e9


def _datetime_seconds(stamps: pd.Series) -> np.ndarray:
    """Unix seconds of pandas timestamps (naive ones are UTC)."""
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return _ns_seconds(stamps.to_numpy(dtype="datetime64[ns]").view(np.int64))


# ---------------------------------------------------------------------------------------
# Reading


def read_table(
    path: str | Path,
    *,
    required: Required,
    sep: str | None = None,
    names: list[str] | None = None,
) -> Table:
    """Read the ``required`` columns of a TSV/CSV (maybe gzipped) or Parquet file.

    Parameters
    ----------
    required
        Column names to read, or a function of the header that returns them (and raises
        :class:`DataError` when the header lacks one).
    sep
        Field separator; by default tab, ``;`` or ``,``, whichever the first line contains.
    names
        Column names for a file without a header line (then ``required`` picks among them).

    Raises
    ------
    DataError
        For a missing file or column, an empty, binary or ragged file, or bad UTF-8 in a
        column that is read (the others are split into fields but not decoded).
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "parquet":
        return _read_parquet(path, required)
    return _read_text(path, required, sep, names, gzipped=kind == "gzip")


def _kind(path: Path) -> str:
    """``"parquet"``, ``"gzip"`` (gzipped text) or ``"text"``, by content (and suffix)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == _PARQUET_MAGIC or path.suffix in {".parquet", ".pq"}:
        return "parquet"
    return "gzip" if magic[:2] == _GZIP_MAGIC else "text"


def _columns(header: list[str], required: Required, path: Path) -> list[str]:
    wanted = required(header) if callable(required) else list(required)
    for name in wanted:
        if name not in header:
            raise DataError(f"{path}: missing column {name!r}; columns found: {', '.join(header)}")
    return wanted


def _first_line(path: Path, gzipped: bool) -> str:
    """The header (or first) line, after checking the file is non-empty UTF-8 text."""
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
            head = fh.read(65536)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if not head.strip():
        raise DataError(f"{path}: file is empty, expected a header line and events")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"{path}: looks like a binary file (NUL byte at offset {nul}), "
            "expected a text TSV/CSV or a Parquet file"
        )
    try:
        return head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}:1: not valid UTF-8 text") from None


def _read_text(
    path: Path, required: Required, sep: str | None, names: list[str] | None, gzipped: bool
) -> Table:
    header, wanted, sep = _text_layout(path, required, sep, names, gzipped)
    try:
        data = _arrow_csv(_source(path, gzipped), header, wanted, sep, names is None)
    except pa.ArrowInvalid as exc:
        raise _parse_error(path, header, wanted, sep, names, gzipped, exc) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from None
    if data.num_rows == 0:
        raise DataError(f"{path}: has a header but no events")
    return Table(path, data, "line", 1 if names is not None else 2)


def _text_layout(
    path: Path, required: Required, sep: str | None, names: list[str] | None, gzipped: bool
) -> tuple[list[str], list[str], str]:
    """(header, wanted columns, separator) of a text file."""
    first = _first_line(path, gzipped)
    if sep is None:
        sep = next((s for s in ("\t", ";", ",") if s in first), "\t")
    header = names if names is not None else [h.strip().strip('"') for h in first.split(sep)]
    return header, _columns(header, required, path), sep


def _source(path: Path, gzipped: bool) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="gzip" if gzipped else None)


# ---------------------------------------------------------------------------------------
# Reading a block at a time

#: Bytes of (decompressed) text that :func:`read_blocks` parses and converts at a time.
BLOCK_BYTES = 64 << 20

Columns = tuple[np.ndarray, ...]


class _WholeFile(Exception):
    """The blocks cannot give the whole file's result by themselves: convert it whole."""


def read_blocks(
    path: str | Path,
    convert: Callable[[Table], Columns],
    *,
    required: Required,
    sep: str | None = None,
    names: list[str] | None = None,
) -> tuple[Columns, int]:
    """``convert(read_table(path, ...))`` and the file's row count, computed on a text file
    one block of ``BLOCK_BYTES`` at a time, so that the raw columns of one block (not of the
    whole file) are held beside the converted arrays.

    ``convert`` must work row by row: its arrays for the whole file are those of the blocks,
    one after the other. The result and every error are those of the whole-file call: a time
    column takes the kind (number or ISO-8601) that the file's first value decides, and where
    the blocks cannot decide alone (ids that are integers in one block and text in another)
    or any block fails (a bad value, a ragged line), the file is read and converted whole,
    so that an error names the line and column it always named. So is a file where a block
    would end inside a quoted value (a quoted line break) or that has no line end in a block's
    length. Parquet files are read whole.
    """
    path = Path(path)
    kind = _kind(path)
    if kind != "parquet":
        try:
            return _converted_blocks(path, kind == "gzip", convert, required, sep, names)
        except Exception:  # any failure: the whole file gives the result, or its error
            pass
    table = read_table(path, required=required, sep=sep, names=names)
    return convert(table), len(table)


def _converted_blocks(
    path: Path,
    gzipped: bool,
    convert: Callable[[Table], Columns],
    required: Required,
    sep: str | None,
    names: list[str] | None,
) -> tuple[Columns, int]:
    """:func:`read_blocks` without the fall-back: raises :class:`_WholeFile` (or the error
    of a block) where the blocks cannot give the whole file's result."""
    header, wanted, sep = _text_layout(path, required, sep, names, gzipped)
    parts: list[Columns] = []
    time_kinds: dict[str, bool] = {}
    first_line = 1 if names is not None else 2
    rows = 0
    for number, text in enumerate(_line_blocks(_source(path, gzipped))):
        has_header = names is None and number == 0
        data = _arrow_csv(pa.BufferReader(text), header, wanted, sep, has_header)
        parts.append(convert(Table(path, data, "line", first_line + rows, time_kinds=time_kinds)))
        rows += data.num_rows
    if rows == 0:
        raise _WholeFile  # for the whole file's error
    return tuple(_joined([part[i] for part in parts]) for i in range(len(parts[0]))), rows


def _line_blocks(source: pa.NativeFile) -> Iterator[bytes]:
    """The text in blocks of about ``BLOCK_BYTES``, each ending at the end of a line.

    Raises :class:`_WholeFile` where no line end comes within a block's length (lone CR line
    ends, or a line longer than a block) and where a block would end inside a quoted value
    (an odd number of quote characters: ``""`` inside quotes counts two)."""
    rest = b""
    with source:
        while chunk := source.read(BLOCK_BYTES):
            text = rest + chunk
            end = text.rfind(b"\n") + 1
            if (not end and len(text) > BLOCK_BYTES) or text.count(b'"', 0, end) % 2:
                raise _WholeFile
            rest = text[end:]
            if end:
                yield text[:end]
    if rest:
        yield rest


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """One column from the blocks' parts; ids of different kinds need the whole file."""
    filled = [part for part in parts if len(part)] or parts[:1]
    if len({part.dtype.kind for part in filled}) > 1:
        raise _WholeFile
    return _concat(filled, filled[0].dtype)


def _arrow_csv(
    source: pa.NativeFile,
    header: list[str],
    wanted: list[str],
    sep: str,
    has_header: bool,
    use_threads: bool = True,
    on_invalid: Callable | None = None,
) -> pa.Table:
    import pyarrow.csv as pcsv

    # Every column is split (not just ``wanted``), so that a ragged line is an error; an
    # empty line is a row of blanks (a missing value), as it was for the pandas reader.
    return pcsv.read_csv(
        source,
        read_options=pcsv.ReadOptions(
            column_names=header, skip_rows=int(has_header), use_threads=use_threads
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=sep, ignore_empty_lines=False, invalid_row_handler=on_invalid
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _parse_error(
    path: Path,
    header: list[str],
    wanted: list[str],
    sep: str,
    names: list[str] | None,
    gzipped: bool,
    exc: Exception,
) -> DataError:
    """The one-line error for what Arrow's reader rejected; it re-reads on one thread, as
    only then does Arrow know the line number of a ragged row."""
    if "UTF8" in str(exc) or "UTF-8" in str(exc):
        return DataError(f"{path}:{_first_bad_utf8_line(path, gzipped)}: not valid UTF-8 text")
    rows: list = []

    def on_invalid(row: object) -> str:
        rows.append(row)
        return "error"

    try:
        _arrow_csv(_source(path, gzipped), header, wanted, sep, names is None, False, on_invalid)
    except (pa.ArrowInvalid, OSError):
        pass
    if not rows:
        return DataError(f"{path}: cannot parse as {sep!r}-separated text ({exc})")
    row = rows[0]
    where = f"{path}:{row.number}" if row.number is not None else str(path)
    n, seen = row.expected_columns, row.actual_columns
    if seen < n:
        return DataError(f"{where}: column {header[seen]!r}: missing value")
    if names is not None:  # no header to count against: name the layout expected
        return DataError(
            f"{where}: column {names[-1]!r}: more than {n} "
            f"{_SEP_NAMES.get(sep, repr(sep))}-separated fields (expected {','.join(names)})"
        )
    return DataError(f"{where}: expected {n} fields separated by {sep!r}, saw {seen}")


def _first_bad_utf8_line(path: Path, gzipped: bool) -> int:
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _read_parquet(path: Path, required: Required) -> Table:
    import pyarrow.parquet as pq

    try:
        header = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several unrelated types for broken files
        raise DataError(f"{path}: not a valid Parquet file ({type(exc).__name__})") from None
    wanted = _columns(header, required, path)
    data = pq.read_table(path, columns=wanted)
    for i, column in enumerate(data.schema):
        if pa.types.is_dictionary(column.type):  # pandas' categoricals: their values
            data = data.set_column(i, column.name, pc.cast(data.column(i), column.type.value_type))
    if data.num_rows == 0:
        raise DataError(f"{path}: Parquet file has no rows")
    return Table(path, data, "row", 1)
