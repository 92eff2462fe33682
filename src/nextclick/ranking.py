"""Top-K lists: the one definition that ``recommend``, the evaluator and the service share.

A row's list holds its ``k`` best items by score, **ties broken by lower item index**, and
never an item scoring ``-inf`` (excluded), NaN, or at or below the model's
``no_evidence_score`` (a kNN model's 0: it knows nothing of the item). Lists may therefore be
shorter than ``k``; they are padded with item ``-1`` and score ``-inf``.

Each row keeps a bounded heap whose root is its worst entry, so a list is built in one pass
over the scores, and scores may arrive in blocks of items (the evaluator's large catalogues):
:class:`TopK` accumulates blocks, :func:`top_k` is the one-block case.
"""

from __future__ import annotations

import numba
import numpy as np

from nextclick.parallel import torch_threads


@numba.njit(inline="always")
def _worse(s_a, i_a, s_b, i_b):
    """Whether entry a ranks below entry b: lower score, or equal score and higher index."""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@numba.njit(inline="always")
def _sift_down(hs, hi, size, pos):
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if not _worse(hs[child], hi[child], hs[pos], hi[pos]):
            return
        hs[pos], hs[child] = hs[child], hs[pos]
        hi[pos], hi[child] = hi[child], hi[pos]
        pos = child


@numba.njit(inline="always")
def push_row(row, col0, floor, k, hs, hi, size):
    """Offer items ``col0 + j`` with scores ``row[j]`` to a heap of ``size`` entries (at most
    ``k``); returns the new size. Entries not above ``floor`` (and NaN) are skipped."""
    for j in range(row.shape[0]):
        s = row[j]
        if not s > floor:
            continue
        item = col0 + j
        if size < k:
            pos = size
            hs[pos] = s
            hi[pos] = item
            size += 1
            while pos > 0:  # sift up: the root is the worst entry
                parent = (pos - 1) // 2
                if not _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                    break
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
        elif _worse(hs[0], hi[0], s, item):
            hs[0] = s
            hi[0] = item
            _sift_down(hs, hi, size, 0)
    return size


@numba.njit(inline="always")
def sort_heap(hs, hi, size):
    """Turn a heap of ``size`` entries into a list, best first (heap sort: the worst entry
    goes to the end each time)."""
    for end in range(size - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hi[0], hi[end] = hi[end], hi[0]
        _sift_down(hs, hi, end, 0)


def _push_rows(scores, col0, floor, ks, hs, hi, sizes):
    for r in numba.prange(scores.shape[0]):
        sizes[r] = push_row(scores[r], col0, floor, ks[r], hs[r], hi[r], sizes[r])


def _sort_rows(hs, hi, sizes):
    for r in numba.prange(hs.shape[0]):
        sort_heap(hs[r], hi[r], sizes[r])


# A few rows (the service) are cheaper on one thread than through numba's thread pool.
_push_serial = numba.njit(cache=True, nogil=True)(_push_rows)
_push_parallel = torch_threads(numba.njit(cache=True, nogil=True, parallel=True)(_push_rows))
_sort_serial = numba.njit(cache=True, nogil=True)(_sort_rows)
_sort_parallel = torch_threads(numba.njit(cache=True, nogil=True, parallel=True)(_sort_rows))
_PARALLEL_FROM = 1 << 20  # scores per call


class TopK:
    """Top-``k`` lists of ``n`` rows, built from blocks of items given in increasing order.

    Parameters
    ----------
    n
        Rows.
    k
        Length of the lists: one int, or (n,) ints (per-row lengths; the arrays are as wide
        as the largest).
    floor
        Items scoring at or below it are never listed.
    """

    def __init__(self, n: int, k: int | np.ndarray, floor: float = -np.inf) -> None:
        ks = np.broadcast_to(np.asarray(k, dtype=np.int64), (n,)).copy()
        if n and ks.min() < 0:
            raise ValueError("k must be >= 0")
        width = int(ks.max(initial=0))
        self.ks = ks
        self.floor = float(floor)
        self.scores = np.full((n, width), -np.inf, dtype=np.float64)
        self.items = np.full((n, width), -1, dtype=np.int64)
        self.sizes = np.zeros(n, dtype=np.int64)

    def push(self, block: np.ndarray, col0: int = 0) -> None:
        """Offer the (n, m) scores of items ``col0 .. col0 + m - 1``."""
        push = _push_parallel if block.size >= _PARALLEL_FROM else _push_serial
        push(block, col0, self.floor, self.ks, self.scores, self.items, self.sizes)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, scores, lengths): (n, k) best first, padded with -1 / -inf; (n,) lengths.

        Call once, after the last block.
        """
        sort = _sort_parallel if self.scores.size >= 1 << 16 else _sort_serial
        sort(self.scores, self.items, self.sizes)
        return self.items, self.scores, self.sizes


def top_k(
    scores: np.ndarray, k: int | np.ndarray, floor: float = -np.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``k`` items of each row of ``scores`` (n, n_items); see :class:`TopK`.

    Returns (items (n, k) int64, their scores (n, k) float64, list lengths (n,)).
    """
    scores = np.atleast_2d(scores)
    acc = TopK(scores.shape[0], k, floor)
    acc.push(scores)
    return acc.result()
