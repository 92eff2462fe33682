"""DIGINETICA (CIKM Cup 2016) ``train-item-views.csv``: recipe ``diginetica`` (2023, D = 7 days).

``;`` separated with a header ``sessionId;userId;itemId;timeframe;eventdate`` (the copy in the
SR-GNN repository spells it ``session_id;user_id;item_id;...``; both are accepted).
``eventdate`` is a day (``2016-05-09``) and ``timeframe`` a millisecond offset, so an event's
time is the session's *first* eventdate (UTC midnight) plus its timeframe — taking each
row's own date would reorder a session that crosses midnight.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nextclick.data.io import Columns, Table, read_blocks
from nextclick.data.recipes.common import DAY, Prepared, Recipe, events_frame, protocol_2023
from nextclick.errors import DataError

_SPELLINGS = (
    ("sessionId", "itemId", "timeframe", "eventdate"),
    ("session_id", "item_id", "timeframe", "eventdate"),
)


def read_views(path: Path) -> pd.DataFrame:
    """Read ``train-item-views.csv`` into ``SessionId, ItemId, Time`` (seconds)."""

    def columns(header: list[str]) -> list[str]:
        for names in _SPELLINGS:
            if all(name in header for name in names):
                return list(names)
        raise DataError(
            f"{path}: expected the columns sessionId;userId;itemId;timeframe;eventdate "
            f"(or session_id;user_id;item_id;...); columns found: {', '.join(header)}"
        )

    (sessions, items, offsets, dates), _ = read_blocks(path, _rows, required=columns, sep=";")
    first_date = pd.Series(dates).groupby(sessions).transform("min").to_numpy()
    return events_frame(sessions, items, first_date + offsets / 1000.0)


def _rows(table: Table) -> Columns:
    session_col, item_col, offset_col, date_col = table.columns
    sessions, dates = table.ids(session_col), table.times(date_col)
    offsets = table.numbers(offset_col)
    return sessions, table.ids(item_col), offsets, dates


def _diginetica(raw: list[Path]) -> Prepared:
    return protocol_2023(read_views(raw[0]), 7 * DAY, None, [], [])


DIGINETICA = Recipe(
    "diginetica",
    "train-item-views.csv; 2023 protocol, D = 7 days",
    1,
    1,
    _diginetica,
)
