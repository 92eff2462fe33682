"""Session-parallel mini-batches (GRU4Rec, ICLR 2016, section 3.1.1).

``batch_size`` slots each feed item ``t`` of their session and target item ``t + 1``. When a
slot's session has no next event, that slot's hidden state is reset and it continues with
the next unused session (sessions in order of their first event's time). When no unused
sessions remain, finished slots are dropped and the batch shrinks, so every event of every
session is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from nextclick.data.sessions import SessionData


class Step(NamedTuple):
    """One mini-batch of the session-parallel iterator.

    Apply ``keep`` first (rows of the previous hidden state that remain, or None when the
    batch did not shrink), then zero the rows where ``reset`` is True.
    """

    inputs: np.ndarray  # (n,) int64 item indices fed to the network
    targets: np.ndarray  # (n,) int64 item indices to predict
    reset: np.ndarray  # (n,) bool: slot starts a new session at this step
    keep: np.ndarray | None  # (n,) int64 rows of the previous step's state, or None


def session_order(sessions: SessionData) -> np.ndarray:
    """Sessions with at least two events, oldest first event first (stable on ties)."""
    usable = np.flatnonzero(sessions.lengths >= 2)
    return usable[np.argsort(sessions.start_times()[usable], kind="stable")]


def n_pairs(sessions: SessionData) -> int:
    """(input, target) pairs in one epoch: sum of length - 1 over sessions."""
    return int(np.maximum(sessions.lengths - 1, 0).sum())


def session_parallel(sessions: SessionData, batch_size: int) -> Iterator[Step]:
    """Yield the mini-batches of one epoch."""
    order = session_order(sessions)
    starts = sessions.offsets[order]
    ends = sessions.offsets[order + 1]
    n_slots = min(batch_size, len(order))
    slot_session = np.arange(n_slots)  # position in `order` of each slot's session
    pos = starts[:n_slots].copy()  # absolute index of each slot's current input event
    next_session = n_slots
    reset = np.ones(n_slots, dtype=bool)
    keep: np.ndarray | None = None
    items = sessions.items
    while len(slot_session):
        yield Step(items[pos], items[pos + 1], reset, keep)
        pos = pos + 1
        finished = pos + 1 >= ends[slot_session]
        keep = None
        reset = finished
        if finished.any():
            n_new = min(int(finished.sum()), len(order) - next_session)
            refill = np.flatnonzero(finished)[:n_new]
            slot_session = slot_session.copy()
            slot_session[refill] = np.arange(next_session, next_session + n_new)
            pos[refill] = starts[slot_session[refill]]
            next_session += n_new
            if n_new < finished.sum():
                # Out of sessions: finished slots without a replacement leave the batch.
                alive = ~finished
                alive[refill] = True
                keep = np.flatnonzero(alive)
                slot_session, pos, reset = slot_session[keep], pos[keep], finished[keep]
