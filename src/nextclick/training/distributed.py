"""Data-parallel training over several processes and machines with torch.distributed.

``torchrun --nproc-per-node N [--nnodes M ...] -m nextclick train ...`` starts N processes per
machine, each with ``RANK`` and ``WORLD_SIZE`` in its environment; :func:`init_from_env`
joins them into torch.distributed's default process group (gloo on the CPU, NCCL on GPUs).
Every rank reads the same training file and builds the same item index, initialises the
same parameters from the same seed, and trains on its own share of the sessions
(:func:`shard`) with its own negative samples and dropout. After each step the ranks combine
their gradients, so every rank applies the same update and the parameters stay identical:

- GRU4Rec (:class:`StepExchange`): its optimizer updates only the item rows a step used, so
  the dense gradient is all-reduced and each rank's (row, gradient) pairs are all-gathered;
  a row used on several ranks gets the sum of their gradients, and everything is divided by
  the number of ranks that trained in the step (the mean over the global mini-batch).
- The item-list models (NARM, STAMP, SASRec, SR-GNN, GCE-GNN): torch's
  DistributedDataParallel averages the gradients; every rank takes as many steps as the
  rank with the fewest batches (:class:`Lockstep`), so Adam's state stays identical too.

The epoch figures are the job's: the loss over every rank's targets, events per second of
all ranks together (:func:`summed`), so every rank sees the same loss and a diverging one
stops them all.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from nextclick.data.sessions import SessionData
from nextclick.errors import ConfigError
from nextclick.training.optim import sum_rows

T = TypeVar("T")


class Idle:
    """A step of a rank whose own batches have run out (it has no targets)."""

    def __len__(self) -> int:
        return 0


IDLE = Idle()


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that writes the model and the run record."""
        return self.rank == 0


def world_size_from_env() -> int:
    """The ``WORLD_SIZE`` torchrun gave this process (1 when not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device) -> Group | None:
    """Join the processes torchrun started (None for a one-process run); on GPUs each
    process takes the one of its ``LOCAL_RANK``."""
    if world_size_from_env() <= 1:
        return None
    if not dist.is_initialized():
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.index is not None:
                raise ConfigError(f"under torchrun give --device cuda, not {device}: each "
                                  "process takes the GPU of its LOCAL_RANK")  # fmt: skip
            if local >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local} but this machine has "
                                  f"{torch.cuda.device_count()} GPUs; use --nproc-per-node "
                                  "at most that many")  # fmt: skip
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return current()


def current() -> Group | None:
    """The process group training joins, or None when training runs in one process."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return Group(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        # A DistributedDataParallel left in a reference cycle would otherwise be collected
        # after its process group is gone, and abort the process.
        gc.collect()
        dist.destroy_process_group()


def summed(values: list[float]) -> list[float]:
    """``values`` summed over the ranks (an epoch's loss and targets: the job's figures)."""
    total = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(total)
    return total.tolist()


def shard(sessions: SessionData, group: Group) -> SessionData:
    """Every ``world_size``-th session from the ``rank``-th: shares of nearly equal size and
    the same spread of session lengths and times."""
    chosen = np.arange(group.rank, sessions.n_sessions, group.world_size)
    starts, lengths = sessions.offsets[chosen], sessions.lengths[chosen]
    offsets = np.zeros(len(chosen) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    events = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    items, times = sessions.items[events], sessions.times[events]
    return replace(sessions, items=items, offsets=offsets, times=times,
                   session_ids=sessions.session_ids[chosen])  # fmt: skip


class Lockstep:
    """A rank's batches while every rank still has one: all ranks take the same number of
    steps (a longer share's last few batches are left out, as DistributedSampler's
    drop_last does), so the optimizers stay identical without a join.

    :attr:`mean_targets` is the step's mean number of targets per rank, the same on every
    rank (what a per-batch rule such as STAMP's gradient clipping must use).
    """

    def __init__(self, group: Group) -> None:
        self.group = group
        self.mean_targets = 0.0

    def __call__(self, batches: Iterable[T]) -> Iterator[T]:
        for batch in batches:
            if not self._all_have(len(batch)):  # type: ignore[arg-type]
                return
            yield batch
        self._all_have(None)

    def _all_have(self, n_targets: int | None) -> bool:
        # One all-reduce: how many ranks have a batch, and their targets.
        counts = torch.tensor([n_targets is not None, n_targets or 0], dtype=torch.float64,
                              device=_device())  # fmt: skip
        dist.all_reduce(counts)
        self.mean_targets = counts[1].item() / self.group.world_size
        return counts[0].item() == self.group.world_size


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel (its buffers are identical on every
    rank already, so they are not broadcast at every step)."""
    from torch.nn.parallel import DistributedDataParallel

    # init_from_env made the LOCAL_RANK's GPU the current one.
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)


def _device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors


def seed_sequence(seed: int, group: Group | None) -> np.random.SeedSequence:
    """The seed of a rank's own randomness (samples, dropout, shuffling); the one-process
    seed when there is no group."""
    return np.random.SeedSequence(seed if group is None else [seed, group.rank])


@dataclass
class Combined:
    """One step's gradients summed over the ranks and divided by the ranks that trained."""

    dense: Tensor
    rows: Tensor  # distinct output rows
    d_rows: Tensor  # (len(rows), d)
    d_bias: Tensor  # (len(rows),)
    inputs: Tensor  # input rows, repeats allowed
    d_inputs: Tensor  # (len(inputs), d_in)
    #: Ranks with gradients in this step (0: no update at all, as one process would skip).
    n_trained: int = 1


class StepExchange:
    """Combines the gradients of one GRU4Rec step across the ranks (two collectives).

    Ranks run different numbers of steps (their shares differ a little), so a rank whose
    batches ran out keeps taking part with empty steps (:meth:`idle`) until every rank has
    run out; :meth:`batches` does this for an epoch's iterator.
    """

    def __init__(self, group: Group, d_out: int, d_in: int) -> None:
        self.group = group
        self.d_out, self.d_in = d_out, d_in
        self.finished = False

    def batches(self, steps: Iterable[T]) -> Iterator[T | Idle]:
        """The rank's steps, then :data:`IDLE` steps until every rank's have run out."""
        self.finished = False
        yield from steps
        while not self.finished:
            yield IDLE

    def combine(self, mine: Combined, *, active: bool = True) -> Combined | None:
        """This step's gradients of every rank, combined; None once no rank has steps left
        (then :attr:`finished` is set). ``mine.rows`` are distinct, as the optimizer needs."""
        world, rank = self.group.world_size, self.group.rank
        # One all-reduce carries the dense gradient, every rank's row counts (each rank
        # fills its own slots) and how many ranks still run and trained in this step.
        meta = mine.dense.new_zeros(2 * world + 2)
        meta[2 * rank], meta[2 * rank + 1] = len(mine.rows), len(mine.inputs)
        meta[-2], meta[-1] = float(active), float(len(mine.rows) > 0)
        n_dense = mine.dense.numel()
        flat = torch.cat((mine.dense.reshape(-1), meta))
        dist.all_reduce(flat)
        meta = flat[n_dense:]
        if meta[-2].item() == 0:
            self.finished = True
            return None
        counts = meta[: 2 * world].round().long().view(world, 2).tolist()
        scale = 1.0 / max(meta[-1].item(), 1.0)
        ids, values = self._gather(counts, mine)
        out_rows, out_grads, in_rows, in_grads = [], [], [], []
        width = self.d_out + 1  # an output row's gradient and its bias's
        for (k, n), rank_ids, rank_values in zip(counts, ids, values, strict=True):
            out_rows.append(rank_ids[:k])
            in_rows.append(rank_ids[k : k + n])
            out_grads.append(rank_values[: k * width].view(k, width))
            in_grads.append(rank_values[k * width : k * width + n * self.d_in].view(n, self.d_in))
        unique, row_sums = sum_rows(torch.cat(out_rows), torch.cat(out_grads))
        row_sums.mul_(scale)
        return Combined(
            dense=flat[:n_dense].view_as(mine.dense).mul_(scale),
            rows=unique,
            d_rows=row_sums[:, : self.d_out].contiguous(),
            d_bias=row_sums[:, self.d_out].contiguous(),
            inputs=torch.cat(in_rows),
            d_inputs=torch.cat(in_grads).mul_(scale),
            n_trained=round(meta[-1].item()),
        )

    def idle(self, dense: Tensor, *, active: bool = False) -> Combined | None:
        """Take part in a step without gradients of one's own (``active``: this rank still
        has steps, e.g. one it had to skip)."""
        empty = torch.zeros(0, dtype=torch.int64, device=dense.device)
        nothing = Combined(torch.zeros_like(dense), empty, dense.new_zeros((0, self.d_out)),
                           dense.new_zeros(0), empty, dense.new_zeros((0, self.d_in)))  # fmt: skip
        return self.combine(nothing, active=active)

    def _gather(self, counts: list[list[int]], mine: Combined) -> tuple[list[Tensor], list[Tensor]]:
        """Every rank's row indices and gradients, in one all-gather: the int64 indices
        travel bit for bit inside the float tensor, padded to the longest rank's."""
        per_id = 8 // mine.d_rows.element_size()  # floats per int64 index
        n_ids = max(k + n for k, n in counts)
        n_values = max(k * (self.d_out + 1) + n * self.d_in for k, n in counts)
        ids = torch.zeros(n_ids, dtype=torch.int64, device=mine.rows.device)
        ids[: len(mine.rows) + len(mine.inputs)] = torch.cat((mine.rows, mine.inputs))
        rows = torch.cat((mine.d_rows, mine.d_bias[:, None]), 1).reshape(-1)
        flat = torch.cat((rows, mine.d_inputs.reshape(-1)))
        packed = mine.d_rows.new_zeros(n_ids * per_id + n_values)
        packed[: n_ids * per_id] = ids.view(packed.dtype)
        packed[n_ids * per_id : n_ids * per_id + len(flat)] = flat
        gathered = [torch.empty_like(packed) for _ in range(self.group.world_size)]
        dist.all_gather(gathered, packed)
        return ([g[: n_ids * per_id].view(torch.int64) for g in gathered],
                [g[n_ids * per_id :] for g in gathered])  # fmt: skip
