"""Adagrad with momentum, with sparse row updates for embedding-like matrices.

``acc += g^2; step = lr * g / sqrt(acc + eps); v = momentum * v - step; theta += v``.
Accumulators and momenta start at 0; there is no learning-rate decay and no clipping. Rows
of a row-sparse parameter (and their accumulator and momentum rows) change only when the
step used them; a row used several times in a step gets the sum of its gradients.

On the CPU each update is one compiled pass over NumPy views of the tensors; on other
devices it is the same arithmetic in torch operations.
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
        Name -> contiguous tensor, updated in place.
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
        self._slots: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}

    def _views(self, name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """NumPy views of (weights, accumulator, momentum) and the scalars in their type."""
        param = self.params[name]
        tensors = (param, self.acc[name], self.mom[name] if self.momentum else param)
        arrays = tuple(t.view(shape).numpy() for t in tensors)
        # Scalars of the weights' type keep the compiled arithmetic in float32.
        kind = arrays[0].dtype.type
        return (*arrays, kind(self.learning_rate), kind(self.momentum), kind(self.eps))

    @torch.no_grad()
    def dense(self, name: str, grad: Tensor) -> None:
        """Update every entry of parameter ``name`` with gradient ``grad`` (same shape)."""
        param = self.params[name]
        if param.device.type == "cpu":
            _dense_update(*self._views(name, (-1,)), grad.reshape(-1).numpy())
            return
        self._dense_torch(name, grad)

    def _dense_torch(self, name: str, grad: Tensor) -> None:
        param = self.params[name]
        acc = self.acc[name].addcmul_(grad, grad)
        denom = (acc + self.eps).sqrt_()
        if self.momentum > 0:
            mom = (
                self.mom[name].mul_(self.momentum).addcdiv_(grad, denom, value=-self.learning_rate)
            )
            param.add_(mom)
        else:
            param.addcdiv_(grad, denom, value=-self.learning_rate)

    @torch.no_grad()
    def rows(
        self,
        name: str,
        *parts: tuple[Tensor, Tensor],
        bias: tuple[str, Tensor] | None = None,
    ) -> None:
        """Update rows of parameter ``name``; each part is (row indices, their gradients).

        ``grad[i]`` is the gradient of row ``index[i]``; duplicates, within and across
        parts, are summed before the (non-linear) update. One or two parts. ``bias`` =
        (name of a vector, gradients of the last part's rows) also updates that vector's
        entries of the last part's rows, in the same pass (an output layer's bias).
        """
        param = self.params[name]
        if param.device.type != "cpu":
            index = torch.cat([i for i, _ in parts])
            self._rows_torch(name, index, torch.cat([g for _, g in parts]))
            if bias is not None:
                self._rows_torch(bias[0], parts[-1][0], bias[1])
            return
        n_rows = len(param)
        dim = param.numel() // max(n_rows, 1)
        if name not in self._slots:
            self._slots[name] = np.full(n_rows, -1, dtype=np.int64)
        # With one part, it is part b (the part whose rows may carry a bias gradient).
        empty = (parts[0][0][:0], parts[0][1][:0])
        (index_a, grad_a), (index_b, grad_b) = (empty, *parts)[-2:]
        n = len(index_a) + len(index_b)
        buffer = self._buffers.get(name)
        if buffer is None or len(buffer) < n:
            buffer = self._buffers[name] = np.empty((max(n, 4096), dim), param.numpy().dtype)
        if bias is None:
            bias_arrays = (buffer[:0, 0],) * 4
        else:
            bias_arrays = (*self._views(bias[0], (-1,))[:3], bias[1].numpy())
        _rows_update(
            *self._views(name, (n_rows, dim)),
            index_a.numpy(), grad_a.reshape(len(index_a), dim).numpy(),
            index_b.numpy(), grad_b.reshape(len(index_b), dim).numpy(),
            self._slots[name], buffer, *bias_arrays,
        )  # fmt: skip

    def _rows_torch(self, name: str, index: Tensor, grad: Tensor) -> None:
        param = self.params[name]
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
def _dense_update(weights, acc, mom, lr, momentum, eps, grad):
    if momentum > 0:
        for i in range(len(grad)):
            g = grad[i]
            a = acc[i] + g * g
            acc[i] = a
            v = momentum * mom[i] - lr * g / np.sqrt(a + eps)
            mom[i] = v
            weights[i] += v
    else:
        for i in range(len(grad)):
            g = grad[i]
            a = acc[i] + g * g
            acc[i] = a
            weights[i] -= lr * g / np.sqrt(a + eps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gather_rows(index, grad, slots, summed, unique, k):
    """Add each gradient row into its row's slot of ``summed``; returns the slots in use."""
    dim = grad.shape[1]
    for i in range(len(index)):
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
    return k


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rows_update(
    weights, acc, mom, lr, momentum, eps, index_a, grad_a, index_b, grad_b, slots, summed,
    bias, bias_acc, bias_mom, bias_grad,
):  # fmt: skip
    """Sum the gradients of duplicate rows, then apply Adagrad with momentum to each row.

    ``slots`` maps a row to its place in ``summed`` (a reused buffer) and is left at -1.
    When ``bias_grad`` is not empty, the rows of part b also update their ``bias`` entry.
    """
    dim = weights.shape[1]
    unique = np.empty(len(index_a) + len(index_b), dtype=np.int64)
    k = _gather_rows(index_a, grad_a, slots, summed, unique, 0)
    k = _gather_rows(index_b, grad_b, slots, summed, unique, k)
    # Two copies of the update loop so that neither carries a branch; 2-D indexing rather
    # than row views, which would cost reference counting per row.
    if momentum > 0:
        for s in range(k):
            row = unique[s]
            for j in range(dim):
                g = summed[s, j]
                a = acc[row, j] + g * g
                acc[row, j] = a
                v = momentum * mom[row, j] - lr * g / np.sqrt(a + eps)
                mom[row, j] = v
                weights[row, j] += v
    else:
        for s in range(k):
            row = unique[s]
            for j in range(dim):
                g = summed[s, j]
                a = acc[row, j] + g * g
                acc[row, j] = a
                weights[row, j] -= lr * g / np.sqrt(a + eps)
    if len(bias_grad):
        # Only part b's rows have a bias gradient; the slots still map rows to sums.
        bias_sum = np.zeros(k, dtype=summed.dtype)
        touched = np.zeros(k, dtype=np.bool_)
        for i in range(len(index_b)):
            s = slots[index_b[i]]
            bias_sum[s] += bias_grad[i]
            touched[s] = True
        for s in range(k):
            if touched[s]:
                row = unique[s]
                g = bias_sum[s]
                a = bias_acc[row] + g * g
                bias_acc[row] = a
                if momentum > 0:
                    v = momentum * bias_mom[row] - lr * g / np.sqrt(a + eps)
                    bias_mom[row] = v
                    bias[row] += v
                else:
                    bias[row] -= lr * g / np.sqrt(a + eps)
    for s in range(k):
        slots[unique[s]] = -1
