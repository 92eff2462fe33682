"""Coveo SIGIR eCom 2021 ``browsing_train.csv``: recipe ``coveo`` (2023 protocol, D = 1 day).

Comma separated with a header ``session_id_hash,event_type,product_action,product_sku_hash,
server_timestamp_epoch_ms,hashed_url`` (the 2020 release spells the item column
``product_skus_hash``; both are accepted). A view is a row with ``product_action == "detail"``;
page views have no product and other actions (add, remove, purchase, click) are dropped.
Sessions are given, and are also cut where two consecutive rows of a session (of any kind, as
in the reference script) are more than one hour apart; they get new integer ids numbered from
1 in (session hash, time) order. Timestamps are in milliseconds.
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
from nextclick.errors import DataError

_SESSION, _ACTION, _TIME = "session_id_hash", "product_action", "server_timestamp_epoch_ms"
_ITEM_SPELLINGS = ("product_sku_hash", "product_skus_hash")


def _coveo(raw: list[Path]) -> Prepared:
    path = raw[0]

    def columns(header: list[str]) -> list[str]:
        item = next((name for name in _ITEM_SPELLINGS if name in header), None)
        missing = [name for name in (_SESSION, _ACTION, _TIME) if name not in header]
        if item is None or missing:
            wanted = ", ".join([*missing, *([] if item else ["product_sku_hash"])])
            found = ", ".join(header)
            raise DataError(f"{path}: missing column(s) {wanted}; columns found: {found}")
        return [_SESSION, _ACTION, item, _TIME]

    (ms, sessions, view, items), n_rows = read_blocks(path, _rows, required=columns, sep=",")
    events, removal, note = views_of_streams(sessions, ms, view, items, per_second=1000.0)
    del ms, sessions, view, items  # every row's columns: only the views go on
    return protocol_2023(events, DAY, n_rows, [removal], [note])


def _rows(table: Table) -> Columns:
    ms = table.numbers(_TIME)
    view = table.equals(_ACTION, "detail")
    return ms, table.ids(_SESSION), view, table.subset(view).ids(table.columns[2])


COVEO = Recipe(
    "coveo",
    "browsing_train.csv; detail views, sessions also cut at gaps over 1 hour; 2023, D = 1 day",
    1,
    1,
    _coveo,
)
