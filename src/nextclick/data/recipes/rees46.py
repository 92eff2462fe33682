"""REES46 multi-category store, monthly CSVs: recipe ``rees46`` (2023 protocol, D = 1 day).

Each file (``2019-Oct.csv``, ``2019-Nov.csv``, ...) is comma separated with a header
``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
user_session``; ``event_time`` looks like ``2019-10-01 00:00:00 UTC``. Only ``view`` rows are
kept, *then* each user's view stream (over all the files given) is cut where two consecutive
views are more than one hour apart (the given ``user_session`` is not used, as in the
reference script). Sessions get new integer ids numbered from 1 in (user, time) order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from nextclick.data.io import Columns, Table, read_blocks
from nextclick.data.recipes.common import (
    DAY,
    HOUR,
    Prepared,
    Recipe,
    Removal,
    concat_events,
    events_frame,
    protocol_2023,
    sessionise,
)

_COLUMNS = ["event_time", "event_type", "product_id", "user_id"]


def _read_views(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Users, items and times (seconds) of the views in one monthly file, and its row count."""
    (users, items, times), n_rows = read_blocks(path, _views, required=_COLUMNS, sep=",")
    return users, items, times, n_rows


def _views(table: Table) -> Columns:
    views = table.subset(table.equals("event_type", "view"))
    # ISO-8601 readers reject the trailing " UTC" zone name; "Z" says the same.
    iso = pc.replace_substring_regex(views.text("event_time"), r" UTC$", "Z")
    views = views.with_column("event_time", iso)
    return views.ids("user_id"), views.ids("product_id"), views.times("event_time")


def _rees46(raw: list[Path]) -> Prepared:
    parts = [_read_views(path) for path in raw]
    # Users and items go through concat_events so that ids of different types across files
    # are reconciled the same way as elsewhere; the user plays the session column here.
    merged = concat_events([events_frame(u, i, t) for u, i, t, _ in parts])
    users, times = merged["SessionId"].to_numpy(), merged["Time"].to_numpy()
    sessions, n_cuts = sessionise(users, times, HOUR)
    n_rows = sum(n for *_, n in parts)
    removed = [Removal("non-view events", n_rows - len(merged), None)]
    notes = [
        f"user view streams cut into {int(sessions.max(initial=0))} sessions "
        f"({n_cuts} cuts at gaps over 1 hour)"
    ]
    events = events_frame(sessions, merged["ItemId"].to_numpy(), times)
    del parts, merged, users, times, sessions  # only the sessionised views go on
    return protocol_2023(events, DAY, n_rows, removed, notes)


REES46 = Recipe(
    "rees46",
    "monthly CSVs (2019-Oct.csv ...); views, user streams cut at gaps over 1 hour; 2023, D = 1 day",
    1,
    None,
    _rees46,
)
