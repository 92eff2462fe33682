"""Next-item metrics as pure functions of target ranks and top-K lists.

Ranks are 1-based and may be fractional (median ties) or infinite (a target that can never
be recommended, e.g. an excluded repeat). Each target has exactly one relevant item, so
Recall@K equals the hit rate and NDCG@K is ``1 / log2(rank + 1)`` inside the cut-off.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Ties = Literal["standard", "conservative", "median"]
TIE_MODES: tuple[Ties, ...] = ("standard", "conservative", "median")


def ranks_from_counts(n_greater: np.ndarray, n_greater_equal: np.ndarray, ties: Ties) -> np.ndarray:
    """Rank of each target from the number of items scoring above / at least as high.

    ``n_greater_equal`` includes the target itself.

    - ``standard``: ``1 + n_greater`` (optimistic: ties resolved in the target's favour);
    - ``conservative``: ``n_greater_equal`` (pessimistic: every tied item ranks first);
    - ``median``: the mean of the two.
    """
    optimistic = n_greater.astype(np.float64) + 1.0
    pessimistic = n_greater_equal.astype(np.float64)
    if ties == "standard":
        return optimistic
    if ties == "conservative":
        return pessimistic
    if ties == "median":
        return (optimistic + pessimistic) / 2.0
    raise ValueError(f"unknown tie mode {ties!r}")


def recall(ranks: np.ndarray, k: int) -> float:
    """Share of targets ranked within the first ``k``."""
    return float(np.mean(ranks <= k)) if len(ranks) else 0.0


def mrr(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting 0 for targets ranked below ``k``."""
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0)))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per target (ideal DCG = 1)."""
    if not len(ranks):
        return 0.0
    with np.errstate(divide="ignore"):
        gain = 1.0 / np.log2(ranks + 1.0)
    return float(np.mean(np.where(ranks <= k, gain, 0.0)))


def coverage(top: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-``k`` list.

    ``top``: (n_targets, >=k) item indices, best first; ``-1`` pads short lists.
    """
    listed = top[:, :k].ravel()
    return float(len(np.unique(listed[listed >= 0])) / n_items) if n_items else 0.0


def popularity(top: np.ndarray, k: int, support: np.ndarray) -> float:
    """Mean normalised training popularity (support / max support) of recommended items.

    Averaged within each top-``k`` list, then over lists, as session-rec's Popularity metric.
    """
    lists = top[:, :k]
    valid = lists >= 0
    if not valid.any() or support.max(initial=0) == 0:
        return 0.0
    pop = support[np.where(valid, lists, 0)] / float(support.max())
    per_list = (pop * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    return float(per_list[valid.any(axis=1)].mean())


def metric_table(
    ranks: np.ndarray, top: np.ndarray, cutoffs: tuple[int, ...], support: np.ndarray
) -> dict[str, float]:
    """Every metric at every cut-off: ``{"recall@20": ..., "mrr@20": ..., ...}``."""
    out: dict[str, float] = {}
    for name, fn in (("recall", recall), ("mrr", mrr), ("ndcg", ndcg)):
        for k in cutoffs:
            out[f"{name}@{k}"] = fn(ranks, k)
    for k in cutoffs:
        out[f"coverage@{k}"] = coverage(top, k, len(support))
    for k in cutoffs:
        out[f"popularity@{k}"] = popularity(top, k, support)
    return out
