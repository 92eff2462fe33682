"""Optuna studies over a parameter space, run in this process.

Each trial trains the model on the training sessions and scores it on the validation
sessions (the validation metric is the trial's value). Models trained in epochs (GRU4Rec)
report the metric after every epoch, so that the median pruner can stop poor trials early;
their value is the best epoch's (a divergence after some epochs keeps those), and that
epoch is the tuned ``n_epochs`` (the epochs are chosen on validation like every other
parameter). With a deadline (``--timeout``), a trial of such a model still running when it
passes ends after its current epoch with the epochs it has, so the study overruns its time
by at most one epoch and one validation (a model trained at once finishes its trial). The
study's first trial takes the model's ``Config`` defaults (or the preset every trial builds
on, ``base``) for the searched parameters whose value lies inside the space.
A trial that fails (a diverging loss, a combination the model refuses, an out-of-memory
error) is recorded as failed with its reason, and the study goes on.

Studies live in an Optuna storage: a SQLite file by default (an interrupted study resumes
where it stopped), or any Optuna RDB URL such as PostgreSQL, where processes on several
machines work on one study at once.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from nextclick.data import ItemIndex, SessionData
from nextclick.data.sessions import Encoded
from nextclick.errors import ConfigError, NextclickError
from nextclick.evaluation import evaluate
from nextclick.models import create_model
from nextclick.training.loop import EpochStats, TrainingDiverged
from nextclick.tuning.space import Space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneData:
    """Training sessions (encoded with their item index) and encoded validation events."""

    train: SessionData
    item_index: ItemIndex
    valid: Encoded


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


class _FirstTrialGiven(optuna.samplers.TPESampler):
    """TPE, except that the first trial takes the ``first`` values given for its parameters.

    The first trial is the lowest-numbered one that a live worker runs: trials before it
    that the heartbeat failed (a worker died, e.g. a benchmark interrupted in its first
    trial) do not count, so a resumed study still tries those values. The storage hands out
    trial numbers atomically, so workers that open a new study at once still try them once
    (an enqueued trial would be enqueued by each of them).
    """

    def __init__(self, first: dict[str, Any], seed: int | None) -> None:
        super().__init__(seed=seed)
        self.first = first

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                           param_name: str, param_distribution: Any) -> Any:  # fmt: skip
        if param_name in self.first and _all_died(study, before=trial.number):
            return self.first[param_name]
        return super().sample_independent(study, trial, param_name, param_distribution)


def died_with_worker(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the heartbeat failed ``trial`` because its worker died (a trial failing by
    itself sets ``fail_reason``)."""
    return trial.state == optuna.trial.TrialState.FAIL and "fail_reason" not in trial.user_attrs


def _all_died(study: optuna.Study, before: int) -> bool:
    """Whether every trial numbered below ``before`` died with its worker."""
    return all(died_with_worker(t) for t in study.get_trials(deepcopy=False) if t.number < before)


def open_study(storage: str, study_name: str, seed: int | None,
               first: dict[str, Any] | None = None) -> optuna.Study:  # fmt: skip
    """Create the study, or join it if it exists (to resume, or as another worker); its
    first trial takes the values of ``first`` (a subset of the searched parameters)."""
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Workers sharing one SQLite file wait for its lock rather than fail at once.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    rdb = None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                # The heartbeat (which marks trials of a dead worker as failed) is
                # "experimental" in Optuna's terms.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(
                    storage, engine_kwargs=engine_kwargs, heartbeat_interval=60, grace_period=180
                )
            break
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or server
            racing = ("already exists", "UNIQUE constraint failed", "duplicate key")
            if any(text in str(exc) for text in racing) and attempt < 4:
                time.sleep(0.5)  # another worker is creating the tables at this moment
                continue
            message = str(exc).splitlines()[0]
            raise ConfigError(f"--storage {storage}: {type(exc).__name__}: {message}") from None
    return optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction="maximize",
        sampler=_FirstTrialGiven(first or {}, seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=True,
    )


class Objective:
    """Train with a trial's parameters, return the validation ``metric``."""

    def __init__(self, model: str, space: Space, data: TuneData, metric: str,
                 device: str = "cpu", deadline: float | None = None,
                 base: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.deadline = deadline  # time.monotonic() after which a trial ends at its epoch
        self.model = model
        self.base = base or {}  # a preset: what the searched parameters override
        self.space = space
        self.data = data
        self.metric = metric
        self.device = device
        self.cutoff = int(metric.split("@")[1])

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        return self.space.values({r.name: r.suggest(trial) for r in self.space.ranges})

    def log_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" {trial.value:.4f}"
        reason = trial.user_attrs.get("fail_reason") or ""
        searched = self.space.values(trial.params)
        params = ", ".join(f"{k}={searched[k]}" for k in trial.params)
        left = ("" if self.deadline is None else
                f"; {max(self.deadline - time.monotonic(), 0) / 60:.1f} min left")  # fmt: skip
        log.info("trial %d %s%s (%s)%s%s", trial.number, trial.state.name.lower(), value, params,
                 f": {reason}" if reason else "", left)  # fmt: skip

    def validate(self, model: Any) -> float:
        result = evaluate(model, self.data.valid, cutoffs=(self.cutoff,))
        return result.metrics[self.metric]

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.params(trial)
        started = time.perf_counter()
        values: list[float] = []
        try:
            model = create_model(self.model, self.base, params).to(self.device)
            try:
                model.fit(self.data.train, self.data.item_index,
                          on_epoch=self._reporter(trial, model, values)
                          if model.trains_in_epochs else None)  # fmt: skip
            except _OutOfTime as stop:
                trial.set_user_attr("stopped_at_epoch", stop.epoch)
                log.info("trial %d: the budget ran out; stopped after epoch %d", trial.number,
                         stop.epoch)  # fmt: skip
            except TrainingDiverged as exc:
                if not values:
                    raise
                # Epochs are chosen on validation: the epochs before the divergence stand.
                trial.set_user_attr("diverged_after_epoch", len(values))
                log.info("trial %d: %s; its first %d epochs stand", trial.number, exc,
                         len(values))  # fmt: skip
            if not values:
                values.append(self.validate(model))
        except optuna.TrialPruned:
            raise
        except (NextclickError, ValueError, RuntimeError, MemoryError) as exc:
            # RuntimeError covers torch's out-of-memory errors on CPU and GPU.
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            trial.set_user_attr("fail_reason", reason)
            log.warning("trial %d failed: %s", trial.number, reason)
            raise
        trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 2))
        finite = [i for i, v in enumerate(values) if math.isfinite(v)] or [0]
        best = max(finite, key=lambda i: (values[i], -i))
        if model.trains_in_epochs:
            trial.set_user_attr("best_epoch", best + 1)
        value = values[best]
        if not math.isfinite(value):
            trial.set_user_attr("fail_reason", f"{self.metric} is {value}")
            raise NextclickError(f"{self.metric} is {value}")
        return value

    def _reporter(self, trial: optuna.Trial, model: Any, values: list[float]) -> Any:
        """The ``on_epoch`` callback: validate, report (the pruner may stop the trial here),
        and end the trial at this epoch once the deadline has passed."""

        def report(stats: EpochStats) -> None:
            value = self.validate(model)
            values.append(value)
            trial.report(value, stats.epoch)
            trial.set_user_attr("epoch_losses", [*_losses(trial), stats.loss])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {stats.epoch}: {value:.4f}")
            last = stats.n_epochs is not None and stats.epoch >= stats.n_epochs
            if self.deadline is not None and not last and time.monotonic() >= self.deadline:
                raise _OutOfTime(stats.epoch)

        return report


class _OutOfTime(Exception):
    """Raised from ``on_epoch`` to end a trial at the deadline; it keeps its epochs so far."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"out of time after epoch {epoch}")
        self.epoch = epoch


def _losses(trial: optuna.Trial) -> list[float]:
    return list(trial.user_attrs.get("epoch_losses", []))


def run_study(
    study: optuna.Study,
    objective: Objective,
    *,
    trials: int | None,
    timeout: float | None,
) -> None:
    """Run trials until the study holds ``trials`` finished ones or ``timeout`` seconds pass
    (whichever comes first); several processes may run this on one study."""
    callbacks = []
    if trials is not None:
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                    optuna.trial.TrialState.FAIL)  # fmt: skip
        callbacks.append(optuna.study.MaxTrialsCallback(trials, states=finished))
        already = len(study.get_trials(deepcopy=False, states=finished))
        if already >= trials:
            return
    callbacks.append(objective.log_trial)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        objective, timeout=timeout, callbacks=callbacks, gc_after_trial=True,
        catch=(NextclickError, ValueError, RuntimeError, MemoryError),
    )  # fmt: skip


def trials_table(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial: number, state, value, parameters, seconds, failure reason, and for a
    model trained in epochs its best epoch and the epoch the deadline stopped it at."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None
        )  # fmt: skip
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value,
            "params": t.params, "seconds": seconds,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "fail_reason": t.user_attrs.get("fail_reason"),
            "best_epoch": t.user_attrs.get("best_epoch"),
            "stopped_at_epoch": t.user_attrs.get("stopped_at_epoch"),
            "diverged_after_epoch": t.user_attrs.get("diverged_after_epoch"),
        })  # fmt: skip
    return rows
