"""The epoch loop over any model's mini-batches: timing, logging, progress, NaN guard."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass
from typing import TypeVar

import torch
from tqdm import tqdm

from nextclick.errors import NextclickError
from nextclick.training.memory import reuse_freed_blocks

Batch = TypeVar("Batch", bound=Sized)

log = logging.getLogger(__name__)


class TrainingDiverged(NextclickError):
    """The loss became NaN or infinite (usually a too high learning rate)."""


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did: mean loss per training target and throughput (targets, i.e.
    (prefix, next item) pairs, per second)."""

    epoch: int
    loss: float
    seconds: float
    batches_per_second: float
    events_per_second: float
    learning_rate: float | None = None  # in force during the epoch
    n_epochs: int | None = None  # of the whole run


def train_epochs(
    batches: Callable[[int], Iterable[Batch]],
    n_targets: int,
    n_epochs: int,
    step: Callable[[Batch], torch.Tensor | float],
    *,
    name: str = "train",
    progress: bool = False,
    on_epoch: Callable[[EpochStats], None] | None = None,
    learning_rate: Callable[[], float] | None = None,
    across_ranks: Callable[[list[float]], list[float]] | None = None,
    done: Sequence[EpochStats] = (),
) -> list[EpochStats]:
    """Run ``step`` on every mini-batch of ``n_epochs`` epochs.

    ``batches(epoch)`` gives the mini-batches of an epoch (1-based); ``len(batch)`` is its
    number of training targets, ``n_targets`` their number per epoch. ``step`` returns the
    mini-batch loss (summed over its targets, divided by the nominal batch size) as a float
    or a detached 0-d tensor; a tensor is accumulated on its device and read once per epoch,
    so a GPU is not synchronised at every step. The reported loss weights each mini-batch by
    its number of targets, as the GRU4Rec reference does. ``learning_rate()`` (read at the end
    of each epoch, before ``on_epoch``) is recorded with the epoch. ``across_ranks`` sums
    an epoch's figures over the processes of a distributed run (the stats are then the
    job's, the same on every rank). ``done``: the epochs an interrupted run finished (from
    its checkpoint); they start the history and training goes on with the next.
    """
    reuse_freed_blocks()
    history = list(done)
    for epoch in range(len(history) + 1, n_epochs + 1):
        started = time.perf_counter()
        total: torch.Tensor | float = 0.0
        n_batches = seen = 0
        bar = tqdm(total=n_targets, desc=f"{name} epoch {epoch}", unit="ev",
                   disable=not progress, leave=False)  # fmt: skip
        for batch in batches(epoch):
            total = total + step(batch) * len(batch)
            n_batches += len(batch) > 0  # a distributed rank's idle steps are not batches
            seen += len(batch)
            bar.update(len(batch))
        bar.close()
        seconds = time.perf_counter() - started
        figures = [float(total), seen, n_batches]
        if across_ranks is not None:
            figures = across_ranks(figures)
        total, seen, n_batches = figures[0], int(figures[1]), int(figures[2])
        loss = total / max(seen, 1)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"{name}: loss is {loss} in epoch {epoch}; try a lower learning_rate"
            )
        rate = None if learning_rate is None else learning_rate()
        stats = EpochStats(epoch, loss, seconds, n_batches / seconds, seen / seconds, rate,
                           n_epochs)
        log.info(
            "%s epoch %d: loss %.6f, %.2f s, %.1f mb/s, %.0f events/s",
            name, epoch, loss, seconds, stats.batches_per_second, stats.events_per_second,
        )  # fmt: skip
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history
