"""The Python API: train a model on an event file, evaluate it on another.

The CLI is a thin layer over these functions; they are also what a notebook or a tuning
loop calls.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextclick.data import EventColumns, ItemIndex, encode_sessions, read_events
from nextclick.evaluation import DEFAULT_CUTOFFS, EvalResult, Ties, evaluate
from nextclick.models import Recommender, create_model

if TYPE_CHECKING:
    from nextclick.tuning.space import Space


@dataclass(frozen=True)
class Trained:
    model: Recommender
    train_file: str
    train_seconds: float

    def training_record(self) -> dict[str, Any]:
        """Per-epoch figures of models trained in epochs (empty for the others)."""
        history = self.model.history_
        if not history:
            return {}
        pairs = sum(e.events_per_second * e.seconds for e in history)
        return {
            "train_events_per_second": pairs / sum(e.seconds for e in history),
            "epochs": [
                {"epoch": e.epoch, "loss": e.loss, "seconds": e.seconds,
                 "events_per_second": e.events_per_second, "learning_rate": e.learning_rate}
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
    checkpoint: str | os.PathLike[str] | None = None,
) -> Trained:
    """Fit model ``model`` (a name from ``nextclick.models.MODELS``) on an event file.

    ``params`` are dicts of parameter overrides applied in order (later ones win);
    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (used by GRU4Rec).
    ``checkpoint``: a directory where the training state is saved after each epoch and
    from which the same call resumes (the torch models); ``train_seconds`` is
    then this call's time, the per-epoch figures cover every epoch.
    """
    model_obj = create_model(model, *params).to(device)
    events = read_events(train_file, columns)
    index = ItemIndex.from_items(events["ItemId"].to_numpy())
    sessions = encode_sessions(events, index).sessions
    started = time.perf_counter()
    model_obj.fit(sessions, index, progress=progress,
                  checkpoint=None if checkpoint is None else Path(checkpoint))  # fmt: skip
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


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str
    best_value: float
    best_params: dict[str, Any]  # fixed and searched: what --params takes
    best_params_file: Path
    trials: list[dict[str, Any]]
    importances: dict[str, float]  # fANOVA importance of each searched parameter

    def record(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for trial in self.trials:
            states[trial["state"]] = states.get(trial["state"], 0) + 1
        return {
            "study": self.study_name, "storage": self.storage, "best_value": self.best_value,
            "best_params": self.best_params, "best_params_file": str(self.best_params_file),
            "n_trials": len(self.trials), "trial_states": states, "trials": self.trials,
            "importances": self.importances,
        }  # fmt: skip


def tune(
    model: str,
    train_file: str | os.PathLike[str],
    valid_file: str | os.PathLike[str],
    space: str | os.PathLike[str],
    *,
    metric: str = "mrr@20",
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    best_params_file: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    columns: EventColumns | None = None,
    tune_dir: str | os.PathLike[str] = "runs/tune",
    preset: str | None = None,
) -> TuneResult:
    """Search ``space`` for the parameters of ``model`` that maximise ``metric`` on the
    validation file, training on the training file (see :mod:`nextclick.tuning.study`).

    With ``preset``, every trial starts from that published setting (the space's parameters
    override it; a fixed one that contradicts it is an error) and the first trial takes its
    values; the best parameters written include the preset's, so they stand alone."""
    from nextclick.config import build_config, write_params
    from nextclick.errors import ConfigError, NextclickError
    from nextclick.models import model_class
    from nextclick.tuning.space import load_space
    from nextclick.tuning.study import (
        Objective,
        TuneData,
        open_study,
        run_study,
        sqlite_url,
        trials_table,
    )

    cls = model_class(model)
    parsed = load_space(space)
    if parsed.model is not None and parsed.model != model:
        raise ConfigError(f"--space {space}: is a space for {parsed.model}, not {model}")
    try:
        base = preset_base(model, parsed, preset)
    except ConfigError as exc:
        raise ConfigError(f"--preset {preset}: {exc}") from None
    kind, _, cutoff = metric.partition("@")
    if kind not in ("recall", "mrr", "ndcg") or not cutoff.isdigit() or int(cutoff) < 1:
        raise ConfigError(f"--metric {metric!r}: expected recall@K, mrr@K or ndcg@K")
    if trials is None and timeout is None:
        raise ConfigError("give --trials, --timeout or both (a study needs an end)")
    events = read_events(train_file, columns)
    index = ItemIndex.from_items(events["ItemId"].to_numpy())
    data = TuneData(encode_sessions(events, index).sessions, index,
                    encode_sessions(read_events(valid_file, columns), index))  # fmt: skip
    study_name = study_name or f"{model}-{parsed.name}" + (f"-{preset}" if preset else "")
    tune_dir = Path(tune_dir)
    storage = storage or sqlite_url(tune_dir / f"{study_name}.db")
    # The model's defaults (or preset) first: with a short budget, a known reasonable
    # setting is tried.
    first = parsed.defaults(dataclasses.asdict(build_config(cls.Config, base)))
    study = open_study(storage, study_name, seed, first)
    _same_preset(study, preset)
    deadline = None if timeout is None else time.monotonic() + timeout
    run_study(study, Objective(model, parsed, data, metric, device, deadline, base),
              trials=trials, timeout=timeout)  # fmt: skip
    table = trials_table(study)
    if not any(t["state"] == "COMPLETE" for t in table):
        reasons = sorted({t["fail_reason"] for t in table if t["fail_reason"]})
        raise NextclickError(
            f"study {study_name}: no trial completed"
            + (f"; failures: {'; '.join(reasons[:3])}" if reasons else "")
        )
    best = study.best_trial
    params = {**base, **parsed.values(best.params)}
    epoch = best.user_attrs.get("best_epoch")
    if epoch is not None:  # the epochs are chosen on validation like every other parameter
        params["n_epochs"] = epoch
    path = Path(best_params_file or tune_dir / f"{study_name}.best.toml")
    write_params(path, params, comment=(
        f"nextclick tune: best of study {study_name} ({len(table)} trials)"
        + (f", on top of preset {preset}" if preset else "") + "\n"
        f"{metric} on {Path(valid_file).name} = {best.value:.6f} (trial {best.number}"
        + (f", after epoch {epoch}" if epoch is not None else "")
        + (", where the budget stopped it: still rising"
           if epoch is not None and epoch == best.user_attrs.get("stopped_at_epoch") else "")
        + ")"
    ))  # fmt: skip
    return TuneResult(study_name, storage, float(best.value), params, path, table,
                      _importances(study))  # fmt: skip


def preset_base(model: str, space: Space | None, preset: str | None) -> dict[str, Any]:
    """The parameters of ``model``'s preset (none: {}), checked against ``space``'s fixed
    ones: a space that fixes a different value would run a setting the preset's name hides.
    Errors name no flag: the caller's flag (--preset, --models) prefixes them."""
    from nextclick.config import build_config
    from nextclick.errors import ConfigError
    from nextclick.models import model_class

    if not preset:
        return {}
    cls = model_class(model)
    base = cls.preset(preset)
    if space is None:
        return base
    fixed, given = build_config(cls.Config, space.fixed), build_config(cls.Config, base)
    clash = [key for key in sorted(set(space.fixed) & set(base))
             if getattr(fixed, key) != getattr(given, key)]  # fmt: skip
    if clash:
        def values(config: Any) -> str:
            return " and ".join(f"{key} = {getattr(config, key)!r}" for key in clash)

        raise ConfigError(f"space {space.name} fixes {values(fixed)}, preset {preset} has "
                          f"{values(given)}")  # fmt: skip
    return base


def _same_preset(study: Any, preset: str | None) -> None:
    """A study keeps the preset it was started with: trials on other settings would mix."""
    from nextclick.errors import ConfigError

    started = study.user_attrs.get("preset", "")  # studies from before presets had none
    if not study.trials:
        study.set_user_attr("preset", preset or "")
    elif started != (preset or ""):
        raise ConfigError(f"--preset {preset or '(none)'}: study {study.study_name} was "
                          f"started with preset {started or '(none)'}")  # fmt: skip


def _importances(study: Any) -> dict[str, float]:
    """Parameter importances of a study (empty until it has enough complete trials)."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every trial had the same parameters
        return {}
    return {name: float(value) for name, value in importances.items()}
