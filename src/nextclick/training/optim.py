"""Adagrad with momentum, with sparse row updates for embedding-like matrices.

``acc += g^2; step = lr * g / sqrt(acc + eps); v = momentum * v - step; theta += v``.
Accumulators and momenta start at 0; there is no learning-rate decay and no clipping. Rows
of a row-sparse parameter (and their accumulator and momentum rows) change only when the
step used them; a row used several times in a step gets the sum of its gradients.

On the CPU the row update is one compiled pass (sum duplicates, update accumulator,
momentum and weights); elsewhere it is the same arithmetic in torch operations.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor


class AdagradM:
    """The GRU4Rec optimizer.

    Parameters
    ----------
    params
        Name -> tensor, updated in place.
    learning_rate, momentum, eps
        As in the update rule above.
    """

    def __init__(
        self,
        params: dict[str, Tensor],
        learning_rate: float,
        momentum: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        self.params = params
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.eps = eps
        self.acc = {name: torch.zeros_like(p) for name, p in params.items()}
        self.mom = {name: torch.zeros_like(p) for name, p in params.items()} if momentum else {}
        # Row -> slot map used by the compiled row update to sum duplicates (kept at -1).
        self._slots = {
            name: np.full(len(p), -1, dtype=np.int64)
            for name, p in params.items()
            if p.device.type == "cpu"
        }
        self._buffers: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def dense(self, grads: dict[str, Tensor]) -> None:
        """Update every entry of each named parameter with its gradient (one fused pass)."""
        names = list(grads)
        g = [grads[name] for name in names]
        acc = [self.acc[name] for name in names]
        params = [self.params[name] for name in names]
        torch._foreach_addcmul_(acc, g, g)
        denom = torch._foreach_add(acc, self.eps)
        torch._foreach_sqrt_(denom)
        if self.momentum > 0:
            mom = [self.mom[name] for name in names]
            torch._foreach_mul_(mom, self.momentum)
            torch._foreach_addcdiv_(mom, g, denom, value=-self.learning_rate)
            torch._foreach_add_(params, mom)
        else:
            torch._foreach_addcdiv_(params, g, denom, value=-self.learning_rate)

    def _buffer(self, name: str, rows: int, dim: int, dtype: np.dtype) -> np.ndarray:
        """A reused (rows, dim) scratch buffer for summing gradients of parameter ``name``."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._buffers[name] = np.empty((max(rows, 4096), dim), dtype=dtype)
        return buffer

    @torch.no_grad()
    def rows(self, name: str, index: Tensor, grad: Tensor) -> None:
        """Update the rows ``index`` (duplicates allowed) of ``name`` with gradients ``grad``.

        ``grad[i]`` is the gradient of row ``index[i]``.
        """
        param = self.params[name]
        if param.device.type == "cpu":
            matrix = param.view(len(param), -1).numpy()
            _rows_update(
                matrix,
                self.acc[name].view(len(param), -1).numpy(),
                self.mom[name].view(len(param), -1).numpy() if self.momentum else matrix[:0],
                index.numpy(),
                grad.reshape(len(index), -1).numpy(),
                # Scalars of the weights' type keep the arithmetic in float32 (vectorised).
                matrix.dtype.type(self.learning_rate),
                matrix.dtype.type(self.momentum),
                matrix.dtype.type(self.eps),
                self._slots[name],
                self._buffer(name, len(index), matrix.shape[1], matrix.dtype),
            )
            return
        unique, summed = sum_rows(index, grad)
        acc = self.acc[name].index_select(0, unique).addcmul_(summed, summed)
        self.acc[name].index_copy_(0, unique, acc)
        step = summed / acc.add_(self.eps).sqrt_()
        if self.momentum > 0:
            mom = self.mom[name].index_select(0, unique).mul_(self.momentum)
            mom.sub_(step, alpha=self.learning_rate)
            self.mom[name].index_copy_(0, unique, mom)
            param.index_add_(0, unique, mom)
        else:
            param.index_add_(0, unique, step, alpha=-self.learning_rate)


def sum_rows(index: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """Unique row indices and the summed gradient of each (duplicates in a step add up)."""
    unique, inverse = torch.unique(index, return_inverse=True)
    summed = torch.zeros((len(unique), *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
    summed.index_add_(0, inverse, grad)
    return unique, summed


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rows_update(weights, acc, mom, index, grad, lr, momentum, eps, slots, summed):
    """Sum the gradients of duplicate rows, then apply Adagrad with momentum to each row.

    ``slots`` maps a row to its place in ``summed`` (a reused buffer) and is reset to -1.
    """
    n, dim = grad.shape
    unique = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        row = index[i]
        slot = slots[row]
        if slot < 0:
            slots[row] = k
            unique[k] = row
            for j in range(dim):
                summed[k, j] = grad[i, j]
            k += 1
        else:
            for j in range(dim):
                summed[slot, j] += grad[i, j]
    for s in range(k):
        row = unique[s]
        slots[row] = -1
        g = summed[s]
        a_row = acc[row]
        w_row = weights[row]
        for j in range(dim):
            a_row[j] += g[j] * g[j]
            g[j] = g[j] / np.sqrt(a_row[j] + eps)  # the Adagrad step, before the rate
        if momentum > 0:
            m_row = mom[row]
            for j in range(dim):
                m_row[j] = momentum * m_row[j] - lr * g[j]
                w_row[j] += m_row[j]
        else:
            for j in range(dim):
                w_row[j] -= lr * g[j]
