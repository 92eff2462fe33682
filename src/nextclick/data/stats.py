"""Descriptive statistics of an event file: what ``nextclick stats`` prints.

:func:`describe` returns plain Python numbers (JSON-ready) and :func:`format_stats` lays them
out as a small table for people.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from nextclick.data.io import ITEM, SESSION, TIME
from nextclick.errors import DataError

#: Session lengths with their own histogram bucket; longer sessions share ``"10+"``.
HISTOGRAM_MAX = 10
DAY = 86_400.0
# Times between these are shown as UTC dates (1973..2286 as Unix seconds); others, such as the
# position surrogates of the SR-GNN benchmarks, as plain numbers.
_EPOCH_RANGE = (1e8, 1e10)


def _summary(values: np.ndarray) -> dict[str, float | int]:
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": int(values.max()),
    }


def describe(events: pd.DataFrame) -> dict[str, Any]:
    """Counts, session lengths, item supports and time range of an event frame.

    Parameters
    ----------
    events
        Frame with ``SessionId, ItemId, Time`` (as :func:`~nextclick.data.io.read_events`
        returns; the row order does not matter).

    Returns
    -------
    dict
        ``n_events``, ``n_sessions``, ``n_items`` (int);
        ``session_length``: ``min``, ``median``, ``mean``, ``max`` of events per session and
        ``histogram``, the number of sessions of each length ``"1"`` .. ``"9"`` and ``"10+"``
        (every key present, zeros included);
        ``item_support``: ``min``, ``median``, ``mean``, ``max`` of events per item;
        ``consecutive_repeats``: events whose item equals the previous event's item in the
        same session, in time order (0 after the 2023 recipes' cleaning);
        ``repeat_clicks``: events whose item already appeared earlier in the same session, in
        any position: the next clicks that a session's own history can predict (what S-POP
        scores), out of ``n_events - n_sessions`` next clicks;
        ``time_first``, ``time_last``: smallest and largest ``Time`` as stored (Unix seconds
        for the recipes' outputs); ``time_span_seconds`` = last - first and
        ``time_span_days`` = that / 86,400 (meaningful only when Time is in seconds).

    Raises
    ------
    DataError
        If the frame has no events.
    """
    if events.empty:
        raise DataError("no events to describe")
    sessions = pd.factorize(events[SESSION].to_numpy())[0]
    items = pd.factorize(events[ITEM].to_numpy())[0]
    times = events[TIME].to_numpy(dtype=np.float64)
    lengths = np.bincount(sessions)
    support = np.bincount(items)
    counts = np.bincount(np.minimum(lengths, HISTOGRAM_MAX), minlength=HISTOGRAM_MAX + 1)
    histogram = {str(n): int(counts[n]) for n in range(1, HISTOGRAM_MAX)}
    histogram[f"{HISTOGRAM_MAX}+"] = int(counts[HISTOGRAM_MAX])
    # Stable sort by session then time, the order the models replay.
    order = np.lexsort((times, sessions))
    s, i = sessions[order], items[order]
    repeats = int(np.count_nonzero((s[1:] == s[:-1]) & (i[1:] == i[:-1])))
    # Every event of a (session, item) pair but its first is a repeat click.
    pairs = np.unique(sessions.astype(np.int64) * len(support) + items).size
    first, last = float(times.min()), float(times.max())
    return {
        "n_events": len(events),
        "n_sessions": len(lengths),
        "n_items": len(support),
        "session_length": {**_summary(lengths), "histogram": histogram},
        "item_support": _summary(support),
        "consecutive_repeats": repeats,
        "repeat_clicks": len(events) - pairs,
        "time_first": first,
        "time_last": last,
        "time_span_seconds": last - first,
        "time_span_days": (last - first) / DAY,
    }


def _is_epoch(t: float) -> bool:
    return _EPOCH_RANGE[0] <= t <= _EPOCH_RANGE[1]


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _share(repeats: int, next_clicks: int) -> str:
    share = f" ({100 * repeats / next_clicks:.1f} %)" if next_clicks else ""
    return f"{repeats:,} of {next_clicks:,} next clicks{share}"


def format_stats(d: dict[str, Any]) -> str:
    """Lay out the result of :func:`describe` as an aligned text table (no trailing newline)."""
    length, support = d["session_length"], d["item_support"]

    def spread(s: dict[str, float | int]) -> str:
        return f"{s['min']:,} / {s['median']:g} / {s['mean']:.2f} / {s['max']:,}"

    histogram = "  ".join(f"{k}: {v:,}" for k, v in length["histogram"].items())
    first, last = d["time_first"], d["time_last"]
    if _is_epoch(first) and _is_epoch(last):
        time = f"{_utc(first)} .. {_utc(last)}  ({d['time_span_days']:.2f} days)"
    else:
        time = f"{first:.15g} .. {last:.15g}  (not Unix seconds)"
    rows = [
        ("events", f"{d['n_events']:,}"),
        ("sessions", f"{d['n_sessions']:,}"),
        ("items", f"{d['n_items']:,}"),
        ("session length", f"{spread(length)}  (min / median / mean / max)"),
        ("sessions by length", histogram),
        ("events per item", f"{spread(support)}  (min / median / mean / max)"),
        ("consecutive repeats", f"{d['consecutive_repeats']:,}"),
        ("repeat clicks", _share(d["repeat_clicks"], d["n_events"] - d["n_sessions"])),
        ("time", time),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
