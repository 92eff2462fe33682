"""OTTO (2022) ``train.jsonl``: recipe ``otto`` (2023 protocol, D = 1 day).

One JSON object a line: ``{"session": int, "events": [{"aid": int, "ts": number,
"type": "clicks" | "carts" | "orders"}, ...]}``. Sessions are given; only ``clicks`` are views.

``ts`` is in milliseconds in the official files and in seconds in some re-packed copies: when
every ``ts`` is at least 1e11 they are milliseconds, when every one is below, seconds (1e11 ms
is March 1973 and 1e11 s the year 5138, so real data is never ambiguous); a file that mixes the
two is rejected.

The file is parsed by pyarrow's JSON reader block by block (vectorised, and memory bounded by
the click events kept); only when that fails is it read again line by line with :mod:`json`, to
name the first bad line in the error.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from nextclick.data.recipes.common import (
    DAY,
    Prepared,
    Recipe,
    Removal,
    events_frame,
    protocol_2023,
)
from nextclick.errors import DataError

_SCHEMA = pa.schema(
    [
        ("session", pa.int64()),
        (
            "events",
            pa.list_(pa.struct([("aid", pa.int64()), ("ts", pa.float64()), ("type", pa.string())])),
        ),
    ]
)
#: ts values at or above this are milliseconds.
MS_THRESHOLD = 1e11
# Larger than any line of the real file (the longest sessions are a few hundred kB).
_BLOCK_BYTES = 32 << 20


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open_lines(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _check_session(obj: object) -> str | None:
    """What is wrong with one parsed line, or None."""
    if not isinstance(obj, dict):
        return 'expected an object {"session": ..., "events": [...]}'
    session = obj.get("session")
    if not isinstance(session, int) or isinstance(session, bool):
        return f"'session' must be an integer, got {session!r}"
    events = obj.get("events")
    if not isinstance(events, list):
        return f"'events' must be a list, got {events!r}"
    for k, event in enumerate(events):
        if not isinstance(event, dict):
            return f"event {k}: expected an object, got {event!r}"
        aid, ts, kind = event.get("aid"), event.get("ts"), event.get("type")
        if not isinstance(aid, int) or isinstance(aid, bool):
            return f"event {k}: 'aid' must be an integer, got {aid!r}"
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            return f"event {k}: 'ts' must be a number, got {ts!r}"
        if not isinstance(kind, str):
            return f"event {k}: 'type' must be a string, got {kind!r}"
    return None


def _first_problem(path: Path) -> DataError | None:
    """Scan the file line by line for the first line that is not a valid OTTO session."""
    with _open_lines(path) as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except UnicodeDecodeError:
                return DataError(f"{path}:{number}: not valid UTF-8 text")
            except json.JSONDecodeError as exc:
                return DataError(
                    f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})"
                )
            problem = _check_session(obj)
            if problem:
                return DataError(f"{path}:{number}: {problem}")
    return None


def _line_of_row(path: Path, row: int) -> int:
    """Line number of the ``row``-th (0-based) non-blank line; pyarrow skips blank lines."""
    seen = -1
    with _open_lines(path) as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                seen += 1
                if seen == row:
                    return number
    return 0


def _fail(path: Path, detail: str) -> DataError:
    return _first_problem(path) or DataError(f"{path}: not valid OTTO JSON lines ({detail})")


def _read(path: Path) -> tuple[pd.DataFrame, int, int, str]:
    """Click events (Time in seconds), all events, sessions without a click, unit note."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    parse = pa_json.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")
    read = pa_json.ReadOptions(block_size=_BLOCK_BYTES)
    compression = "gzip" if _is_gzip(path) else None
    clicks: list[pd.DataFrame] = []
    sessions: list[np.ndarray] = []
    n_events = n_rows = 0
    # Row (0-based, among non-blank lines) of the first ts in ms (True) and in seconds (False).
    first_row = {True: -1, False: -1}
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            for batch in pa_json.open_json(stream, read_options=read, parse_options=parse):
                session, events = batch.column("session"), batch.column("events")
                if session.null_count or events.null_count:
                    raise _fail(path, "a line without 'session' or 'events'")
                flat = pc.list_flatten(events)
                if flat.is_null().to_numpy(zero_copy_only=False).any() or any(
                    flat.field(name).null_count for name in ("aid", "ts", "type")
                ):
                    raise _fail(path, "an event without 'aid', 'ts' or 'type'")
                parents = pc.list_parent_indices(events).to_numpy()
                ids = session.to_numpy()[parents]
                times = flat.field("ts").to_numpy()
                for unit in (True, False):
                    hits = np.flatnonzero((times >= MS_THRESHOLD) == unit)
                    if first_row[unit] < 0 and len(hits):
                        first_row[unit] = n_rows + int(parents[hits[0]])
                click = pc.equal(flat.field("type"), "clicks").to_numpy(zero_copy_only=False)
                aids = flat.field("aid").to_numpy()
                clicks.append(events_frame(ids[click], aids[click], times[click]))
                sessions.append(np.unique(ids))
                n_events += len(times)
                n_rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        if "Empty JSON" in str(exc):
            raise DataError(f"{path}: file is empty, expected one JSON session a line") from None
        raise _fail(path, str(exc)) from None
    if min(first_row.values()) >= 0:
        later = max(first_row.values())
        unit = "milliseconds" if first_row[True] == later else "seconds"
        raise DataError(
            f"{path}:{_line_of_row(path, later)}: 'ts' in {unit} (threshold 1e11) while "
            "earlier lines are in the other unit"
        )
    frame = pd.concat(clicks, ignore_index=True)
    if first_row[True] >= 0:
        frame["Time"] /= 1000.0
        note = "ts read as milliseconds (all values >= 1e11)"
    else:
        note = "ts read as seconds (all values < 1e11)"
    n_sessions = len(np.unique(np.concatenate(sessions)))
    return frame, n_events, n_sessions - frame["SessionId"].nunique(), note


def _otto(raw: list[Path]) -> Prepared:
    clicks, n_events, lost_sessions, note = _read(raw[0])
    removed = [Removal("non-view events", n_events - len(clicks), lost_sessions)]
    return protocol_2023(clicks, DAY, n_events, removed, [note])


OTTO = Recipe(
    "otto",
    "train.jsonl (gzipped or not); clicks only; 2023 protocol, D = 1 day",
    1,
    1,
    _otto,
)
