"""Reading and writing event files (TSV/CSV, optionally gzipped, and Parquet).

Every problem with a file is reported as one :class:`~nextclick.errors.DataError` line that
names the file, the line (or Parquet row) and the column, so that the CLI can print it
without a traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nextclick.errors import DataError

SESSION, ITEM, TIME = "SessionId", "ItemId", "Time"
#: Column used for ordering when a file has positions instead of timestamps (SR-GNN benchmarks).
POSITION = "Pos"
_MISSING = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "null", "NULL", "None"})
#: An integer id as text (what makes an id column integer, and what ItemIndex accepts).
INT_RE = re.compile(r"^-?\d{1,18}$")
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class EventColumns:
    """Names of the session, item and time columns of an input file.

    ``time=None`` takes ``Time`` when the file has it and ``Pos`` otherwise.
    """

    session: str = SESSION
    item: str = ITEM
    time: str | None = None


def read_events(
    path: str | os.PathLike[str],
    columns: EventColumns | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read an event file into a frame with columns ``SessionId, ItemId, Time``.

    Parameters
    ----------
    path
        TSV/CSV file (gzip detected from its content) or Parquet file.
    columns
        Column names in the file; the result always uses the standard names.
    sep
        Field separator; by default tab, ``;`` or ``,``, whichever the header line contains.

    Returns
    -------
    pandas.DataFrame
        ``SessionId`` and ``ItemId`` as int64 when every value is an integer, else str;
        ``Time`` as float64 (seconds for ISO timestamps). Rows are sorted by session, then
        time; the sort is stable, so events with equal times keep their file order.
    """
    columns = columns or EventColumns()
    table = read_table(path, sep=sep, required=lambda header: _wanted(path, header, columns))
    session_name, item_name, time_name = table.columns
    out = pd.DataFrame(
        {
            SESSION: table.ids(session_name),
            ITEM: table.ids(item_name),
            TIME: table.times(time_name),
        }
    )
    return sort_events(out)


def _wanted(path: str | os.PathLike[str], header: list[str], columns: EventColumns) -> list[str]:
    time = columns.time
    if time is None:
        time = next((name for name in (TIME, POSITION) if name in header), TIME)
    wanted = [columns.session, columns.item, time]
    for name, flag in zip(wanted, ("--session-key", "--item-key", "--time-key"), strict=True):
        if name not in header:
            raise DataError(
                f"{path}: missing column {name!r}; columns found: {', '.join(header)}; "
                f"name it with {flag}"
            )
    return wanted


@dataclass
class Table:
    """Raw columns of a file with enough bookkeeping to name the line of a bad value."""

    path: Path
    frame: pd.DataFrame
    #: ``"line"`` for text files, ``"row"`` for Parquet.
    where: str
    #: Line number of the first data row (2 with a header line, 1 without).
    first_line: int

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    def at(self, position: int) -> str:
        """``file:line`` of the 0-based data row ``position`` (``file: row N`` for Parquet)."""
        if self.where == "row":
            return f"{self.path}: row {position + 1}"
        return f"{self.path}:{position + self.first_line}"

    def fail(self, position: int, column: str, what: str) -> DataError:
        return DataError(f"{self.at(position)}: column {column!r}: {what}")

    def _present(self, column: str) -> pd.Series:
        values = self.frame[column]
        missing = _missing_mask(values)
        if missing.any():
            raise self.fail(int(np.flatnonzero(missing)[0]), column, "missing value")
        return values

    def ids(self, column: str) -> np.ndarray:
        """Ids as int64 when every value is an integer, else as str."""
        values = self._present(column)
        if pd.api.types.is_integer_dtype(values.dtype):
            return values.to_numpy(dtype=np.int64)
        if pd.api.types.is_float_dtype(values.dtype):
            if np.all(np.mod(values.to_numpy(), 1) == 0):
                return values.to_numpy(dtype=np.int64)
        text = values.astype(str).str.strip()
        if text.str.fullmatch(INT_RE).all():
            return text.to_numpy().astype(np.int64)
        return text.to_numpy().astype(str)

    def numbers(self, column: str) -> np.ndarray:
        """Finite numbers as float64."""
        values = self._present(column)
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numeric)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise self.fail(pos, column, f"{str(values.iloc[pos])!r} is not a number")
        return numeric

    def times(self, column: str) -> np.ndarray:
        """Times as float64: numbers as they are, ISO-8601 timestamps as Unix seconds."""
        values = self._present(column)
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            return _datetime_seconds(pd.Series(values))
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numeric)
        if not bad.any():
            return numeric
        if bad.all():
            stamps = pd.to_datetime(
                values.astype(str).str.strip(), utc=True, errors="coerce", format="ISO8601"
            )
            bad = stamps.isna().to_numpy()
            if not bad.any():
                return _datetime_seconds(stamps)
        pos = int(np.flatnonzero(bad)[0])
        raise self.fail(
            pos, column, f"{str(values.iloc[pos])!r} is not a number or an ISO-8601 timestamp"
        )


def read_table(
    path: str | os.PathLike[str],
    *,
    required: list[str] | Callable[[list[str]], list[str]],
    sep: str | None = None,
    names: list[str] | None = None,
) -> Table:
    """Read the ``required`` columns of a TSV/CSV (maybe gzipped) or Parquet file as text.

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
        For a missing file or column, an empty, binary, wrongly encoded or ragged file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == _PARQUET_MAGIC or path.suffix in {".parquet", ".pq"}:
        return _read_parquet(path, required)
    return _read_text(path, required, sep, names, gzipped=magic[:2] == _GZIP_MAGIC)


def _open_binary(path: Path, gzipped: bool) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _columns(
    header: list[str], required: list[str] | Callable[[list[str]], list[str]], path: Path
) -> list[str]:
    wanted = required(header) if callable(required) else list(required)
    for name in wanted:
        if name not in header:
            raise DataError(f"{path}: missing column {name!r}; columns found: {', '.join(header)}")
    return wanted


def _read_text(
    path: Path,
    required: list[str] | Callable[[list[str]], list[str]],
    sep: str | None,
    names: list[str] | None,
    gzipped: bool,
) -> Table:
    try:
        with _open_binary(path, gzipped) as fh:
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
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        first_line = first.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}:1: not valid UTF-8 text") from None
    if sep is None:
        sep = next((s for s in ("\t", ";", ",") if s in first_line), "\t")
    header = names if names is not None else [h.strip().strip('"') for h in first_line.split(sep)]
    wanted = _columns(header, required, path)
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=None if names is not None else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            encoding="utf-8",
            compression="gzip" if gzipped else None,
            engine="c",
        )
    except UnicodeDecodeError:
        line = _first_bad_utf8_line(path, gzipped)
        raise DataError(f"{path}:{line}: not valid UTF-8 text") from None
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            n_expected, line, n_seen = match.groups()
            raise DataError(
                f"{path}:{line}: expected {n_expected} fields separated by {sep!r}, saw {n_seen}"
            ) from None
        raise DataError(f"{path}: cannot parse as {sep!r}-separated text ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no events")
    # All columns are parsed (not just ``wanted``) so that a ragged line is an error.
    return Table(path, frame[wanted], "line", 1 if names is not None else 2)


def _first_bad_utf8_line(path: Path, gzipped: bool) -> int:
    with _open_binary(path, gzipped) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _read_parquet(path: Path, required: list[str] | Callable[[list[str]], list[str]]) -> Table:
    import pyarrow.parquet as pq

    try:
        header = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several unrelated types for broken files
        raise DataError(f"{path}: not a valid Parquet file ({type(exc).__name__})") from None
    wanted = _columns(header, required, path)
    frame = pq.read_table(path, columns=wanted).to_pandas()
    if frame.empty:
        raise DataError(f"{path}: Parquet file has no rows")
    return Table(path, frame, "row", 1)


def _missing_mask(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_datetime64_any_dtype(
        values.dtype
    ):
        return values.isna().to_numpy()
    as_text = values.astype(str).str.strip()
    return (values.isna() | as_text.isin(_MISSING)).to_numpy()


def _datetime_seconds(stamps: pd.Series) -> np.ndarray:
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((stamps - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def sort_events(events: pd.DataFrame) -> pd.DataFrame:
    """Sort by session, then time; stable, so equal times keep their order in the file."""
    order = np.lexsort((events[TIME].to_numpy(), _sort_key(events[SESSION].to_numpy())))
    if np.all(order[1:] > order[:-1]):
        return events.reset_index(drop=True)
    return events.iloc[order].reset_index(drop=True)


def _sort_key(ids: np.ndarray) -> np.ndarray:
    return ids if ids.dtype.kind in "iu" else pd.factorize(ids, sort=True)[0]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Works for files and directories, so a reader never sees a half-written output and an
    existing output is replaced only by a complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / "tmp"
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = tmp.parent / "old"
            path.rename(old)
            tmp.rename(path)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def label_path(path: Path) -> Path:
    """Where the label of a synthetic event file (``nextclick synth``) lives."""
    return path.with_name(path.name + ".synthetic.json")


def write_events(events: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``SessionId, ItemId, Time`` as TSV (gzipped when the name ends in ``.gz``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        events[[SESSION, ITEM, TIME]].to_csv(
            tmp, sep="\t", index=False, compression="gzip" if path.suffix == ".gz" else None
        )
