"""Item-KNN: recommend the items most similar to the session's last item."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from nextclick.data.sessions import SessionData
from nextclick.models.base import Recommender, State, check


@dataclass(frozen=True)
class ItemKNNConfig:
    """Parameters of Item-KNN (names and defaults of the GRU4Rec paper's baseline).

    Attributes
    ----------
    n_sims
        Neighbours kept per item.
    lmbd
        Regularisation added to the supports (against coincidences of rare items).
    alpha
        Asymmetry of the normalisation; 0.5 is a regularised cosine.
    """

    n_sims: int = 100
    lmbd: float = 20.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        check(self.n_sims >= 1, "n_sims", "an integer >= 1")
        check(self.lmbd >= 0, "lmbd", "a number >= 0")
        check(0.0 <= self.alpha <= 1.0, "alpha", "a number in [0, 1]")


class ItemKNN(Recommender):
    """Item-to-item similarity from session co-occurrence.

    ``sim(i, j) = cooc(i, j) / ((supp_i + lmbd)^alpha * (supp_j + lmbd)^(1 - alpha))``, where
    ``supp`` counts the item's training events and ``cooc`` adds 1 for every event of ``j``
    in a session for every event of ``i`` in it (repeats count), i.e. ``X.T @ X`` of the
    session x item count matrix, diagonal removed. Each item keeps its ``n_sims`` most
    similar items (ties by lower index). The state is the last item of each session.
    """

    name = "itemknn"
    Config = ItemKNNConfig

    def _fit(self, train: SessionData, *, progress: bool) -> None:
        session_of = np.repeat(np.arange(train.n_sessions), train.lengths)
        counts = sp.csr_matrix(
            (np.ones(train.n_events), (session_of, train.items)),
            shape=(train.n_sessions, train.n_items),
        )
        cooc = (counts.T @ counts).tocoo()
        off_diagonal = cooc.row != cooc.col
        rows, cols, vals = cooc.row[off_diagonal], cooc.col[off_diagonal], cooc.data[off_diagonal]
        supp = self.item_support_.astype(np.float64) + self.config.lmbd
        vals = vals / (supp[rows] ** self.config.alpha * supp[cols] ** (1.0 - self.config.alpha))
        order = np.lexsort((cols, -vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        row_start = np.searchsorted(rows, np.arange(train.n_items))
        keep = np.arange(len(rows)) - row_start[rows] < self.config.n_sims
        self.sims_ = sp.csr_matrix(
            (vals[keep], (rows[keep], cols[keep])), shape=(train.n_items, train.n_items)
        )

    def init_state(self, n: int) -> State:
        return np.full(n, -1, dtype=np.int64)

    def step(self, state: State, items: np.ndarray) -> State:
        return np.asarray(items, dtype=np.int64).copy()

    def select(self, state: State, rows: np.ndarray) -> State:
        return state[rows]

    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_items if stop is None else stop
        out = np.zeros((len(state), stop - start), dtype=np.float64)
        known = state >= 0
        if known.any():
            out[known] = self.sims_[state[known]][:, start:stop].toarray()
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "sims_data": self.sims_.data,
            "sims_indices": self.sims_.indices,
            "sims_indptr": self.sims_.indptr,
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["sims_indptr"]) - 1
        self.sims_ = sp.csr_matrix(
            (arrays["sims_data"], arrays["sims_indices"], arrays["sims_indptr"]), shape=(n, n)
        )
