"""Compiled CPU kernels for the two published losses: loss and gradient in one pass.

On a CPU, the sampled output layer dominates a training step, and a chain of small tensor
operations costs more in dispatch than in arithmetic. These kernels compute, row by row,
the loss of :mod:`nextclick.training.losses` and its gradient with respect to the scores,
writing the gradient over the score matrix. They must equal the autograd gradients of the
formulas in ``losses`` (the tests check this in float64).
"""

from __future__ import annotations

import math

import numba
import numpy as np
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def bpr_max_grad(R, bpreg, elu_param):
    """Sum over rows of the bpr-max loss (with ELU when elu_param > 0); R becomes dLoss/dR.

    Per row, with S = elu(R), s = softmax of S over the negatives, sig_k = sigmoid(S_i - S_k),
    A = sum s_k sig_k and Q = sum s_k S_k^2:
    dL/dS_k = -s_k (sig_k^2 - A) / (A + eps) + bpreg s_k (S_k^2 - Q + 2 S_k) for k != i,
    dL/dS_i = -sum_k s_k sig_k (1 - sig_k) / (A + eps).
    """
    n, m = R.shape
    losses = np.zeros(n)
    for i in range(n):
        row = R[i]
        scores = np.empty(m)
        slope = np.ones(m)
        for j in range(m):
            v = row[j]
            if elu_param > 0 and v <= 0:
                e = elu_param * (math.exp(v) - 1.0)
                scores[j] = e
                slope[j] = e + elu_param
            else:
                scores[j] = v
        top = -np.inf
        for j in range(m):
            if j != i:
                top = max(top, scores[j])
        soft = np.empty(m)
        total = 0.0
        for j in range(m):
            e = 0.0 if j == i else math.exp(scores[j] - top)
            soft[j] = e
            total += e
        pos = scores[i]
        a = 0.0
        q = 0.0
        d_pos = 0.0
        for j in range(m):
            if j == i:
                continue
            s = soft[j] / total
            soft[j] = s
            sig = 1.0 / (1.0 + math.exp(scores[j] - pos))
            a += s * sig
            q += s * scores[j] * scores[j]
            d_pos += s * sig * (1.0 - sig)
            row[j] = sig  # kept for the second pass
        losses[i] = -math.log(a + EPS) + bpreg * q
        inv = 1.0 / (a + EPS)
        for j in range(m):
            if j == i:
                row[j] = -d_pos * inv * slope[j]
            else:
                s = soft[j]
                sig = row[j]
                v = scores[j]
                grad = -s * (sig * sig - a) * inv + bpreg * s * (v * v - q + 2.0 * v)
                row[j] = grad * slope[j]
    return losses.sum()
