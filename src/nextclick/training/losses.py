"""The training losses: GRU4Rec's ranking losses, and the softmax losses of the item-list
models (full, in item blocks, or sampled with the log-Q correction; SASRec's BCE and gBCE).

GRU4Rec's functions take ``R``, the (B, N) scores of a mini-batch: row ``i`` scores the
``N`` sampled items, and its positive (its own target) is column ``i``; the other columns are
negatives (the other rows' targets, then the shared extra samples). Each returns the loss
summed over rows; the caller divides by the nominal batch size. The softmax over negatives
is taken once, after the columns were selected, and every log has its epsilon. On the CPU,
GRU4Rec's step runs the compiled twins of ``cross_entropy`` and ``bpr_max`` in
:mod:`nextclick.training.fused` (the tests check that they agree); these are the reference
and the GPU path.
"""

from __future__ import annotations

import math

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


# -- the item-list models: query vectors against item vectors -----------------------------------


#: Items per matrix product of the full softmax: products of a few thousand columns run at
#: the CPU's full speed, one over a whole large catalogue at two thirds of it.
ITEM_BLOCK = 4096


class _SoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of ``q @ W.T`` over all items, its products taken over
    blocks of ``ITEM_BLOCK`` items. When the (B, N) probabilities fit in ``max_logits``
    they are kept for the backward pass; otherwise only a running log-sum-exp is kept and
    each block's probabilities are recomputed there, so memory stays bounded whatever the
    catalogue."""

    @staticmethod
    def forward(ctx, q: Tensor, table: Tensor, first: int, targets: Tensor,
                max_logits: int) -> Tensor:  # fmt: skip
        ctx.first = first
        W = table[first:]
        n, N = len(q), len(W)
        target_logits = (q * W[targets]).sum(dim=1)
        if n * N <= max_logits:
            probs = torch.empty((n, N), dtype=q.dtype, device=q.device)
            for c in range(0, N, ITEM_BLOCK):
                torch.mm(q, W[c : c + ITEM_BLOCK].T, out=probs[:, c : c + ITEM_BLOCK])
            # In place, one exponential per logit: torch.logsumexp then exp takes two and a
            # temporary (n, N) copy (512 x 17k logits on one thread: 55 ms, against 15).
            top = probs.amax(dim=1, keepdim=True)
            total = probs.sub_(top).exp_().sum(dim=1, keepdim=True)
            probs.div_(total)
            lse = (top + total.log()).squeeze(1)
            ctx.save_for_backward(q, table, targets, lse, probs)
            return (lse - target_logits).mean()
        top = torch.full((n,), -math.inf, dtype=q.dtype, device=q.device)
        total = torch.zeros(n, dtype=q.dtype, device=q.device)
        for c in range(0, N, ITEM_BLOCK):
            logits = q @ W[c : c + ITEM_BLOCK].T  # (n, block)
            new_top = torch.maximum(top, logits.amax(dim=1))
            total = total * torch.exp(top - new_top) + torch.exp(
                logits - new_top[:, None]
            ).sum(dim=1)
            top = new_top
        lse = top + torch.log(total)
        ctx.save_for_backward(q, table, targets, lse)
        return (lse - target_logits).mean()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        q, table, targets, lse, *kept = ctx.saved_tensors
        W = table[ctx.first :]
        scale = float(grad) / len(q)
        # The scale goes onto the (small) products, not onto the (n, N) probabilities.
        d_q = torch.zeros_like(q)
        # The gradient of the whole table, written in place: autograd's backward of the
        # slice table[first:] would zero a table-sized tensor and copy this into it.
        d_table = torch.empty_like(table)
        d_table[: ctx.first] = 0.0
        d_W = d_table[ctx.first :]
        for c in range(0, len(W), ITEM_BLOCK):
            part = W[c : c + ITEM_BLOCK]
            if kept:
                p = kept[0][:, c : c + ITEM_BLOCK]
            else:
                p = torch.exp(q @ part.T - lse[:, None])  # (n, block)
            d_q.addmm_(p, part)
            torch.mm(p.T, q, out=d_W[c : c + ITEM_BLOCK])
        d_q.sub_(W[targets]).mul_(scale)
        d_W.index_add_(0, targets, q, alpha=-1.0).mul_(scale)
        return d_q, d_table, None, None, None


def softmax_cross_entropy(q: Tensor, table: Tensor, targets: Tensor, max_logits: int,
                          first: int = 0) -> Tensor:  # fmt: skip
    """Mean over rows of ``-log softmax(q @ W.T)[target]`` over every item, ``W`` =
    ``table[first:]``.

    ``q`` (B, d) queries, ``table`` (first + N, d) whose rows from ``first`` on are the item
    vectors (an embedding with its pad row first), ``targets`` (B,) item indices. Below two
    blocks of items, torch's own fused loss; above, products over item blocks, the
    probabilities kept when B x N <= ``max_logits``, else recomputed block by block in the
    backward pass (bounded memory).
    """
    W = table[first:]
    if len(W) <= 2 * ITEM_BLOCK and len(q) * len(W) <= max_logits:
        return torch.nn.functional.cross_entropy(q @ W.T, targets)
    return _SoftmaxCE.apply(q, table, first, targets, max_logits)


def sampled_softmax(
    q: Tensor, W: Tensor, targets: Tensor, samples: Tensor | None, log_share: Tensor,
    n_items: int, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Mean softmax cross-entropy over the batch's targets plus uniform extra candidates,
    with the log-Q correction (every logit minus log(K * Q), K the candidates drawn from a
    pool and Q an item's probability there).

    Column ``j < B`` is row ``j``'s target: K = B, Q = the item's share of the training
    events ``exp(log_share)`` (the positive column too); the ``samples`` columns: K = their
    number, Q = 1 / ``n_items``. Candidates equal to a row's target, except its own
    positive column, are masked out; so are the targets of rows of the same ``groups``
    value (B,) — a session's other positions, whose items are not negatives for it (TRON
    draws in-batch negatives from other sessions' clicks).
    """
    candidates = targets if samples is None else torch.cat((targets, samples))
    logits = q @ W[candidates].T  # (B, C)
    correction = log_share[targets] + math.log(len(targets))
    if samples is not None:
        uniform = math.log(len(samples) / n_items)
        correction = torch.cat((correction, correction.new_full((len(samples),), uniform)))
    logits = logits - correction
    rows = torch.arange(len(targets), device=q.device)
    same = candidates[None, :] == targets[:, None]
    if groups is not None:
        same[:, : len(targets)] |= groups[None, :] == groups[:, None]
    same[rows, rows] = False
    logits = logits.masked_fill(same, -math.inf)
    return torch.nn.functional.cross_entropy(logits, rows)


def bce_negatives(positive: Tensor, negatives: Tensor) -> Tensor:
    """SASRec's loss: mean over positions of ``-log sigmoid(s+) - sum log(1 - sigmoid(s-))``.

    ``positive`` (n,), ``negatives`` (n, k) logits of each position.
    """
    return (torch.nn.functional.softplus(-positive)
            + torch.nn.functional.softplus(negatives).sum(dim=1)).mean()  # fmt: skip


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's beta = 1 - t (1 - alpha), alpha = k / (N - 1): t = 0 is BCE, t = 1 beta = alpha."""
    alpha = n_negatives / (n_items - 1)
    return 1.0 - t * (1.0 - alpha)


def gbce(positive: Tensor, negatives: Tensor, n_items: int, t: float) -> Tensor:
    """gSASRec's generalised BCE: mean over positions of
    ``-[beta log sigmoid(s+) + sum log(1 - sigmoid(s-))] / (k + 1)``.

    As in the authors' code, the positive logit is replaced, in float64, by the logit whose
    sigmoid is ``sigmoid(s+) ** beta`` (with their clamps), then plain BCE is applied.
    """
    beta = gbce_beta(negatives.shape[1], n_items, t)
    eps = 1e-10
    p = torch.sigmoid(positive.double()).clamp(eps, 1 - eps)
    powered = p.pow(-beta).clamp(1 + eps, torch.finfo(torch.float64).max)
    shifted = torch.log((1.0 / (powered - 1.0)).clamp(eps, torch.finfo(torch.float64).max))
    logits = torch.cat((shifted[:, None], negatives.double()), dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    per_position = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels, reduction="none"
    ).mean(dim=1)
    return per_position.mean().to(positive.dtype)
