"""Adagrad with momentum, with sparse row updates for embedding-like matrices.

``acc += g^2; step = lr * g / sqrt(acc + eps); v = momentum * v - step; theta += v``.
Accumulators and momenta start at 0; there is no learning-rate decay and no clipping. Rows
of a row-sparse parameter (and their accumulator and momentum rows) change only when the
step used them; a row used several times in a step gets the sum of its gradients.

On the CPU each update is one compiled pass over NumPy views of the tensors; on other devices
it is the same arithmetic in torch operations.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from torch import Tensor

from nextclick.training.memory import empty_table_like


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
        self.acc = {name: empty_table_like(p).zero_() for name, p in params.items()}
        self.mom = {name: empty_table_like(p).zero_() for name, p in params.items()
                    } if momentum else {}  # fmt: skip
        self._slots: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._arrays: dict[str, tuple] = {}

    def _views(self, name: str, shape: tuple[int, ...]) -> tuple:
        """NumPy views of (weights, accumulator, momentum) and the scalars in their type."""
        arrays = self._arrays.get(name)
        if arrays is None:
            # Made once: converting a tensor costs several dispatches, reshaping a view not.
            param = self.params[name]
            tensors = (param, self.acc[name], self.mom[name] if self.momentum else param)
            arrays = self._arrays[name] = tuple(t.numpy() for t in tensors)
        # Scalars of the weights' type keep the compiled arithmetic in float32.
        kind = arrays[0].dtype.type
        return (*(a.reshape(shape) for a in arrays), kind(self.learning_rate),
                kind(self.momentum), kind(self.eps))  # fmt: skip

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
        rows: Tensor | None,
        grad: Tensor | None,
        *,
        extra: tuple[Tensor, Tensor] | None = None,
        bias: tuple[str, Tensor] | None = None,
    ) -> None:
        """Update rows of parameter ``name``.

        ``rows`` are distinct row indices and ``grad`` their gradients (overwritten on the
        CPU); ``extra`` = (indices, gradients) adds the gradients of further rows, repeats
        allowed and overlapping ``rows``, before the (non-linear) update. ``bias`` = (name of
        a vector, one gradient per entry of ``rows``) updates that vector's entries of
        ``rows`` in the same pass (an output layer's bias).
        """
        param = self.params[name]
        n_rows = len(param)
        dim = param.numel() // max(n_rows, 1)
        if rows is None or grad is None:
            rows = torch.zeros(0, dtype=torch.int64, device=param.device)
            grad = param.new_zeros((0, dim))
        if extra is None:
            extra = (rows[:0], grad[:0])
        if param.device.type != "cpu":
            self._rows_torch(name, torch.cat((rows, extra[0])), torch.cat((grad, extra[1])))
            if bias is not None:
                self._rows_torch(bias[0], rows, bias[1])
            return
        if name not in self._slots:
            self._slots[name] = np.full(n_rows, -1, dtype=np.int64)
        n = len(extra[0])
        buffer = self._buffers.get(name)
        if buffer is None or len(buffer) < n:
            buffer = self._buffers[name] = np.empty((max(n, 256), dim), param.numpy().dtype)
        if bias is None:
            bias_arrays = (buffer[:0, 0],) * 4
        else:
            bias_arrays = (*self._views(bias[0], (-1,))[:3], bias[1].numpy())
        _rows_update(
            *self._views(name, (n_rows, dim)),
            rows.numpy(), grad.reshape(len(rows), dim).numpy(),
            extra[0].numpy(), extra[1].reshape(n, dim).numpy(),
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
    # Two loops rather than a test inside one: each compiles to vector instructions.
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



#: How many rows ahead the row updates ask for a row's memory: a million-item table's rows are
#: in main memory, and one row's update (100 columns) is too long for the CPU to start the
#: next row's loads by itself.
_AHEAD = 2


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` (a 1-d contiguous array) into cache for writing
    (LLVM's prefetch; a hint, so it never faults)."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte = ir.IntType(8).as_pointer()
        hint = ir.FunctionType(ir.VoidType(), [byte, *(ir.IntType(32),) * 3])
        llvm_prefetch = builder.module.declare_intrinsic("llvm.prefetch", fnty=hint)
        write, locality, data_cache = (ir.Constant(ir.IntType(32), v) for v in (1, 3, 1))
        address = builder.bitcast(builder.gep(data, [args[1]]), byte)
        builder.call(llvm_prefetch, [address, write, locality, data_cache])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_row(flat, row, dim):
    """Prefetch row ``row`` of the (rows, dim) array whose flat view is ``flat``."""
    line = max(1, 64 // flat.itemsize)
    for j in range(0, dim, line):
        _prefetch(flat, row * dim + j)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _adagrad_row(weights, acc, mom, row, grad, s, lr, momentum, eps):
    """Update row ``row`` of weights with gradient row ``s`` of ``grad``. 2-D indexing
    rather than row views, which would cost reference counting per row."""
    if momentum > 0:
        for j in range(weights.shape[1]):
            g = grad[s, j]
            a = acc[row, j] + g * g
            acc[row, j] = a
            v = momentum * mom[row, j] - lr * g / np.sqrt(a + eps)
            mom[row, j] = v
            weights[row, j] += v
    else:
        for j in range(weights.shape[1]):
            g = grad[s, j]
            a = acc[row, j] + g * g
            acc[row, j] = a
            weights[row, j] -= lr * g / np.sqrt(a + eps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rows_update(
    weights, acc, mom, lr, momentum, eps, rows, grad, extra_index, extra_grad, slots, buffer,
    bias, bias_acc, bias_mom, bias_grad,
):  # fmt: skip
    """Add the extra gradients to their rows (``grad`` for ``rows``, ``buffer`` for the
    others, found through ``slots``, which is left at -1), then update every row once."""
    k = len(rows)
    dim = weights.shape[1]
    for s in range(k):
        slots[rows[s]] = s
    others = np.empty(len(extra_index), dtype=np.int64)
    m = 0
    for i in range(len(extra_index)):
        row = extra_index[i]
        s = slots[row]
        if s < 0:
            slots[row] = k + m
            others[m] = row
            for j in range(dim):
                buffer[m, j] = extra_grad[i, j]
            m += 1
        elif s < k:
            for j in range(dim):
                grad[s, j] += extra_grad[i, j]
        else:
            for j in range(dim):
                buffer[s - k, j] += extra_grad[i, j]
    flat_w, flat_acc, flat_mom = weights.reshape(-1), acc.reshape(-1), mom.reshape(-1)
    for s in range(k + m):
        ahead = s + _AHEAD
        if ahead < k + m:
            row = rows[ahead] if ahead < k else others[ahead - k]
            _prefetch_row(flat_w, row, dim)
            _prefetch_row(flat_acc, row, dim)
            if momentum:  # without momentum, mom is the weights array itself
                _prefetch_row(flat_mom, row, dim)
        if s < k:
            _adagrad_row(weights, acc, mom, rows[s], grad, s, lr, momentum, eps)
        else:
            _adagrad_row(weights, acc, mom, others[s - k], buffer, s - k, lr, momentum, eps)
    for s in range(len(bias_grad)):
        row = rows[s]
        g = bias_grad[s]
        a = bias_acc[row] + g * g
        bias_acc[row] = a
        if momentum > 0:
            v = momentum * bias_mom[row] - lr * g / np.sqrt(a + eps)
            bias_mom[row] = v
            bias[row] += v
        else:
            bias[row] -= lr * g / np.sqrt(a + eps)
    for s in range(k):
        slots[rows[s]] = -1
    for s in range(m):
        slots[others[s]] = -1
