"""Randomness of a training step: extra negative samples and dropout multipliers.

Samples are drawn with probability proportional to support^sample_alpha and come from a
precomputed store of millions of ids, refilled when used up, so that a training step costs
one slice, not a draw. The store is filled with Walker's alias method: no search, exact up
to floating-point rounding.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch

#: A source of randomness: NumPy's on the CPU, a torch generator on its device.
Rng = np.random.Generator | torch.Generator


def generator_state(rng: Rng) -> Any:
    """Where ``rng`` is in its stream (for a checkpoint)."""
    return rng.get_state() if isinstance(rng, torch.Generator) else rng.bit_generator.state


def set_generator_state(rng: Rng, state: Any) -> None:
    if isinstance(rng, torch.Generator):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state


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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _alias_draw(uniform, accept, alias, out):
    """One alias-method draw per float64 uniform ``u``: the integer part of ``u * n_items``
    picks the column and its fraction is the coin (53 - log2(n_items) bits: finer than a
    float32 coin for any catalogue under 2^29 items)."""
    n = len(accept)
    for i in range(len(out)):
        u = uniform[i] * n
        c = min(int(u), n - 1)
        out[i] = c if u - c < accept[c] else alias[c]


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
    store_bytes
        Memory of the store: the int64 ids drawn at once fill it, rounded down to whole
        blocks (at least one block), so the store costs the same whatever the catalogue.
    rng
        Source of randomness: a NumPy generator (the samples are on the CPU) or a
        ``torch.Generator`` (the samples live on its device).
    """

    def __init__(
        self,
        support: np.ndarray,
        sample_alpha: float,
        n_sample: int,
        store_bytes: int,
        rng: Rng,
    ) -> None:
        accept, alias = _alias_table(np.asarray(support, dtype=np.float64) ** sample_alpha)
        self._rng = rng
        if isinstance(rng, torch.Generator):
            self._accept = torch.as_tensor(accept, dtype=torch.float32, device=rng.device)
            self._alias = torch.as_tensor(alias, dtype=torch.int64, device=rng.device)
        else:
            self._accept, self._alias = accept, alias
        self.n_sample = n_sample
        self.n_blocks = max(1, store_bytes // (8 * max(n_sample, 1)))
        self._blocks = torch.empty(0, dtype=torch.int64)
        self._next = self.n_blocks
        self._drawn_from: Any = None  # the generator's state before the last refill

    def _refill(self) -> None:
        self._drawn_from = generator_state(self._rng)
        size = self.n_blocks * self.n_sample
        if isinstance(self._rng, torch.Generator):
            # Integer columns and float32 coins, drawn on the generator's device.
            device = self._rng.device
            column = torch.randint(len(self._alias), (size,), generator=self._rng, device=device)
            coin = torch.rand(size, generator=self._rng, device=device)
            accept = self._accept.index_select(0, column)
            picks = torch.where(coin < accept, column, self._alias.index_select(0, column))
        else:
            picks = torch.empty(size, dtype=torch.int64)
            _alias_draw(self._rng.random(size), self._accept, self._alias, picks.numpy())
        self._blocks = picks.view(self.n_blocks, self.n_sample)
        self._next = 0

    def next(self) -> torch.Tensor:
        """The next block of ``n_sample`` item indices (int64)."""
        if self._next >= self.n_blocks:
            self._refill()
        block = self._blocks[self._next]
        self._next += 1
        return block

    def state(self) -> dict[str, Any]:
        """Where the store is, for a checkpoint: the store itself is drawn again from the
        generator's state before its last refill, rather than saved."""
        return {"drawn_from": self._drawn_from, "next": self._next}

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to ``state``; the generator's own state is the caller's to restore after."""
        if state["drawn_from"] is not None:
            set_generator_state(self._rng, state["drawn_from"])
            self._refill()
        self._next = state["next"]


class DropoutScales:
    """Dropout multipliers: 0 with probability ``prob``, else ``1 / (1 - prob)``.

    On the CPU they are drawn a million at a time with NumPy (a few thousand per step from
    torch's generator cost more than the rest of the step's element-wise work); on a GPU
    they are drawn per call with a ``torch.Generator`` on that device.
    """

    _BLOCK = 1 << 20

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._blocks: dict[float, tuple[np.ndarray, int]] = {}
        # Per probability: the generator's state before its block was drawn, and its size.
        self._drawn_from: dict[float, tuple[Any, int]] = {}

    def __call__(self, shape: tuple[int, int], prob: float) -> torch.Tensor:
        size = shape[0] * shape[1]
        if isinstance(self._rng, torch.Generator):
            keep = torch.rand(shape, generator=self._rng, device=self._rng.device) >= prob
            return keep.to(torch.float32).mul_(1.0 / (1.0 - prob))
        block, used = self._blocks.get(prob, (np.empty(0, np.float32), 0))
        if used + size > len(block):
            block, used = self._draw(prob, max(self._BLOCK, size)), 0
        self._blocks[prob] = (block, used + size)
        return torch.from_numpy(block[used : used + size]).view(shape)

    def _draw(self, prob: float, size: int) -> np.ndarray:
        self._drawn_from[prob] = (generator_state(self._rng), size)
        uniform = self._rng.random(size, dtype=np.float32)
        return (uniform >= prob).astype(np.float32) * np.float32(1.0 / (1.0 - prob))

    def state(self) -> list[tuple[float, Any, int, int]]:
        """Where the blocks are, for a checkpoint (drawn again on restore, not saved)."""
        return [(prob, *self._drawn_from[prob], used)
                for prob, (_, used) in self._blocks.items()]  # fmt: skip

    def restore(self, state: list[tuple[float, Any, int, int]]) -> None:
        """Go back to ``state``; the generator's own state is the caller's to restore after."""
        for prob, drawn_from, size, used in state:
            set_generator_state(self._rng, drawn_from)
            self._blocks[prob] = (self._draw(prob, size), used)
