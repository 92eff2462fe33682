"""Item-KNN: recommend the items most similar to the session's last item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from nextclick.data.sessions import SessionData
from nextclick.models.base import OnEpoch, Recommender, State, check


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
    counting
        ``sessions``: the paper's cosine of the items' binary session vectors (co-occurrence
        and support count sessions). ``session-rec``: session-rec's variant, kept to compare
        with results of that framework (support counts events; each event of the last item
        adds 1 for every distinct other item of its session).
    """

    n_sims: int = 100
    lmbd: float = 20.0
    alpha: float = 0.5
    counting: Literal["sessions", "session-rec"] = "sessions"

    def __post_init__(self) -> None:
        check(self.n_sims >= 1, "n_sims", "an integer >= 1")
        check(self.lmbd >= 0, "lmbd", "a number >= 0")
        check(0.0 <= self.alpha <= 1.0, "alpha", "a number in [0, 1]")
        check(self.counting in ("sessions", "session-rec"), "counting",
              "'sessions' or 'session-rec'")  # fmt: skip


class ItemKNN(Recommender):
    """Item-to-item similarity from session co-occurrence (the GRU4Rec paper's baseline).

    ``sim(i, j) = cooc(i, j) / ((supp_i + lmbd)^alpha * (supp_j + lmbd)^(1 - alpha))``, where
    ``i`` is the session's last item, ``cooc(i, j)`` the number of training sessions holding
    both and ``supp`` the number holding the item (``counting="sessions"``: ``B.T @ B`` of
    the binary session x item matrix, diagonal removed). Each item keeps its ``n_sims`` most
    similar items (ties by lower index). The state is the last item of each session; items
    that are not among its neighbours score 0, which means "no evidence".
    """

    name = "itemknn"
    Config = ItemKNNConfig
    no_evidence_score = 0.0

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch) -> None:
        session_of = np.repeat(np.arange(train.n_sessions), train.lengths)
        counts = sp.csr_matrix(
            (np.ones(train.n_events), (session_of, train.items)),
            shape=(train.n_sessions, train.n_items),
        )  # (sessions, items): clicks of the item in the session (duplicates summed)
        holds = counts.copy()
        holds.data[:] = 1.0  # the binary session vectors
        if self.config.counting == "sessions":
            cooc = (holds.T @ holds).tocoo()
            supp = np.asarray(holds.sum(axis=0)).ravel()
        else:
            cooc = (counts.T @ holds).tocoo()  # row i: events of i, 1 per distinct j
            supp = self.item_support_.astype(np.float64)
        off_diagonal = cooc.row != cooc.col
        rows, cols, vals = cooc.row[off_diagonal], cooc.col[off_diagonal], cooc.data[off_diagonal]
        supp = supp + self.config.lmbd
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
