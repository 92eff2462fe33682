"""A training's state saved after each epoch, so that an interrupted ``fit`` resumes there.

A checkpoint is one file, ``DIR/training.pt``, replaced atomically after every epoch: the
network's and the optimizer's state, the schedule's, the random generators' (NumPy and
torch), and the finished epochs' figures. A fit given the same directory again loads it,
skips the finished epochs and continues with the same shuffles, samples and dropout that an
uninterrupted run would have drawn, so the resumed model is the uninterrupted one. The file
records what it was trained on (the model, its parameters except ``n_epochs``, and a digest
of the training sessions): a checkpoint of another training is refused, never silently
continued. ``n_epochs`` may grow between runs, to train further.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick.data.sessions import SessionData
from nextclick.errors import NextclickError
from nextclick.training.loop import EpochStats

_FILE = "training.pt"


class CheckpointError(NextclickError):
    """A checkpoint directory holds the state of another training, or cannot be read."""


def fingerprint(model: str, config: Any, train: SessionData) -> str:
    """What a checkpoint may be resumed for: the model, its parameters but ``n_epochs``,
    and the training sessions (items, session bounds and catalogue size)."""
    params = {k: v for k, v in dataclasses.asdict(config).items() if k != "n_epochs"}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([model, params, train.n_items], sort_keys=True,
                             default=str).encode())  # fmt: skip
    for array in (train.items, train.offsets):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).data)
    return digest.hexdigest()


class Checkpoint:
    """The training state file of directory ``directory`` for one training (``key``: its
    :func:`fingerprint`)."""

    def __init__(self, directory: Path, key: str) -> None:
        self.path = Path(directory) / _FILE
        self.key = key

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none yet."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            key = state["fingerprint"]
        except Exception as exc:  # a truncated or foreign file: a one-line error
            raise CheckpointError(f"{self.path}: not a nextclick training checkpoint "
                                  f"({type(exc).__name__})") from None  # fmt: skip
        if key != self.key:
            raise CheckpointError(
                f"{self.path}: the checkpoint of another training (model, parameters or "
                "training data differ); remove it or give another directory"
            )
        state["history"] = [EpochStats(**e) for e in state["history"]]
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (with its ``history`` of EpochStats) in place of the last one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(state, fingerprint=self.key,
                       history=[dataclasses.asdict(e) for e in state["history"]])  # fmt: skip
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(payload, partial)
        os.replace(partial, self.path)


Generator = np.random.Generator | torch.Generator


def generator_state(rng: Generator) -> Any:
    """Where ``rng`` (NumPy or torch) is in its stream."""
    return rng.get_state() if isinstance(rng, torch.Generator) else rng.bit_generator.state


def set_generator_state(rng: Generator, state: Any) -> None:
    if isinstance(rng, torch.Generator):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state


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
