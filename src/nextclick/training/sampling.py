"""Extra negative samples drawn with probability proportional to support^sample_alpha.

Samples come from a precomputed store of millions of ids, refilled when used up, so that a
training step costs one slice, not a draw. The store is filled with Walker's alias method:
two uniform numbers per id and no search, exact up to floating-point rounding.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True)
def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table: item ``i`` is kept with probability ``accept[i]``, else ``alias[i]``."""
    n = len(weights)
    scaled = weights * n / weights.sum()
    accept = np.ones(n)
    alias = np.arange(n)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    n_small = 0
    n_large = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small > 0 and n_large > 0:
        n_small -= 1
        s = small[n_small]
        g = large[n_large - 1]
        accept[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        if scaled[g] < 1.0:
            n_large -= 1
            small[n_small] = g
            n_small += 1
    return accept, alias


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _alias_draw(column, coin, accept, alias, out):
    """One alias-method draw per (uniform column, uniform coin) pair."""
    for i in numba.prange(len(out)):
        c = column[i]
        out[i] = c if coin[i] < accept[c] else alias[c]


class SampleStore:
    """Blocks of ``n_sample`` item indices, drawn ∝ ``support ** sample_alpha``.

    Parameters
    ----------
    support
        (n_items,) number of training events of each item (all > 0).
    sample_alpha
        0 samples uniformly, 1 in proportion to popularity.
    n_sample
        Items per block (one block per training step).
    store_size
        Item ids drawn at once (rounded down to whole blocks; at least one block).
    generator
        Source of randomness; its device is where the samples live.
    """

    def __init__(
        self,
        support: np.ndarray,
        sample_alpha: float,
        n_sample: int,
        store_size: int,
        generator: torch.Generator,
    ) -> None:
        accept, alias = _alias_table(np.asarray(support, dtype=np.float64) ** sample_alpha)
        device = generator.device
        self._accept = torch.as_tensor(accept, dtype=torch.float32, device=device)
        self._alias = torch.as_tensor(alias, dtype=torch.int64, device=device)
        self.n_sample = n_sample
        self.n_blocks = max(1, store_size // max(n_sample, 1))
        self._generator = generator
        self._blocks = torch.empty(0, dtype=torch.int64)
        self._next = self.n_blocks

    def _refill(self) -> None:
        size = self.n_blocks * self.n_sample
        device = self._generator.device
        # Integer columns (exact for any catalogue size) and float32 coins.
        column = torch.randint(len(self._alias), (size,), generator=self._generator, device=device)
        coin = torch.rand(size, generator=self._generator, device=device)
        if device.type == "cpu":
            picks = torch.empty(size, dtype=torch.int64)
            _alias_draw(column.numpy(), coin.numpy(), self._accept.numpy(), self._alias.numpy(),
                        picks.numpy())  # fmt: skip
        else:
            accept = self._accept.index_select(0, column)
            picks = torch.where(coin < accept, column, self._alias.index_select(0, column))

        self._blocks = picks.view(self.n_blocks, self.n_sample)
        self._next = 0

    def next(self) -> torch.Tensor:
        """The next block of ``n_sample`` item indices (int64)."""
        if self._next >= self.n_blocks:
            self._refill()
        block = self._blocks[self._next]
        self._next += 1
        return block
