"""Mini-batches of training sessions, in the three forms the models train on.

- **Session-parallel** (GRU4Rec, ICLR 2016, section 3.1.1): ``batch_size`` slots each feed
  item ``t`` of their session and target item ``t + 1``. When a slot's session has no next
  event, that slot's hidden state is reset and it continues with the next unused session
  (sessions in order of their first event's time). When no unused sessions remain, finished
  slots are dropped and the batch shrinks, so every event of every session is used.
- **Padded prefixes** (NARM, STAMP, SR-GNN, GCE-GNN): every prefix ``s_1..s_k`` (k >= 1) of
  a training session with its next item as target, the last ``max_len`` items of it kept
  (or the first, as NARM's reference code does), shuffled with a seed and padded to the
  longest row of its batch.
- **Equal-length sessions** (STAMP's reference code): sessions grouped by length, the groups
  in random order, each group shuffled and cut into chunks of ``batch_size``; a chunk gives
  one batch per prefix length, shortest first, with no padding.
- **Padded sequences** (SASRec): every session once, its items but the last as inputs and
  the next item at every position as targets; not prefix-augmented.

Padded batches hold item indices shifted by one, ``0`` being the pad: a network stores
``n_items + 1`` embedding rows, row 0 the pad, and scores only rows ``1..n_items``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

from nextclick.data.sessions import SessionData

Side = Literal["left", "right"]
#: Which ``max_len`` clicks of a longer prefix a row keeps.
Keep = Literal["last", "first"]


@dataclass(frozen=True, slots=True)
class Step:
    """One mini-batch of the session-parallel iterator.

    Apply ``keep`` first (rows of the previous hidden state that remain, or None when the
    batch did not shrink), then zero the rows where ``reset`` is True.
    """

    inputs: np.ndarray  # (n,) int64 item indices fed to the network
    targets: np.ndarray  # (n,) int64 item indices to predict
    reset: np.ndarray  # (n,) bool: slot starts a new session at this step
    keep: np.ndarray | None  # (n,) int64 rows of the previous step's state, or None

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, slots=True)
class Padded:
    """A padded mini-batch: one row per prefix (``targets`` (B,)) or per session
    (``targets`` (B, L), 0 where there is none)."""

    items: np.ndarray  # (B, L) int64 item index + 1; 0 = pad
    lengths: np.ndarray  # (B,) int64 real items of each row
    targets: np.ndarray  # (B,) or (B, L) int64 item index + 1 of the next click; 0 = none

    def __len__(self) -> int:
        return int(np.count_nonzero(self.targets))


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


def padded_rows(items: np.ndarray, ends: np.ndarray, lengths: np.ndarray, side: Side) -> np.ndarray:
    """(B, max(lengths)) rows: row ``r`` holds ``items[ends[r] - lengths[r]:ends[r]] + 1``,
    padded with 0 on ``side``."""
    width = int(lengths.max(initial=0))
    column = np.arange(width)[None, :]
    if side == "right":
        offset = column
        real = column < lengths[:, None]
    else:
        offset = column - (width - lengths[:, None])
        real = offset >= 0
    index = ends[:, None] - lengths[:, None] + np.where(real, offset, 0)
    return np.where(real, items[np.minimum(index, len(items) - 1)] + 1, 0)


def n_prefixes(sessions: SessionData) -> int:
    """Training prefixes (= targets) of the sessions: the same as :func:`n_pairs`."""
    return n_pairs(sessions)


def prefix_batches(sessions: SessionData, batch_size: int, max_len: int, rng: np.random.Generator,
                   side: Side = "right", keep: Keep = "last") -> Iterator[Padded]:  # fmt: skip
    """One epoch of shuffled prefix batches (see the module docstring)."""
    session_start = np.repeat(sessions.offsets[:-1], sessions.lengths)
    # Every click but a session's first is the target of the prefix before it.
    target_at = np.flatnonzero(np.arange(sessions.n_events) != session_start)
    order = rng.permutation(len(target_at))
    for b in range(0, len(order), batch_size):
        chosen = target_at[order[b : b + batch_size]]
        size = np.minimum(chosen - session_start[chosen], max_len)
        ends = chosen if keep == "last" else session_start[chosen] + size
        yield Padded(padded_rows(sessions.items, ends, size, side), size,
                     sessions.items[chosen] + 1)  # fmt: skip


def equal_length_batches(sessions: SessionData, batch_size: int, max_len: int,
                         rng: np.random.Generator) -> Iterator[Padded]:  # fmt: skip
    """One epoch of equal-length session batches (see the module docstring); prefixes longer
    than ``max_len`` keep their last ``max_len`` items."""
    lengths = sessions.lengths
    usable = np.flatnonzero(lengths >= 2)
    groups = [usable[lengths[usable] == n] for n in np.unique(lengths[usable])]
    for g in rng.permutation(len(groups)):
        members = rng.permutation(groups[g])
        for b in range(0, len(members), batch_size):
            start = sessions.offsets[members[b : b + batch_size]]
            for k in range(1, int(lengths[members[0]])):
                size = np.full(len(start), min(k, max_len))
                yield Padded(padded_rows(sessions.items, start + k, size, "right"), size,
                             sessions.items[start + k] + 1)  # fmt: skip


def sequence_batches(sessions: SessionData, batch_size: int, max_len: int,
                     rng: np.random.Generator) -> Iterator[Padded]:  # fmt: skip
    """One epoch of shuffled whole-session batches, left-padded: the last ``max_len`` clicks
    but one as inputs, the click after each as its target."""
    usable = np.flatnonzero(sessions.lengths >= 2)
    order = usable[rng.permutation(len(usable))]
    for b in range(0, len(order), batch_size):
        chosen = order[b : b + batch_size]
        ends = sessions.offsets[chosen + 1]
        size = np.minimum(sessions.lengths[chosen] - 1, max_len)
        inputs = padded_rows(sessions.items, ends - 1, size, "left")
        targets = padded_rows(sessions.items, ends, size, "left")
        yield Padded(inputs, size, targets)


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
