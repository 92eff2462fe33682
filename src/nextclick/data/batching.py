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

import numba
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
    positions, reset, keep, sizes, shrinks = _schedule(starts, ends, min(batch_size, len(order)))
    items = sessions.items
    offset = 0
    for size, shrink in zip(sizes.tolist(), shrinks.tolist(), strict=True):
        part = slice(offset, offset + size)
        yield Step(items[positions[part]], items[positions[part] + 1], reset[part],
                   keep[part] if shrink else None)  # fmt: skip
        offset += size


@numba.njit(cache=True, nogil=True)
def _schedule(starts, ends, n_slots):
    """The whole epoch's schedule, computed at once: per (input, target) pair, the input's
    position, whether its slot starts a new session and, when the batch has just shrunk,
    the slot's row in the previous step; per step, its size and whether it shrank."""
    total = 0
    for s in range(len(starts)):
        total += ends[s] - starts[s] - 1
    positions = np.empty(total, dtype=np.int64)
    reset = np.empty(total, dtype=np.bool_)
    keep = np.zeros(total, dtype=np.int64)
    sizes = np.empty(total, dtype=np.int64)
    shrinks = np.zeros(total, dtype=np.bool_)
    slot_session = np.arange(n_slots)
    pos = starts[:n_slots].copy()
    starting = np.ones(n_slots, dtype=np.bool_)
    next_session = n_slots
    n = n_slots
    offset = 0
    step = 0
    while n > 0:
        positions[offset : offset + n] = pos[:n]
        reset[offset : offset + n] = starting[:n]
        sizes[step] = n
        following = offset + n
        alive = 0
        for i in range(n):
            pos[i] += 1
            starting[i] = pos[i] + 1 >= ends[slot_session[i]]
            if starting[i]:
                if next_session == len(starts):
                    continue  # out of sessions: the slot leaves the batch
                slot_session[i] = next_session
                pos[i] = starts[next_session]
                next_session += 1
            slot_session[alive] = slot_session[i]
            pos[alive] = pos[i]
            starting[alive] = starting[i]
            if following + alive < total:
                keep[following + alive] = i
            alive += 1
        step += 1
        if alive < n and step < total:
            shrinks[step] = True
        offset = following
        n = alive
    return positions, reset, keep, sizes[:step], shrinks[:step]
