"""Session-kNN (SKNN) and vector-multiplication session-kNN (V-SKNN), Ludewig & Jannach.

Both find, for the current session, the ``k`` most similar past sessions among the
``sample_size`` most recent training sessions that share an item with it, and score each
item by the similarity of the neighbours it appears in. V-SKNN weights the current
session's items by position (recent clicks count more), decays a neighbour's contribution
by how far back the last click it shares lies, and weights items by IDF.

The search runs in compiled loops, one session per thread; the training sessions are
indexed in recency order (time of their last event), so "most recent" is "highest index".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import scipy.sparse as sp

from nextclick.data.sessions import SessionData
from nextclick.models.base import ItemHistory, OnEpoch, Recommender, State, check
from nextclick.parallel import torch_threads

Weighting = Literal["same", "div", "linear", "log", "quadratic"]
_WEIGHTINGS: tuple[str, ...] = ("same", "div", "linear", "log", "quadratic")
_COSINE, _JACCARD, _VECTOR = 0, 1, 2


@dataclass(frozen=True)
class SKNNConfig:
    """Parameters of SKNN (session-rec names).

    Attributes
    ----------
    k
        Neighbour sessions used for scoring.
    sample_size
        Candidates: the most recent training sessions sharing an item with the session.
    similarity
        ``cosine`` (|A∩B| / sqrt(|A||B|)) or ``jaccard`` on the sets of items.
    """

    k: int = 100
    sample_size: int = 1000
    similarity: Literal["cosine", "jaccard"] = "cosine"

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", "an integer >= 1")
        check(self.sample_size >= 1, "sample_size", "an integer >= 1")


@dataclass(frozen=True)
class VSKNNConfig:
    """Parameters of V-SKNN (session-rec names; defaults: its RSC15 setting, IDF on).

    Attributes
    ----------
    k, sample_size
        As in SKNN.
    weighting
        Weight of the current session's click at position ``i`` of ``L`` (1-based) in the
        similarity: ``same`` 1, ``div`` i/L, ``linear`` max(0, 1 - 0.1 (L - i)),
        ``log`` 1 / log10(L - i + 1.7), ``quadratic`` (i/L)^2. A repeated item takes the
        weight of its last position.
    weighting_score
        Decay of a neighbour's score by ``s``, the distance from the end of the current
        session to the most recent click that the neighbour shares (1 = the last click):
        ``same`` 1, ``div`` 1/s, ``linear`` max(0, 1 - 0.1 s), ``log`` 1 / log10(s + 1.7),
        ``quadratic`` 1/s^2.
    idf_weighting
        Item score factor ``1 + idf_weighting * idf(item)``; 0 turns IDF off.
    """

    k: int = 100
    sample_size: int = 1000
    weighting: Weighting = "quadratic"
    weighting_score: Weighting = "quadratic"
    idf_weighting: float = 1.0

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", "an integer >= 1")
        check(self.sample_size >= 1, "sample_size", "an integer >= 1")
        check(self.idf_weighting >= 0, "idf_weighting", "a number >= 0")


class _SessionKNN(ItemHistory, Recommender):
    """Shared index, state and scoring of SKNN and V-SKNN.

    The state is the (n, t) matrix of the sessions' items so far; ``scores`` finds the
    neighbours and accumulates their items. Items of no neighbour score 0 ("no evidence").
    """

    no_evidence_score = 0.0

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch) -> None:
        recency = np.argsort(train.end_times(), kind="stable")
        session_of = np.repeat(np.arange(train.n_sessions), train.lengths)
        rank = np.empty(train.n_sessions, dtype=np.int64)
        rank[recency] = np.arange(train.n_sessions)
        incidence = sp.csr_matrix(
            (np.ones(train.n_events), (rank[session_of], train.items)),
            shape=(train.n_sessions, train.n_items),
        )
        incidence.sum_duplicates()
        incidence.sort_indices()
        postings = incidence.tocsc()
        postings.sort_indices()
        self.session_ptr_ = incidence.indptr.astype(np.int64)
        self.session_items_ = incidence.indices.astype(np.int64)
        self.item_ptr_ = postings.indptr.astype(np.int64)
        self.item_sessions_ = postings.indices.astype(np.int64)
        n_sessions_with = np.diff(self.item_ptr_)
        with np.errstate(divide="ignore"):
            self.idf_ = np.where(
                n_sessions_with > 0, np.log(train.n_sessions / np.maximum(n_sessions_with, 1)), 0.0
            )

    def _kernel_args(self) -> tuple[int, int, int, float]:
        """(similarity code, position weighting code, score decay code, idf weight)."""
        raise NotImplementedError

    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_items if stop is None else stop
        similarity, weighting, decay, idf_weight = self._kernel_args()
        out = np.zeros((state.shape[0], stop - start), dtype=np.float64)
        if state.shape[1] == 0:
            return out
        _score_sessions(
            np.ascontiguousarray(state),
            self.session_ptr_, self.session_items_, self.item_ptr_, self.item_sessions_,
            self.idf_, self.config.k, self.config.sample_size,
            similarity, weighting, decay, idf_weight, start, out,
        )  # fmt: skip
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "session_ptr": self.session_ptr_,
            "session_items": self.session_items_,
            "item_ptr": self.item_ptr_,
            "item_sessions": self.item_sessions_,
            "idf": self.idf_,
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.session_ptr_ = arrays["session_ptr"]
        self.session_items_ = arrays["session_items"]
        self.item_ptr_ = arrays["item_ptr"]
        self.item_sessions_ = arrays["item_sessions"]
        self.idf_ = arrays["idf"]


class SKNN(_SessionKNN):
    """Session-kNN: item score = sum of the similarities of the neighbours containing it."""

    name = "sknn"
    Config = SKNNConfig

    def _kernel_args(self) -> tuple[int, int, int, float]:
        similarity = _COSINE if self.config.similarity == "cosine" else _JACCARD
        same = _WEIGHTINGS.index("same")
        return similarity, same, same, 0.0


class VSKNN(_SessionKNN):
    """V-SKNN: position-weighted similarity, score decay and IDF (see :class:`VSKNNConfig`)."""

    name = "vsknn"
    Config = VSKNNConfig

    def _kernel_args(self) -> tuple[int, int, int, float]:
        cfg = self.config
        return (
            _VECTOR,
            _WEIGHTINGS.index(cfg.weighting),
            _WEIGHTINGS.index(cfg.weighting_score),
            cfg.idf_weighting,
        )


@numba.njit(cache=True, error_model="numpy")
def _position_weight(kind, i, length):
    if kind == 1:
        return i / length
    if kind == 2:
        return max(0.0, 1.0 - 0.1 * (length - i))
    if kind == 3:
        return 1.0 / math.log10(length - i + 1.7)
    if kind == 4:
        return (i / length) ** 2
    return 1.0


@numba.njit(cache=True, error_model="numpy")
def _score_decay(kind, s):
    if kind == 1:
        return 1.0 / s
    if kind == 2:
        return max(0.0, 1.0 - 0.1 * s)
    if kind == 3:
        return 1.0 / math.log10(s + 1.7)
    if kind == 4:
        return 1.0 / (s * s)
    return 1.0


@torch_threads
@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _score_sessions(
    prefixes, session_ptr, session_items, item_ptr, item_sessions, idf,
    k, sample_size, similarity, weighting, decay, idf_weight, start, out,
):  # fmt: skip
    n, length = prefixes.shape
    stop = start + out.shape[1]
    for r in numba.prange(n):
        row = prefixes[r]
        # Distinct items of the session (sorted) with the 1-based position of their last click.
        distinct = np.unique(row)
        n_distinct = len(distinct)
        last_pos = np.zeros(n_distinct, dtype=np.int64)
        for pos in range(length):
            last_pos[np.searchsorted(distinct, row[pos])] = pos + 1
        weight = np.empty(n_distinct)
        for d in range(n_distinct):
            weight[d] = _position_weight(weighting, last_pos[d], length)
        # Candidates: the most recent sessions sharing an item. Each item's posting list is
        # in recency order, so its last `sample_size` entries hold all it can contribute.
        total = 0
        for d in range(n_distinct):
            item = distinct[d]
            total += min(sample_size, item_ptr[item + 1] - item_ptr[item])
        pool = np.empty(total, dtype=np.int64)
        filled = 0
        for d in range(n_distinct):
            item = distinct[d]
            lo = max(item_ptr[item], item_ptr[item + 1] - sample_size)
            for p in range(lo, item_ptr[item + 1]):
                pool[filled] = item_sessions[p]
                filled += 1
        pool = np.unique(pool)[::-1][:sample_size]  # most recent first
        n_cand = len(pool)
        sims = np.zeros(n_cand)
        shared_last = np.zeros(n_cand, dtype=np.int64)
        for c in range(n_cand):
            s = pool[c]
            overlap = 0
            weighted = 0.0
            latest = 0
            for p in range(session_ptr[s], session_ptr[s + 1]):
                item = session_items[p]
                d = np.searchsorted(distinct, item)
                if d < n_distinct and distinct[d] == item:
                    overlap += 1
                    weighted += weight[d]
                    latest = max(latest, last_pos[d])
            size = session_ptr[s + 1] - session_ptr[s]
            if similarity == _COSINE:
                sims[c] = overlap / math.sqrt(n_distinct * size)
            elif similarity == _JACCARD:
                sims[c] = overlap / (n_distinct + size - overlap)
            else:
                sims[c] = weighted / n_distinct
            shared_last[c] = latest
        # Top-k by similarity; the stable sort keeps the more recent session first on ties.
        order = np.argsort(-sims, kind="mergesort")
        for rank in range(min(k, n_cand)):
            c = order[rank]
            if sims[c] <= 0.0:
                break
            contribution = sims[c] * _score_decay(decay, length - shared_last[c] + 1)
            s = pool[c]
            for p in range(session_ptr[s], session_ptr[s + 1]):
                item = session_items[p]
                if start <= item < stop:
                    out[r, item - start] += contribution * (1.0 + idf_weight * idf[item])
