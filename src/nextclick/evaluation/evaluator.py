"""Next-item evaluation of any model over the full catalogue, batched over sessions.

Test sessions are replayed click by click; before each click the model ranks every item of
its training item index, and the rank of the clicked item is recorded. Many sessions advance
together (sorted by length, so the sessions still running are always the first rows), and
when ``rows x items`` would exceed the memory budget the rows are scored in smaller groups,
so a large catalogue fits in bounded memory.

A target that the model's list can never show (an excluded repeat, or an item scoring at or
below the model's ``no_evidence_score``) is a miss under every tie mode; the top lists follow
:mod:`nextclick.ranking`, as ``recommend`` and the service do. The protocol is described in
``docs/evaluation.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd
from tqdm import tqdm

from nextclick.data.sessions import Encoded, SessionData, encode_sessions
from nextclick.evaluation.metrics import TIE_MODES, Ties, metric_table, ranks_from_counts
from nextclick.models.base import Recommender
from nextclick.parallel import torch_threads
from nextclick.ranking import TopK, push_row, sort_heap

DEFAULT_CUTOFFS = (1, 5, 10, 20)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation, with the counts needed to interpret them."""

    ties: str
    cutoffs: tuple[int, ...]
    #: Targets evaluated (next clicks whose item and whose predecessor are known).
    n_targets: int
    #: Test events removed because their item is not in the training item index.
    n_dropped_unknown: int
    #: Targets before dropping unknown items (the denominator of the "as misses" variant).
    n_targets_raw: int
    metrics: dict[str, float]
    #: Same keys; ratios over ``n_targets_raw``, so each dropped event counts as a miss.
    metrics_unknown_as_miss: dict[str, float]
    seconds: float
    ranks: np.ndarray = field(repr=False)


def evaluate(
    model: Recommender,
    test: pd.DataFrame | Encoded,
    *,
    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS,
    ties: Ties = "conservative",
    exclude_seen: bool = False,
    batch_size: int = 1024,
    max_block_bytes: int = 256 << 20,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on test events (a frame from ``read_events`` or already encoded).

    Parameters
    ----------
    cutoffs
        The K of every metric@K.
    ties
        ``conservative`` (default), ``standard`` or ``median``; see
        :func:`~nextclick.evaluation.metrics.ranks_from_counts`.
    exclude_seen
        Never recommend items already clicked in the session; a repeated click as target
        then counts as a miss.
    batch_size
        Sessions replayed in parallel.
    max_block_bytes
        Largest score block held at once; above it, fewer sessions are scored at a time.
    """
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, got {ties!r}")
    cutoffs = tuple(sorted(set(int(k) for k in cutoffs)))
    if not cutoffs or cutoffs[0] < 1:
        raise ValueError("cut-offs must be positive integers")
    started = time.perf_counter()
    encoded = test if isinstance(test, Encoded) else encode_sessions(test, model.item_index_)
    n_greater, n_greater_equal, top, excluded = _replay(
        model, encoded.sessions, max(cutoffs), exclude_seen, batch_size, max_block_bytes, progress
    )
    ranks = ranks_from_counts(n_greater, n_greater_equal, ties)
    ranks[excluded] = np.inf
    support = model.item_support_
    metrics = metric_table(ranks, top, cutoffs, support)
    n_targets = len(ranks)
    scale = n_targets / encoded.n_targets_raw if encoded.n_targets_raw else 0.0
    as_miss = {
        key: value * scale if key.split("@")[0] in ("recall", "mrr", "ndcg") else value
        for key, value in metrics.items()
    }
    return EvalResult(
        ties=ties,
        cutoffs=cutoffs,
        n_targets=n_targets,
        n_dropped_unknown=encoded.n_dropped_unknown,
        n_targets_raw=encoded.n_targets_raw,
        metrics=metrics,
        metrics_unknown_as_miss=as_miss,
        seconds=time.perf_counter() - started,
        ranks=ranks,
    )


def _replay(
    model: Recommender,
    sessions: SessionData,
    k_max: int,
    exclude_seen: bool,
    batch_size: int,
    max_block_bytes: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts of items scoring above / at least the target, and top-``k_max`` lists.

    Results are in target order: session by session (in ``sessions`` order), click by click.
    """
    lengths = sessions.lengths
    n_targets_of = np.maximum(lengths - 1, 0)
    # Position of each session's first target in the output.
    first_target = np.concatenate(([0], np.cumsum(n_targets_of)))
    n_total = int(first_target[-1])
    n_greater = np.zeros(n_total, dtype=np.int64)
    n_greater_equal = np.zeros(n_total, dtype=np.int64)
    top = np.full((n_total, k_max), -1, dtype=np.int64)
    excluded = np.zeros(n_total, dtype=bool)
    floor = model.score_floor
    order = np.flatnonzero(lengths >= 2)
    order = order[np.argsort(-lengths[order], kind="stable")]
    bar = tqdm(total=n_total, desc="evaluate", unit="click", disable=not progress, leave=False)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        chunk_len = lengths[chunk]
        starts = sessions.offsets[chunk]
        state = model.init_state(len(chunk))
        n_active = len(chunk)
        for t in range(int(chunk_len[0]) - 1):
            n_t = int((chunk_len > t + 1).sum())
            if n_t < n_active:
                state = model.select(state, np.arange(n_t))
                n_active = n_t
            state = model.step(state, sessions.items[starts[:n_t] + t])
            targets = sessions.items[starts[:n_t] + t + 1]
            seen = (
                sessions.items[starts[:n_t, None] + np.arange(t + 1)[None, :]]
                if exclude_seen
                else None
            )
            out = first_target[chunk[:n_t]] + t
            gt, ge, best, target_scores = _rank_step(
                model, state, targets, seen, k_max, max_block_bytes
            )
            n_greater[out], n_greater_equal[out], top[out] = gt, ge, best
            # Excluded targets and those the model has no evidence for are never listed.
            excluded[out] = ~(target_scores > floor)
            bar.update(n_t)
    bar.close()
    return n_greater, n_greater_equal, top, excluded


def _rank_step(
    model: Recommender,
    state: object,
    targets: np.ndarray,
    seen: np.ndarray | None,
    k_max: int,
    max_block_bytes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts of items scoring above / at least each target, the top lists, target scores.

    Rows are scored in groups whose (rows x items) float64 scores fit ``max_block_bytes``,
    each group once over the whole catalogue.
    """
    n = len(targets)
    gt = np.zeros(n, dtype=np.int64)
    ge = np.zeros(n, dtype=np.int64)
    top = TopK(n, k_max, model.score_floor)
    target_scores = np.empty(n, dtype=np.float64)
    group = max(1, max_block_bytes // (8 * model.n_items))
    for r0 in range(0, n, group):
        r1 = min(n, r0 + group)
        part = state if (r0, r1) == (0, n) else model.select(state, np.arange(r0, r1))
        scores = model.scores(part)
        if seen is not None:
            rows = np.repeat(np.arange(r1 - r0), seen.shape[1])
            scores[rows, seen[r0:r1].ravel()] = -np.inf
        _count_and_top(scores, targets[r0:r1], top.floor, top.ks[r0:r1], top.scores[r0:r1],
                       top.items[r0:r1], top.sizes[r0:r1], gt[r0:r1], ge[r0:r1],
                       target_scores[r0:r1])  # fmt: skip
    bad = np.isnan(target_scores)
    if bad.any():
        raise FloatingPointError(f"{model.name} produced NaN scores for {int(bad.sum())} targets")
    return gt, ge, top.items, target_scores


@torch_threads
@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _count_and_top(scores, targets, floor, ks, top_scores, top_items, sizes, gt, ge, tscores):
    """Per row: the target's score, the numbers of items scoring above it and at least as
    high (the target included), and the row's top list (:mod:`nextclick.ranking`)."""
    n, m = scores.shape
    for r in numba.prange(n):
        row = scores[r]
        t = row[targets[r]]
        above = 0
        at_least = 0
        for j in range(m):
            s = row[j]
            if s >= t:
                at_least += 1
                if s > t:
                    above += 1
        tscores[r] = t
        gt[r] = above
        ge[r] = at_least
        sizes[r] = push_row(row, 0, floor, ks[r], top_scores[r], top_items[r], 0)
        sort_heap(top_scores[r], top_items[r], sizes[r])
