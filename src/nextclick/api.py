"""The Python API: train a model on an event file, evaluate it on another.

The CLI is a thin layer over these functions; they are also what a notebook or a tuning
loop calls.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextclick.data import EventColumns, ItemIndex, encode_sessions, read_events
from nextclick.evaluation import DEFAULT_CUTOFFS, EvalResult, Ties, evaluate
from nextclick.models import Recommender, create_model


@dataclass(frozen=True)
class Trained:
    model: Recommender
    train_file: str
    train_seconds: float

    def training_record(self) -> dict[str, Any]:
        """Per-epoch figures of models trained in epochs (empty for the others)."""
        history = getattr(self.model, "history_", [])
        if not history:
            return {}
        pairs = sum(e.events_per_second * e.seconds for e in history)
        return {
            "train_events_per_second": pairs / sum(e.seconds for e in history),
            "epochs": [
                {"epoch": e.epoch, "loss": e.loss, "seconds": e.seconds,
                 "events_per_second": e.events_per_second}
                for e in history
            ],
        }  # fmt: skip


def train(
    model: str,
    train_file: str | os.PathLike[str],
    *params: dict[str, Any],
    columns: EventColumns | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> Trained:
    """Fit model ``model`` (a name from ``nextclick.models.MODELS``) on an event file.

    ``params`` are dicts of parameter overrides applied in order (later ones win);
    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (used by GRU4Rec).
    """
    model_obj = create_model(model, *params).to(device)
    events = read_events(train_file, columns)
    index = ItemIndex.from_items(events["ItemId"].to_numpy())
    sessions = encode_sessions(events, index).sessions
    started = time.perf_counter()
    model_obj.fit(sessions, index, progress=progress)
    return Trained(model_obj, str(train_file), time.perf_counter() - started)


def evaluate_file(
    model: Recommender,
    test_file: str | os.PathLike[str],
    *,
    columns: EventColumns | None = None,
    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS,
    ties: Ties = "conservative",
    exclude_seen: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Next-item evaluation of ``model`` on the sessions of an event file."""
    events = read_events(test_file, columns)
    return evaluate(
        model, events, cutoffs=cutoffs, ties=ties, exclude_seen=exclude_seen, progress=progress
    )


def result_record(
    model: str,
    train_file: str | None,
    test_file: str | os.PathLike[str],
    result: EvalResult,
    train_seconds: float | None,
) -> dict[str, Any]:
    """The JSON object that ``--json`` prints for one evaluated model."""
    return {
        "model": model,
        "train_file": train_file,
        "test_file": str(Path(test_file)),
        "ties": result.ties,
        "n_targets": result.n_targets,
        "n_dropped_unknown": result.n_dropped_unknown,
        "metrics": result.metrics,
        "metrics_unknown_as_miss": result.metrics_unknown_as_miss,
        "train_seconds": train_seconds,
        "eval_seconds": result.seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
