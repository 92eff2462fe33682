"""SR-GNN / GCE-GNN benchmark splits: recipe ``srgnn-benchmark``.

Takes two files, ``train_sessions.tsv.gz`` and ``test_sessions.tsv.gz``, with the columns
``SessionId, ItemId, Pos`` (the conversion of ``all_train_seq.txt`` / ``test.txt`` described in
``shared/data/README.md``): session ids are integers in chronological order, ``Pos`` the 0-based
position in the session. The published split is kept exactly as it is: train -> ``train_full``,
test -> ``test``, no filtering.

These benchmarks have no timestamps, so ``Time`` is a monotone surrogate, an integer:
``Time = SessionId * (max_pos + 1) + Pos`` with ``max_pos`` the largest position in either
file. It orders events by session, then position, and nothing else; it is **not** a time.

``train_tr`` / ``train_valid`` split ``train_full`` by session order, as the published test set
follows the training sessions: with ``share = n_test_sessions / (n_train_sessions +
n_test_sessions)``, the last ``floor(share * n_train_sessions + 0.5)`` training sessions (by
``SessionId``; halves round up) form ``train_valid`` and the others ``train_tr``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from nextclick.data.io import ITEM, POSITION, SESSION, TIME, Columns, Table, read_blocks
from nextclick.data.recipes.common import SPLITS, Prepared, Recipe
from nextclick.data.table import INT_TEXT
from nextclick.errors import DataError


def _read(path: Path) -> pd.DataFrame:
    (sessions, items, positions), _ = read_blocks(path, _rows, required=[SESSION, ITEM, POSITION])
    frame = pd.DataFrame({SESSION: sessions, ITEM: items, POSITION: positions})
    return frame.sort_values([SESSION, POSITION], kind="stable").reset_index(drop=True)


def _rows(table: Table) -> Columns:
    sessions = table.ids(SESSION)
    if sessions.dtype.kind not in "iu":
        bad = int(np.flatnonzero(~pd.Series(sessions).str.fullmatch(INT_TEXT).to_numpy())[0])
        raise table.fail(bad, SESSION, f"{str(sessions[bad])!r} is not an integer session id")
    positions = table.numbers(POSITION)
    bad_pos = (positions < 0) | (positions != np.floor(positions))
    if bad_pos.any():
        pos = int(np.flatnonzero(bad_pos)[0])
        raise table.fail(pos, POSITION, f"{positions[pos]:g} is not a position (0, 1, 2, ...)")
    return sessions, table.ids(ITEM), positions.astype(np.int64)


def _srgnn(raw: list[Path]) -> Prepared:
    train, test = (_read(path) for path in raw)
    shared = np.intersect1d(train[SESSION].unique(), test[SESSION].unique())
    if len(shared):
        raise DataError(
            f"{raw[1]}: session {shared[0]} is also in {raw[0]}; the benchmark's train and "
            "test sessions are disjoint"
        )
    if train[ITEM].dtype != test[ITEM].dtype:
        raise DataError(f"{raw[1]}: item ids are not of the same type as in {raw[0]}")
    base = int(max(train[POSITION].max(), test[POSITION].max())) + 1
    for frame in (train, test):
        frame[TIME] = frame[SESSION] * base + frame[POSITION]
    n_train, n_test = train[SESSION].nunique(), test[SESSION].nunique()
    n_valid = math.floor(n_test / (n_train + n_test) * n_train + 0.5)
    order = np.sort(train[SESSION].unique())
    first_valid = order[n_train - n_valid] if n_valid else order[-1] + 1
    valid = train[SESSION] >= first_valid
    columns = [SESSION, ITEM, TIME]
    splits = {
        "train_full": train[columns],
        "test": test[columns],
        "train_tr": train.loc[~valid, columns].reset_index(drop=True),
        "train_valid": train.loc[valid, columns].reset_index(drop=True),
    }
    notes = (
        f"Time is a surrogate, SessionId * {base} + Pos, not a time",
        f"train_valid: the last {n_valid} of {n_train} train sessions (share of test "
        f"sessions {n_test}/{n_train + n_test} = {n_test / (n_train + n_test):.4f})",
    )
    return Prepared({name: splits[name] for name in SPLITS}, len(train) + len(test), (), notes)


SRGNN = Recipe(
    "srgnn-benchmark",
    "train_sessions.tsv.gz test_sessions.tsv.gz (SessionId, ItemId, Pos); kept as published",
    2,
    2,
    _srgnn,
)
