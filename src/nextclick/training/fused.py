"""Compiled CPU kernels for the hot parts of a GRU4Rec training step.

On a CPU a chain of small tensor operations costs more in dispatch than in arithmetic.
``cross_entropy_grad`` and ``bpr_max_grad`` compute the loss of
:mod:`nextclick.training.losses` and its gradient with respect to the scores (written over
the score matrix); exponentials stay vectorised tensor operations, the reductions and the
gradient are one compiled pass. ``gru_gate_grads`` is the GRU cell's gate backward. Each
must equal its torch counterpart (the tests check this in float64).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from nextclick.training.losses import EPS


def cross_entropy_grad(R: Tensor, log_q: Tensor | None, logq: float) -> float:
    """Sum over rows of ``-log(softmax(R - logq*log_q)_ii + eps)``; R becomes dLoss/dR.

    The exponentials run as (vectorised) tensor operations, the reductions and the
    gradient in one compiled pass.
    """
    if logq > 0 and log_q is not None:
        R.sub_(log_q, alpha=logq)
    R.sub_(R.amax(dim=1, keepdim=True))
    R.exp_()
    return _softmax_cross_entropy_grad(R.numpy())


@numba.njit(cache=True, nogil=True, error_model="numpy",
            fastmath={"reassoc", "contract"})  # fmt: skip
def _softmax_cross_entropy_grad(E):
    """E holds exp(scores - row max); it becomes (p - onehot) * p_ii / (p_ii + eps)."""
    n, m = E.shape
    losses = np.zeros(n)
    for i in range(n):
        row = E[i]
        total = row.sum()
        p_ii = row[i] / total
        losses[i] = -math.log(p_ii + EPS)
        scale = (p_ii / (p_ii + EPS)) / total
        for j in range(m):
            row[j] *= scale
        row[i] -= p_ii / (p_ii + EPS)
    return losses.sum()


def bpr_max_grad(R: Tensor, bpreg: float, elu_param: float) -> float:
    """Sum over rows of the bpr-max loss (with ELU when elu_param > 0); R becomes dLoss/dR.

    Per row, with S = elu(R), s = softmax of S over the negatives, sig_k = sigmoid(S_i - S_k),
    A = sum s_k sig_k and Q = sum s_k S_k^2:
    dL/dS_k = -s_k (sig_k^2 - A) / (A + eps) + bpreg s_k (S_k^2 - Q + 2 S_k) for k != i,
    dL/dS_i = -sum_k s_k sig_k (1 - sig_k) / (A + eps); then dL/dR = dL/dS * elu'(R).
    The exponentials run as (vectorised) tensor operations, the rest in one compiled pass.
    """
    if elu_param > 0:
        negative = R <= 0
        scores = torch.where(negative, torch.expm1(R).mul_(elu_param), R)
        slope = torch.where(negative, scores + elu_param, torch.ones_like(R))
    else:
        scores = R.clone()
        slope = R[:0]
    positive = torch.diagonal(scores).unsqueeze(1)
    sig = torch.sigmoid(positive - scores)
    diagonal = torch.eye(R.shape[0], R.shape[1], dtype=torch.bool)
    top = scores.masked_fill(diagonal, -torch.inf).amax(dim=1, keepdim=True)
    soft = torch.exp(scores - top).masked_fill_(diagonal, 0.0)
    return _bpr_max_grad(R.numpy(), scores.numpy(), soft.numpy(), sig.numpy(), slope.numpy(), bpreg)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bpr_max_grad(out, scores, soft, sig, slope, bpreg):
    n, m = scores.shape
    losses = np.zeros(n)
    for i in range(n):
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
            out[i, j] = -s * (g * g - a) * inv + bpreg * s * (v * v - q + 2.0 * v)
        out[i, i] = -d_pos * inv
        if len(slope):
            for j in range(m):
                out[i, j] *= slope[i, j]
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
