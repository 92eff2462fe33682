"""The epoch loop over session-parallel mini-batches: timing, logging, progress, NaN guard."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from nextclick.data.batching import Step, n_pairs, session_parallel
from nextclick.data.sessions import SessionData
from nextclick.errors import NextclickError

log = logging.getLogger(__name__)


class TrainingDiverged(NextclickError):
    """The loss became NaN or infinite (usually a too high learning rate)."""


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did: mean loss per (input, target) pair and throughput."""

    epoch: int
    loss: float
    seconds: float
    batches_per_second: float
    events_per_second: float


def train_epochs(
    sessions: SessionData,
    batch_size: int,
    n_epochs: int,
    step: Callable[[Step], torch.Tensor | float],
    *,
    name: str = "train",
    progress: bool = False,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Run ``step`` on every mini-batch of ``n_epochs`` epochs.

    ``step`` returns the mini-batch loss (summed over its rows, divided by the nominal batch
    size) as a float or a detached 0-d tensor; a tensor is accumulated on its device and
    read once per epoch, so a GPU is not synchronised at every step. The reported loss
    weights each mini-batch by its number of rows, as the reference does.
    """
    pairs = n_pairs(sessions)
    history: list[EpochStats] = []
    for epoch in range(1, n_epochs + 1):
        started = time.perf_counter()
        total: torch.Tensor | float = 0.0
        n_batches = 0
        bar = tqdm(total=pairs, desc=f"{name} epoch {epoch}", unit="ev", disable=not progress,
                   leave=False)  # fmt: skip
        for batch in session_parallel(sessions, batch_size):
            total = total + step(batch) * len(batch.inputs)
            n_batches += 1
            bar.update(len(batch.inputs))
        bar.close()
        seconds = time.perf_counter() - started
        loss = float(total) / max(pairs, 1)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"{name}: loss is {loss} in epoch {epoch}; try a lower learning_rate"
            )
        stats = EpochStats(epoch, loss, seconds, n_batches / seconds, pairs / seconds)
        log.info(
            "%s epoch %d: loss %.6f, %.2f s, %.1f mb/s, %.0f events/s",
            name, epoch, loss, seconds, stats.batches_per_second, stats.events_per_second,
        )  # fmt: skip
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history
