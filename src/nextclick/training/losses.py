"""GRU4Rec's ranking losses over a sampled score matrix.

Every function takes ``R``, the (B, N) scores of a mini-batch: row ``i`` scores the ``N``
sampled items, and its positive (its own target) is column ``i``; the other columns are
negatives (the other rows' targets, then the shared extra samples). Each returns the loss
summed over rows; the caller divides by the nominal batch size. The softmax over negatives
is taken once, after the columns were selected, and every log has its epsilon.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-24
LOSSES = ("cross-entropy", "bpr-max", "top1-max", "bpr", "top1")


def _positive(R: Tensor) -> Tensor:
    """(B, 1) score of each row's own target (column i of row i)."""
    return torch.diagonal(R).unsqueeze(1)


def _negative_mask(R: Tensor) -> Tensor:
    """(B, N) 1 for negatives, 0 on each row's positive column."""
    return 1.0 - torch.eye(R.shape[0], R.shape[1], dtype=R.dtype, device=R.device)


def _softmax_negatives(R: Tensor, mask: Tensor) -> Tensor:
    """Softmax of each row over its negatives only (the positive gets weight 0)."""
    # The max runs over the negatives only, so that very negative scores cannot underflow
    # every exponential of a row.
    top = R.masked_fill(mask == 0, -torch.inf).amax(dim=1, keepdim=True)
    e = torch.exp(R - top) * mask
    return e / e.sum(dim=1, keepdim=True)


def _elu(R: Tensor, elu_param: float) -> Tensor:
    """ELU with alpha=elu_param; 0 means no activation (linear), not ELU with alpha 0."""
    return torch.nn.functional.elu(R, elu_param) if elu_param > 0 else R


def cross_entropy(R: Tensor, log_q: Tensor | None = None, logq: float = 0.0) -> Tensor:
    """``-log(softmax(R - logq * log_q)_ii + eps)`` summed over rows.

    ``log_q``: (N,) log of each column's sampling weight (support for in-batch columns,
    support^sample_alpha for the extra samples); subtracted when ``logq > 0``.
    """
    if logq > 0 and log_q is not None:
        R = R - logq * log_q
    e = torch.exp(R - R.max(dim=1, keepdim=True).values)
    p = e / e.sum(dim=1, keepdim=True)
    return -torch.log(torch.diagonal(p) + EPS).sum()


def bpr_max(R: Tensor, bpreg: float, elu_param: float = 0.0) -> Tensor:
    """``-log(sum_j s_ij sigmoid(r_i - r_j) + eps) + bpreg * sum_j s_ij r_j^2``."""
    R = _elu(R, elu_param)
    mask = _negative_mask(R)
    s = _softmax_negatives(R, mask)
    pos = _positive(R)
    ranking = -torch.log((torch.sigmoid(pos - R) * s).sum(dim=1) + EPS)
    return (ranking + bpreg * (R * R * s).sum(dim=1)).sum()


def top1_max(R: Tensor, elu_param: float = 0.0) -> Tensor:
    """``sum_j s_ij (sigmoid(r_j - r_i) + sigmoid(r_j^2))``."""
    R = _elu(R, elu_param)
    mask = _negative_mask(R)
    s = _softmax_negatives(R, mask)
    pos = _positive(R)
    return ((torch.sigmoid(R - pos) + torch.sigmoid(R * R)) * s).sum()


def bpr(R: Tensor, elu_param: float = 0.0) -> Tensor:
    """2016 paper: mean over the row's negatives of ``-log(sigmoid(r_i - r_j))``."""
    R = _elu(R, elu_param)
    mask = _negative_mask(R)
    losses = -torch.log(torch.sigmoid(_positive(R) - R) + EPS) * mask
    return (losses.sum(dim=1) / mask.sum(dim=1)).sum()


def top1(R: Tensor, elu_param: float = 0.0) -> Tensor:
    """2016 paper: mean over the row's negatives of ``sigmoid(r_j - r_i) + sigmoid(r_j^2)``."""
    R = _elu(R, elu_param)
    mask = _negative_mask(R)
    losses = (torch.sigmoid(R - _positive(R)) + torch.sigmoid(R * R)) * mask
    return (losses.sum(dim=1) / mask.sum(dim=1)).sum()
