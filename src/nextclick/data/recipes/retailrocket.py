"""Retailrocket ``events.csv``: recipe ``retailrocket`` (2023 protocol, D = 7 days).

Comma separated with a header ``timestamp,visitorid,event,itemid,transactionid``; timestamps
in milliseconds; ``event`` is ``view``, ``addtocart`` or ``transaction``. The file has no
sessions: each visitor's stream of *all* events is cut where two consecutive events are more
than one hour apart (as the reference script does, so an add-to-cart between two views keeps
them in one session), then only the views are kept. Sessions get new integer ids numbered from
1 in (visitor, time) order.
"""

from __future__ import annotations

from pathlib import Path

from nextclick.data.io import Columns, Table, read_blocks
from nextclick.data.recipes.common import (
    DAY,
    Prepared,
    Recipe,
    protocol_2023,
    views_of_streams,
)


def _retailrocket(raw: list[Path]) -> Prepared:
    required = ["timestamp", "visitorid", "event", "itemid"]
    (ms, visitors, view, items), n_rows = read_blocks(raw[0], _rows, required=required, sep=",")
    events, removal, note = views_of_streams(visitors, ms, view, items, per_second=1000.0)
    del ms, visitors, view, items  # every row's columns: only the views go on
    return protocol_2023(events, 7 * DAY, n_rows, [removal], [note])


def _rows(table: Table) -> Columns:
    ms = table.numbers("timestamp")
    view = table.equals("event", "view")
    return ms, table.ids("visitorid"), view, table.subset(view).ids("itemid")


RETAILROCKET = Recipe(
    "retailrocket",
    "events.csv; views, visitor streams cut at gaps over 1 hour; 2023 protocol, D = 7 days",
    1,
    1,
    _retailrocket,
)
