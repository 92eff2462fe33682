"""POP and S-POP, the popularity baselines of the GRU4Rec paper."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextclick.data.sessions import SessionData
from nextclick.models.base import ItemHistory, OnEpoch, Recommender, State


@dataclass(frozen=True)
class PopConfig:
    """POP has no parameters."""


class Pop(Recommender):
    """Every session gets the items ranked by their number of training events.

    The state is just the number of sessions: nothing about a session changes the list.
    """

    name = "pop"
    Config = PopConfig

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch) -> None:
        pass

    def init_state(self, n: int) -> State:
        return n

    def step(self, state: State, items: np.ndarray) -> State:
        return state

    def select(self, state: State, rows: np.ndarray) -> State:
        return len(rows)

    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        row = self.item_support_[start:stop].astype(np.float64)
        return np.tile(row, (state, 1))


@dataclass(frozen=True)
class SPopConfig:
    """S-POP has no parameters."""


class SPop(ItemHistory, Recommender):
    """Items by how often they occurred in the session so far; ties by global popularity.

    Score = session count + support / (support + 1), so the popularity part (< 1) only
    orders items with equal session counts, as in the reference baseline. The state is the
    (n, t) matrix of the sessions' items so far: all rows of a state advance together.
    """

    name = "spop"
    Config = SPopConfig

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch) -> None:
        pass

    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_items if stop is None else stop
        support = self.item_support_[start:stop].astype(np.float64)
        out = np.tile(support / (support + 1.0), (state.shape[0], 1))
        rows = np.repeat(np.arange(state.shape[0]), state.shape[1])
        cols = state.ravel()
        inside = (cols >= start) & (cols < stop)
        np.add.at(out, (rows[inside], cols[inside] - start), 1.0)
        return out
