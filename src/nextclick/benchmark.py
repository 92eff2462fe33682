"""``nextclick benchmark``: which model is best on my data, and by how much — one command.

For each model: tune it on ``train_tr`` -> ``train_valid`` with its built-in space within
its share of the budget (pruning on per-epoch validation), retrain the best setting on
``train_full``, test it on ``test`` (every next click, the full catalogue, conservative
ties, both unknown-item variants), and write a run record; then the report of all of them.

The budget is split by weight: a model trained in epochs (the neural models) weighs 4, a
model with a search space that trains at once (the kNN models) weighs 1, so 2 h over
GRU4Rec, NARM, V-SKNN and Item-KNN gives 48 min to each neural model and 12 min to each kNN
model. A trial of a model trained in epochs still running when the model's budget is spent
ends after its current epoch, keeping the epochs it has (so it overruns by at most one epoch
and a validation),
and the retraining on ``train_full`` runs the best trial's best validation epoch. A model
without a search space (POP, S-POP, BPR-MF) is trained once with its defaults,
outside the budget. A label ``MODEL:PRESET`` (``gcegnn:tmall``) starts the model from a
published setting: its study's first trial is the preset, every trial and the retraining
build on it. A model's budget counts the seconds of its study's finished trials,
whichever process ran them: started again, the command skips the models it finished
(``OUT/benchmark.json``) and resumes a model's study with what is left of its budget; with an
RDB ``--storage``, processes on several machines share each model's study and budget.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextclick.data.io import atomic_path
from nextclick.errors import ConfigError, DataError, NextclickError
from nextclick.models import model_class
from nextclick.tuning.space import BUILTIN, load_space

log = logging.getLogger(__name__)

SPLITS = ("train_full", "test", "train_tr", "train_valid")
STATE = "benchmark.json"
#: Budget weight of a model trained in epochs against one that trains at once.
EPOCH_WEIGHT, ONCE_WEIGHT = 4, 1
#: Built-in search space of each model; a label may also name a space (gru4rec-bpr-max).
#: A label may also name a space file (``my-narm.toml``, whose ``model`` key names the model).
SPACES = {name: name for name in BUILTIN if "-" not in name} | {"gru4rec": "gru4rec-cross-entropy"}


@dataclass(frozen=True)
class Plan:
    """One model of the benchmark: its label, model, space (None: defaults), budget and
    the preset its settings build on."""

    label: str
    model: str
    space: str | None
    seconds: float
    preset: str | None = None


def parse_budget(text: str) -> float:
    """``2h``, ``90m``, ``45s``, ``1h30m`` or plain seconds -> seconds (> 0)."""
    number = r"(\d+(?:\.\d+)?)"
    parts = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", text)
    if not text.strip() or parts is None:
        raise ConfigError(f"--budget {text!r}: expected a duration such as 2h, 90m, 1h30m or 600")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ConfigError(f"--budget {text!r}: expected a duration > 0")
    return total


def find_splits(data_dir: Path) -> dict[str, Path]:
    """The four split files of ``data_dir``: names ending in train_full, test, train_tr and
    train_valid (before their extensions), as the recipes write them."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory")
    found: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for path in sorted(data_dir.iterdir()):
        stem = path.name.split(".")[0]
        for split in SPLITS:
            if path.is_file() and stem.endswith(split):
                found[split].append(path)
    missing = [split for split, paths in found.items() if not paths]
    if missing:
        raise DataError(
            f"{data_dir}: no {', '.join(missing)} file (expected the four splits of "
            "`nextclick prepare`: train_full, test, train_tr, train_valid)"
        )
    doubled = [split for split, paths in found.items() if len(paths) > 1]
    if doubled:
        names = ", ".join(p.name for p in found[doubled[0]])
        raise DataError(f"{data_dir}: more than one {doubled[0]} file ({names})")
    return {split: paths[0] for split, paths in found.items()}


def plan(labels: list[str], budget: float) -> list[Plan]:
    """Each label's model, space and share of ``budget`` (see the module docstring)."""
    if not labels:
        raise ConfigError("--models: expected a comma-separated list of model names")
    entries = []
    for label in labels:
        if label.endswith(":"):
            raise ConfigError(f"--models {label}: expected MODEL:PRESET, a preset after the colon")
        # A space file's path may hold a colon of its own: only MODEL:PRESET splits.
        given, _, preset = (label, "", "") if label.endswith(".toml") else label.partition(":")
        if given in SPACES:
            model, space = given, SPACES[given]
        elif given in BUILTIN or given.endswith(".toml"):
            space = given
            model = load_space(given).model or ""
            if not model:
                raise ConfigError(f"--models {given}: the space names no model (model = ...)")
            if given.endswith(".toml"):  # a space file's label: its stem
                label = Path(given).stem + (f":{preset}" if preset else "")
        else:
            model, space = given, None
            model_class(model)  # an unknown name fails here, with the list of models
        if preset:
            _check_preset(label, model, space, preset)
        weight = 0 if space is None else (
            EPOCH_WEIGHT if model_class(model).trains_in_epochs else ONCE_WEIGHT
        )  # fmt: skip
        entries.append((label, model, space, weight, preset or None))
    if len({label for label, *_ in entries}) < len(entries):
        raise ConfigError("--models: a model is listed twice")
    total = sum(weight for _, _, _, weight, _ in entries) or 1
    return [Plan(label, model, space, budget * weight / total, preset)
            for label, model, space, weight, preset in entries]  # fmt: skip


def _check_preset(label: str, model: str, space: str | None, preset: str) -> None:
    """Fail at once, naming the label, on a preset the model lacks or its space contradicts."""
    from nextclick.api import preset_base

    try:
        preset_base(model, None if space is None else load_space(space), preset)
    except ConfigError as exc:
        raise ConfigError(f"--models {label}: {exc}") from None


def read_state(out: Path) -> dict[str, Any]:
    import json

    path = out / STATE
    if not path.exists():
        return {"finished": {}}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); remove it to start over") from None


def write_state(out: Path, state: dict[str, Any]) -> None:
    import json

    with atomic_path(out / STATE) as tmp:
        tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")


def spent_seconds(storage: str, study_name: str) -> float:
    """Seconds of the finished trials of a study (0 for a study not made yet), but for
    trials of a dead worker."""
    import optuna

    from nextclick.tuning.study import died_with_worker

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0.0
    # A trial failed by the heartbeat (its worker died: no fail_reason) ends when another
    # worker noticed, maybe days later: its span is not time the study spent.
    return sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False)
        if t.datetime_complete is not None and t.datetime_start is not None
        and not died_with_worker(t)
    )


def run_benchmark(
    data_dir: str | os.PathLike[str],
    labels: list[str],
    budget: float,
    out: str | os.PathLike[str],
    *,
    storage: str | None = None,
    seed: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the state with every result."""
    files = find_splits(Path(data_dir))
    plans = plan(labels, budget)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from nextclick.tuning.study import sqlite_url

    storage = storage or sqlite_url(out / "studies.db")
    state = read_state(out)
    started = time.monotonic()
    ran = False
    for n, item in enumerate(plans, start=1):
        if item.label in state["finished"]:
            log.info("benchmark: %s already done, skipped", item.label)
            continue
        left = sum(p.seconds for p in plans[n - 1 :] if p.label not in state["finished"])
        log.info("benchmark: model %d/%d %s (budget %.1f min; all models left %.1f min, %.1f "
                 "min run so far)", n, len(plans), item.label, item.seconds / 60, left / 60,
                 (time.monotonic() - started) / 60)  # fmt: skip
        try:
            result = _one(item, files, out, storage, seed, device)
        except NextclickError as exc:
            log.warning("benchmark: %s failed: %s", item.label, exc)
            result = {"label": item.label, "model": item.model, "failed": str(exc)}
        state["finished"][item.label] = result
        write_state(out, state)
        publish(out, state, plans)  # an interrupted run leaves a current table and report
        ran = True
    if not ran:  # every model was done already: the table and report of these plans
        publish(out, state, plans)
    return state


def publish(out: Path, state: dict[str, Any], plans: list[Plan]) -> None:
    """``results.md`` and the report of the finished models."""
    from nextclick.report import write_report

    runs = [out / r["run_dir"] for r in state["finished"].values() if "run_dir" in r]
    if runs:
        write_report(runs, out / "report")
    _write_summary(out, state, plans)


def _one(item: Plan, files: dict[str, Path], out: Path, storage: str, seed: int | None,
         device: str) -> dict[str, Any]:  # fmt: skip
    """Tune (if the model has a space), retrain the best on train_full, test; the record."""
    from nextclick.api import evaluate_file, preset_base, result_record, train, tune
    from nextclick.records import config_dict, curves, environment, write_record

    study: dict[str, Any] = {}
    params = preset_base(item.model, None, item.preset)
    if item.space is not None:
        study_name = f"benchmark-{item.label}"
        remaining = item.seconds - spent_seconds(storage, study_name)
        log.info("benchmark: %s: tuning space %s, %.1f min left of its budget", item.label,
                 item.space, max(remaining, 0) / 60)  # fmt: skip
        tuned = tune(
            item.model, files["train_tr"], files["train_valid"], item.space,
            timeout=remaining if remaining > 0 else None,
            trials=None if remaining > 0 else 1, storage=storage, study_name=study_name,
            best_params_file=out / "params" / f"{item.label.replace(':', '@')}.toml",
            seed=seed, device=device, tune_dir=out, preset=item.preset,
        )  # fmt: skip
        params = tuned.best_params  # the preset's included
        study = tuned.record()
    log.info("benchmark: %s: final training on %s", item.label, files["train_full"].name)
    trained = train(item.model, files["train_full"], params, device=device)
    result = evaluate_file(trained.model, files["test"])
    record = result_record(item.label, str(files["train_full"]), files["test"], result,
                           trained.train_seconds)  # fmt: skip
    record.update(trained.training_record())
    config = config_dict(trained.model)
    run_dir = write_record(out / "runs", "benchmark", item.label, {
        **record, "config": config, "model_name": item.model, "curves": curves(result),
        "best_params": params,
        "environment": environment(device, config.get("seed")),
        **({"trials": study["trials"], "importances": study["importances"],
            "metric": "mrr@20"} if study else {}),
    })  # fmt: skip
    return {
        "label": item.label, "model": item.model, "space": item.space, "preset": item.preset,
        "budget_minutes": round(item.seconds / 60, 1), "params": params,
        "trials": study.get("trial_states", {}), "run_dir": run_dir.relative_to(out).as_posix(),
        "metrics": {k: record["metrics"][k] for k in ("recall@20", "mrr@20")},
        "metrics_unknown_as_miss": {k: record["metrics_unknown_as_miss"][k]
                                    for k in ("recall@20", "mrr@20")},
        "n_targets": record["n_targets"], "n_dropped_unknown": record["n_dropped_unknown"],
        "train_seconds": round(trained.train_seconds, 1),
    }  # fmt: skip


def _write_summary(out: Path, state: dict[str, Any], plans: list[Plan]) -> None:
    """``results.md``: one row per model, best first by MRR@20."""
    rows = [state["finished"][p.label] for p in plans if p.label in state["finished"]]
    done = sorted((r for r in rows if "metrics" in r), key=lambda r: -r["metrics"]["mrr@20"])
    lines = [
        "| model | Recall@20 | MRR@20 | Recall@20 / MRR@20, unknown as misses | train s | "
        "budget min | trials | tuned parameters |", "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in done:
        trials = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r["trials"].items())) or "–"
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults"
        if r.get("preset"):  # states written before presets have no such key
            params = f"preset {r['preset']}: {params}"
        miss = r["metrics_unknown_as_miss"]
        lines.append(
            f"| {r['label']} | {r['metrics']['recall@20']:.4f} | {r['metrics']['mrr@20']:.4f} "
            f"| {miss['recall@20']:.4f} / {miss['mrr@20']:.4f} | {r['train_seconds']:.1f} | "
            f"{r['budget_minutes']} | {trials} | {params} |"
        )
    lines += [f"| {r['label']} | failed: {r['failed']} | | | | | | |" for r in rows
              if "failed" in r]  # fmt: skip
    lines += [f"| {p.label} | not run yet | | | | {round(p.seconds / 60, 1)} | | |" for p in plans
              if p.label not in state["finished"]]  # fmt: skip
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
