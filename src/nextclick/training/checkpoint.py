"""A training's state saved after each epoch, so that an interrupted ``fit`` resumes there.

A checkpoint is one file, ``DIR/training.pt``, replaced atomically after every epoch: the
network's and the optimizer's state, the schedule's, the random generators' (NumPy and
torch), and the finished epochs' figures. A fit given the same directory again loads it,
skips the finished epochs and continues with the same shuffles, samples and dropout that an
uninterrupted run would have drawn, so the resumed model is the uninterrupted one. The file
records what it was trained on (the model, its parameters except ``n_epochs``, the device
kind, and a digest of the training sessions): a checkpoint of another training is refused,
never silently continued. ``n_epochs`` may grow between runs, to train further.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick.data.io import atomic_path
from nextclick.data.sessions import SessionData
from nextclick.errors import NextclickError
from nextclick.training import distributed
from nextclick.training.loop import EpochStats
from nextclick.training.sampling import generator_state, set_generator_state

_FILE = "training.pt"
#: Changed whenever what a checkpoint holds changes: older files are then refused.
FORMAT = 1


class CheckpointError(NextclickError):
    """A checkpoint directory holds the state of another training, or cannot be used."""


def fingerprint(model: str, config: Any, train: SessionData, device: torch.device) -> str:
    """What a checkpoint may be resumed for: the model, its parameters but ``n_epochs``, the
    device kind (its generators differ) and the training sessions (items, session bounds,
    catalogue size)."""
    params = {k: v for k, v in dataclasses.asdict(config).items() if k != "n_epochs"}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([FORMAT, model, params, device.type, train.n_items],
                             sort_keys=True, default=str).encode())  # fmt: skip
    for array in (train.items, train.offsets):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).data)
    return digest.hexdigest()


class Checkpoint:
    """The training state file of ``directory`` for one training (``key``: its
    :func:`fingerprint`)."""

    def __init__(self, directory: Path, key: str) -> None:
        if distributed.current() is not None:
            raise CheckpointError("a checkpoint cannot be used under torchrun (each rank "
                                  "has its own random state); train in one process")  # fmt: skip
        self.path = Path(directory) / _FILE
        self.key = key
        try:  # a directory that cannot be written fails now, not after the first epoch
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"{directory}: cannot be a checkpoint directory "
                                  f"({exc.strerror or exc})") from None  # fmt: skip

    def load(self, n_epochs: int, expected: set[str]) -> dict[str, Any] | None:
        """The saved state (its keys: ``expected`` and ``history``), or None when there is
        none yet; ``n_epochs``: the training's, at least the finished epochs'."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            key = state.pop("fingerprint")
            history = [EpochStats(**dict(e, n_epochs=n_epochs)) for e in state["history"]]
        except Exception as exc:  # a truncated or foreign file: a one-line error
            raise CheckpointError(f"{self.path}: not a nextclick training checkpoint "
                                  f"({type(exc).__name__})") from None  # fmt: skip
        if key != self.key or set(state) != expected | {"history"}:
            raise CheckpointError(
                f"{self.path}: the checkpoint of another training (model, parameters, device "
                "or training data differ, or an older nextclick wrote it); remove it or give "
                "another directory"
            )
        if len(history) > n_epochs:
            raise CheckpointError(f"{self.path}: {len(history)} epochs trained, more than "
                                  f"n_epochs = {n_epochs}")  # fmt: skip
        state["history"] = history
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (with its ``history`` of EpochStats) in place of the last one."""
        payload = dict(state, fingerprint=self.key,
                       history=[dataclasses.asdict(e) for e in state["history"]])  # fmt: skip
        try:
            with atomic_path(self.path) as partial:
                torch.save(payload, partial)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot be written "
                                  f"({exc.strerror or exc})") from None  # fmt: skip


def rng_states(rng: np.random.Generator, device: torch.device) -> dict[str, Any]:
    """The random generators a training draws from: ``rng`` and torch's (CPU, and the
    device's when it is a GPU)."""
    states = {"numpy": generator_state(rng), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rngs(states: dict[str, Any], rng: np.random.Generator, device: torch.device) -> None:
    set_generator_state(rng, states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
