"""Compiled CPU kernels for the hot parts of a GRU4Rec training step.

On a CPU a chain of small tensor operations costs more in dispatch than in arithmetic.
``cross_entropy_grad`` and ``bpr_max_grad`` compute the loss of
:mod:`nextclick.training.losses` and its gradient with respect to the scores, summed over
the columns that score the same item; exponentials stay vectorised tensor operations, the
reductions and the gradient are one compiled pass. ``gru_gate_grads`` is the GRU cell's gate
backward. Each must equal its torch counterpart (the tests check this in float64).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from nextclick.training.losses import EPS


@numba.njit(cache=True, nogil=True)
def unique_inverse(index, slots):
    """(distinct values of ``index`` in order of first appearance, position of each entry
    among them). ``slots`` is a -1 filled scratch array over the value range, left as is."""
    unique = np.empty(len(index), dtype=np.int64)
    inverse = np.empty(len(index), dtype=np.int64)
    k = 0
    for i in range(len(index)):
        value = index[i]
        if slots[value] < 0:
            slots[value] = k
            unique[k] = value
            k += 1
        inverse[i] = slots[value]
    for s in range(k):
        slots[unique[s]] = -1
    return unique[:k], inverse


def cross_entropy_grad(
    R: Tensor,
    y: Tensor,
    inverse: Tensor,
    weight_target: np.ndarray,
    weight_sample: np.ndarray,
    scale: float,
    out: Tensor,
    bias_out: Tensor,
) -> float:
    """Cross-entropy with log-Q correction over the columns of a sampled step, from the
    scores of its distinct items; returns the loss summed over rows.

    ``R`` (n, k) holds the scores of the distinct items (it is overwritten); column j of the
    loss's matrix scores item ``y[j]`` = distinct item ``inverse[j]``, minus
    ``logq * log Q_j``. exp(-logq log Q) is ``weight_target[y[j]]`` for the n in-batch
    targets and ``weight_sample[y[j]]`` for the extra samples, so the softmax over the
    columns is exp(R) weighted by the summed weight of each distinct item's columns, and
    nothing of size (n, columns) is formed. ``out`` (n, k) receives ``scale`` * dLoss/dR,
    ``bias_out`` (k,) its column sums.
    """
    R.sub_(R.amax(dim=1, keepdim=True))
    R.exp_()
    return _softmax_cross_entropy_grad(
        R.numpy(), y.numpy(), inverse.numpy(), weight_target, weight_sample, scale,
        out.numpy(), bias_out.numpy(),
    )  # fmt: skip


@numba.njit(cache=True, nogil=True, error_model="numpy",
            fastmath={"reassoc", "contract"})  # fmt: skip
def _softmax_cross_entropy_grad(E, y, inverse, weight_target, weight_sample, scale, out,
                                bias_out):  # fmt: skip
    """E holds exp(R - row max). Per row, p_j = E w_j / sum; the gradient with respect to
    column j is (p_j - [j = i]) p_ii / (p_ii + eps), summed per distinct item."""
    n, k = E.shape
    weight = np.zeros(k, dtype=E.dtype)  # summed weight of each distinct item's columns
    cast = np.empty(1, dtype=E.dtype)  # keeps the inner loop in E's precision
    for j in range(len(inverse)):
        weight[inverse[j]] += weight_target[y[j]] if j < n else weight_sample[y[j]]
    bias_out[:] = 0.0
    loss = 0.0
    for i in range(n):
        total = 0.0
        for u in range(k):
            total += E[i, u] * weight[u]
        positive = inverse[i]
        p_ii = E[i, positive] * weight_target[y[i]] / total
        loss -= math.log(p_ii + EPS)
        keep = p_ii / (p_ii + EPS)
        cast[0] = scale * keep / total
        c = cast[0]
        for u in range(k):
            g = E[i, u] * weight[u] * c
            out[i, u] = g
            bias_out[u] += g
        out[i, positive] -= scale * keep
        bias_out[positive] -= scale * keep
    return loss


def bpr_max_grad(
    R: Tensor,
    bpreg: float,
    elu_param: float,
    inverse: Tensor,
    scale: float,
    out: Tensor,
    bias_out: Tensor,
) -> float:
    """Sum over rows of the bpr-max loss (with ELU when elu_param > 0) of the score matrix
    ``R``; adds ``scale`` * dLoss/dR[:, j] into column ``inverse[j]`` of ``out`` (zeros,
    one column per distinct item) and writes the column sums of ``out`` to ``bias_out``.

    Per row, with S = elu(R), s = softmax of S over the negatives, sig_k = sigmoid(S_i - S_k),
    A = sum s_k sig_k and Q = sum s_k S_k^2:
    dL/dS_k = -s_k (sig_k^2 - A) / (A + eps) + bpreg s_k (S_k^2 - Q + 2 S_k) for k != i,
    dL/dS_i = -sum_k s_k sig_k (1 - sig_k) / (A + eps); then dL/dR = dL/dS * elu'(R), where
    elu'(R) = S + elu_param for R <= 0 (that is, S <= 0) and 1 above.
    The exponentials run as (vectorised) tensor operations, the rest in one compiled pass.
    """
    scores = torch.nn.functional.elu(R, elu_param) if elu_param > 0 else R
    positive = torch.diagonal(scores).unsqueeze(1)
    sig = torch.sigmoid(positive - scores)
    diagonal = torch.eye(R.shape[0], R.shape[1], dtype=torch.bool)
    top = scores.masked_fill(diagonal, -torch.inf).amax(dim=1, keepdim=True)
    soft = torch.exp(scores - top)
    loss = _bpr_max_rows(scores.numpy(), soft.numpy(), sig.numpy(), elu_param, bpreg,
                         inverse.numpy(), scale, out.numpy())  # fmt: skip
    torch.sum(out, 0, out=bias_out)
    return loss


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bpr_max_rows(scores, soft, sig, elu_param, bpreg, inverse, scale, out):
    n, m = scores.shape
    losses = np.zeros(n)
    for i in range(n):
        soft[i, i] = 0.0  # the softmax runs over the negatives
        total = soft[i].sum()
        a = 0.0
        q = 0.0
        d_pos = 0.0
        for j in range(m):
            s = soft[i, j] / total  # 0 on the positive column
            soft[i, j] = s
            g = sig[i, j]
            a += s * g
            q += s * scores[i, j] * scores[i, j]
            d_pos += s * g * (1.0 - g)
        losses[i] = -math.log(a + EPS) + bpreg * q
        inv = 1.0 / (a + EPS)
        for j in range(m):
            s = soft[i, j]
            g = sig[i, j]
            v = scores[i, j]
            if j == i:
                d = -d_pos * inv
            else:
                d = -s * (g * g - a) * inv + bpreg * s * (v * v - q + 2.0 * v)
            if elu_param > 0 and v <= 0:
                d *= v + elu_param
            out[i, inverse[j]] += scale * d
    return losses.sum()


def gru_gate_grads(
    grad: Tensor, h0: Tensor, r: Tensor, z: Tensor, n: Tensor, gh_n: Tensor
) -> tuple[Tensor, Tensor]:
    """The GRU gate gradients of ``models.gru4rec.gru_gate_grads`` in one compiled pass.

    Returns (d_gi, d_gh), each (rows, 3 * size) in the r, z, n block order.
    """
    rows, size = h0.shape
    d_gi = torch.empty(rows, 3 * size, dtype=grad.dtype)
    d_gh = torch.empty(rows, 3 * size, dtype=grad.dtype)
    _gru_gate_grads(
        *(t.contiguous().numpy() for t in (grad, h0, r, z, n, gh_n)),
        d_gi.numpy(), d_gh.numpy(),
    )  # fmt: skip
    return d_gi, d_gh


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gru_gate_grads(grad, h0, r, z, n, gh_n, d_gi, d_gh):
    rows, size = h0.shape
    for i in range(rows):
        for j in range(size):
            d_an = grad[i, j] * (1.0 - z[i, j]) * (1.0 - n[i, j] * n[i, j])
            d_ar = d_an * gh_n[i, j] * r[i, j] * (1.0 - r[i, j])
            d_az = grad[i, j] * (h0[i, j] - n[i, j]) * z[i, j] * (1.0 - z[i, j])
            d_gi[i, j] = d_ar
            d_gi[i, size + j] = d_az
            d_gi[i, 2 * size + j] = d_an
            d_gh[i, j] = d_ar
            d_gh[i, size + j] = d_az
            d_gh[i, 2 * size + j] = d_an * r[i, j]
