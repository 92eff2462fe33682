"""SessionData: events as flat item-index arrays grouped by session — what models consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nextclick.data.io import ITEM, SESSION, TIME
from nextclick.data.items import ItemIndex


@dataclass(frozen=True)
class SessionData:
    """Sessions of item indices, each in time order.

    Attributes
    ----------
    items : (n_events,) int64
        Item indices, session after session.
    offsets : (n_sessions + 1,) int64
        Session ``s`` is ``items[offsets[s]:offsets[s + 1]]``.
    times : (n_events,) float64
        Event times (or positions), aligned with ``items``.
    session_ids : (n_sessions,)
        Raw session ids.
    n_items : int
        Size of the item index the indices refer to.
    """

    items: np.ndarray
    offsets: np.ndarray
    times: np.ndarray
    session_ids: np.ndarray
    n_items: int

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def session(self, s: int) -> np.ndarray:
        return self.items[self.offsets[s] : self.offsets[s + 1]]

    def start_times(self) -> np.ndarray:
        """Time of each session's first event."""
        return self.times[self.offsets[:-1]]

    def end_times(self) -> np.ndarray:
        """Time of each session's last event."""
        return self.times[self.offsets[1:] - 1]


@dataclass(frozen=True)
class Encoded:
    """Sessions after mapping raw ids through an item index."""

    sessions: SessionData
    #: Events whose item is not in the index (dropped from their session).
    n_dropped_unknown: int
    #: Next-item targets before dropping: sum over raw sessions of ``length - 1``.
    n_targets_raw: int


def encode_sessions(events: pd.DataFrame, index: ItemIndex) -> Encoded:
    """Map a sorted event frame to item indices, dropping events of unknown items.

    A session that loses events just gets shorter; it is not split.
    """
    raw_sessions = events[SESSION].to_numpy()
    starts = _group_starts(raw_sessions)
    n_targets_raw = int(np.maximum(np.diff(np.append(starts, len(raw_sessions))) - 1, 0).sum())
    items = index.encode(events[ITEM].to_numpy())
    known = items >= 0
    kept_sessions = raw_sessions[known]
    kept_starts = _group_starts(kept_sessions)
    data = SessionData(
        items=items[known],
        offsets=np.append(kept_starts, len(kept_sessions)).astype(np.int64),
        times=events[TIME].to_numpy(dtype=np.float64)[known],
        session_ids=kept_sessions[kept_starts],
        n_items=len(index),
    )
    return Encoded(data, int((~known).sum()), n_targets_raw)


def _group_starts(sorted_ids: np.ndarray) -> np.ndarray:
    if len(sorted_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    return np.concatenate(([0], change)).astype(np.int64)
