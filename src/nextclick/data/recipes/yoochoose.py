"""RSC15 / YooChoose raw clicks: recipes ``rsc15`` (2016 rules) and ``yoochoose`` (2023).

``yoochoose-clicks.dat`` (and the challenge's ``yoochoose-test.dat``, same format) is comma
separated without a header: ``SessionId, Timestamp, ItemId, Category``, with ISO-8601 UTC
timestamps such as ``2014-04-07T10:51:09.277Z``. Times are written as Unix seconds with
their milliseconds (GRU4Rec's script read them as local time and dropped the milliseconds;
neither changes which day an event falls in by more than the machine's UTC offset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nextclick.data.io import Columns, Table, read_blocks
from nextclick.data.recipes.common import (
    DAY,
    Prepared,
    Recipe,
    concat_events,
    events_frame,
    protocol_2016,
    protocol_2023,
)

_FIELDS = ["SessionId", "Timestamp", "ItemId", "Category"]


def read_clicks(path: Path) -> pd.DataFrame:
    """Read a ``yoochoose-clicks.dat``-format file into ``SessionId, ItemId, Time`` (seconds).

    Raises
    ------
    DataError
        For a row without four fields (e.g. ``yoochoose-buys.dat`` given by mistake: its rows
        have five), a missing id or a timestamp that is not ISO-8601.
    """
    columns, _ = read_blocks(path, _clicks, required=_FIELDS, sep=",", names=_FIELDS)
    return events_frame(*columns)


def _clicks(table: Table) -> Columns:
    blank = table.equals("Category", "")
    if blank.any():  # every click has a category (0 when none): a blank one is a cut line
        raise table.fail(int(np.flatnonzero(blank)[0]), "Category", "missing value")
    return table.ids("SessionId"), table.ids("ItemId"), table.times("Timestamp")


def _rsc15(raw: list[Path]) -> Prepared:
    return protocol_2016(read_clicks(raw[0]), None, [])


def _yoochoose(raw: list[Path]) -> Prepared:
    return protocol_2023(concat_events([read_clicks(path) for path in raw]), DAY, None, [], [])


RSC15 = Recipe(
    "rsc15",
    "yoochoose-clicks.dat; the GRU4Rec paper's (2016) filters and last-day split",
    1,
    1,
    _rsc15,
)
YOOCHOOSE = Recipe(
    "yoochoose",
    "yoochoose-clicks.dat [yoochoose-test.dat]; 2023 protocol, D = 1 day",
    1,
    2,
    _yoochoose,
)
