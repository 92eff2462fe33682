"""Reading and writing event files (TSV/CSV, optionally gzipped, and Parquet).

Every problem with a file is reported as one :class:`~nextclick.errors.DataError` line that
names the file, the line (or Parquet row) and the column, so that the CLI can print it
without a traceback (the raw columns and their checks are :mod:`nextclick.data.table`).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from nextclick.data.table import INT_RE, Columns, Table, read_blocks, read_table, release_unused
from nextclick.errors import DataError

__all__ = [
    "INT_RE",
    "Columns",
    "EventColumns",
    "Table",
    "read_blocks",
    "read_events",
    "read_table",
    "write_events",
]

SESSION, ITEM, TIME = "SessionId", "ItemId", "Time"
#: Column used for ordering when a file has positions instead of timestamps (SR-GNN benchmarks).
POSITION = "Pos"
#: Gzip level of written splits: 1 writes a 33M-line split about 4x faster than level 6,
#: and only about 20% larger (they are inputs of nextclick, read once or twice).
GZIP_LEVEL = 1


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

    def convert(table: Table) -> Columns:
        session, item, time = _wanted(path, table.columns, columns)
        return table.ids(session), table.ids(item), table.times(time)

    wanted = functools.partial(_wanted, path, columns=columns)
    (sessions, items, times), _ = read_blocks(path, convert, sep=sep, required=wanted)
    release_unused()  # the blocks' columns are gone: their memory, before the sort
    return sort_events(pd.DataFrame({SESSION: sessions, ITEM: items, TIME: times}))


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
    """Write ``SessionId, ItemId, Time`` as TSV (gzipped when the name ends in ``.gz``).

    Times are written in the shortest text that reads back as the same float64.
    """
    import pyarrow.csv as pcsv

    path = Path(path)
    table = pa.Table.from_pandas(events[[SESSION, ITEM, TIME]], preserve_index=False)
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) if path.suffix == ".gz" else open(
            tmp, "wb"
        ) as fh:
            fh.write(f"{SESSION}\t{ITEM}\t{TIME}\n".encode())
            options = pcsv.WriteOptions(include_header=False, delimiter="\t")
            pcsv.write_csv(table, fh, options)
