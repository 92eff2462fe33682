"""``nextclick benchmark`` end to end on the bundled RSC15 sample: every model tuned (or
trained with its defaults), retrained and tested, the report and summary; an interrupted
benchmark resumes without redoing finished models; bad inputs are one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nextclick.benchmark import parse_budget, plan, publish, read_state, spent_seconds
from nextclick.cli import main

DATA = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"
TINY_NARM = """model = "narm"
[fixed]
n_epochs = 2
embedding_dim = 8
hidden_size = 16
[params.learning_rate]
type = "float"
low = 0.001
high = 0.01
log = true
"""


def test_budget_split_by_weight_and_models_without_space_run_outside_it(tmp_path):
    space = tmp_path / "tiny-narm.toml"
    space.write_text(TINY_NARM)
    plans = plan(["gru4rec", str(space), "vsknn", "itemknn", "pop"], parse_budget("2h"))
    minutes = {p.label: round(p.seconds / 60, 1) for p in plans}
    assert minutes == {"gru4rec": 48.0, "tiny-narm": 48.0, "vsknn": 12.0, "itemknn": 12.0,
                       "pop": 0.0}  # fmt: skip
    assert [p.space for p in plans] == ["gru4rec-cross-entropy", str(space), "vsknn",
                                        "itemknn", None]  # fmt: skip


def test_a_label_model_colon_preset_builds_on_the_published_setting(tmp_path):
    space = tmp_path / "tiny-narm.toml"
    space.write_text(TINY_NARM)
    plans = plan(["gcegnn:tmall", "gru4rec-bpr-max:retailrocket", "gru4rec", str(space)], 3600)
    assert [(p.label, p.model, p.space, p.preset) for p in plans] == [
        ("gcegnn:tmall", "gcegnn", "gcegnn", "tmall"),
        ("gru4rec-bpr-max:retailrocket", "gru4rec", "gru4rec-bpr-max", "retailrocket"),
        ("gru4rec", "gru4rec", "gru4rec-cross-entropy", None),
        ("tiny-narm", "narm", str(space), None),
    ]  # fmt: skip
    assert [p.seconds for p in plans] == [900.0] * 4


def test_benchmark_runs_every_model_reports_them_and_resumes(tmp_path, capsys):
    space = tmp_path / "tiny-narm.toml"
    space.write_text(TINY_NARM)
    out = tmp_path / "bench"
    args = ["-q", "benchmark", str(DATA), "--budget", "20s", "--out", str(out), "--seed", "1"]
    assert main([*args, "--models", f"pop,itemknn,{space}", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    finished = state["finished"]
    assert list(finished) == ["pop", "itemknn", "tiny-narm"]
    assert finished["pop"]["trials"] == {} and finished["pop"]["params"] == {}
    for label in ("itemknn", "tiny-narm"):
        assert finished[label]["trials"].get("COMPLETE", 0) >= 1, label
        assert set(finished[label]["params"]) >= {"learning_rate"} if label == "tiny-narm" else \
            {"n_sims", "lmbd", "alpha"}  # fmt: skip
    assert all(0 < r["metrics"]["recall@20"] < 1 for r in finished.values())
    page = (out / "report" / "index.html").read_text()
    assert all(f"{label} (benchmark)" in page for label in finished)
    summary = (out / "results.md").read_text()
    assert summary.count("\n") == 2 + 3
    # A state with a model still to run (as an interrupted run leaves it) says so.
    publish(out, read_state(out), plan(["pop", "itemknn", str(space), "spop"], 20))
    assert (out / "results.md").read_text() == summary + "| spop | not run yet | | | | 0.0 | | |\n"
    # Interrupted, moved (say, committed and cloned elsewhere) and started again with one
    # model more: the finished ones are not redone, and the report still finds their runs.
    runs_before = {label: r["run_dir"] for label, r in finished.items()}
    moved = tmp_path / "elsewhere" / "bench"
    shutil.move(out, moved)
    args[args.index(str(out))] = str(moved)
    assert main([*args, "--models", f"pop,itemknn,{space},spop", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["finished"]
    assert {label: again[label]["run_dir"] for label in runs_before} == runs_before
    assert list(again) == ["pop", "itemknn", "tiny-narm", "spop"]
    assert len(list((moved / "runs").iterdir())) == 4
    page = (moved / "report" / "index.html").read_text()
    assert all(f"{label} (benchmark)" in page for label in again)


def completed_trials(out: Path, label: str) -> list[tuple]:
    """(number, start time) of the finished trials of a model's benchmark study. Looked at
    only once a model before it has finished (its study has made the database's tables; two
    processes making them at once collide)."""
    if len(read_state(out)["finished"]) < 2:
        return []
    try:
        study = optuna.load_study(study_name=f"benchmark-{label}",
                                  storage=f"sqlite:///{out / 'studies.db'}")  # fmt: skip
    except KeyError:
        return []
    return [(t.number, t.datetime_start)
            for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])]


def test_a_killed_benchmark_resumes_the_study_it_was_in(tmp_path, capsys):
    space = tmp_path / "tiny-narm.toml"
    space.write_text(TINY_NARM)
    out = tmp_path / "bench"
    args = ["-q", "benchmark", str(DATA), "--models", f"pop,itemknn,{space}", "--budget", "25s",
            "--out", str(out), "--seed", "1"]  # fmt: skip
    log = tmp_path / "killed.log"
    with log.open("w") as err:
        killed = subprocess.Popen([sys.executable, "-m", "nextclick", *args],
                                  stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not completed_trials(out, "tiny-narm"):
            assert killed.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert killed.poll() is None, "it finished before it could be killed"
    finally:
        killed.kill()
        killed.wait()
    before = read_state(out)["finished"]
    assert list(before) == ["pop", "itemknn"]  # killed inside NARM's study
    trials_before = completed_trials(out, "tiny-narm")
    assert main([*args, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["finished"]
    assert list(again) == ["pop", "itemknn", "tiny-narm"]
    assert {label: again[label]["run_dir"] for label in before} == {
        label: r["run_dir"] for label, r in before.items()}  # fmt: skip
    assert len(list((out / "runs").iterdir())) == 3
    # The study went on from the trials the killed run had finished, and the result counts
    # them all.
    trials_after = completed_trials(out, "tiny-narm")
    assert trials_after[: len(trials_before)] == trials_before
    assert again["tiny-narm"]["trials"]["COMPLETE"] == len(trials_after)


@pytest.mark.parametrize(("argv", "message"), [
    (["--models", "pop", "--budget", "1h", "EMPTY"],
     "no train_full, test, train_tr, train_valid file"),
    (["--models", "pop,gru5rec", "--budget", "1h"], "unknown model 'gru5rec'"),
    (["--models", "pop", "--budget", "0"], "--budget '0': expected a duration > 0"),
    (["--models", "pop", "--budget", "soon"], "--budget 'soon': expected a duration"),
    (["--models", "pop,pop", "--budget", "1h"], "a model is listed twice"),
    (["--models", "gcegnn:yoochoose", "--budget", "1h"],
     "--models gcegnn:yoochoose: unknown preset 'yoochoose' for gcegnn; its presets: "
     "diginetica, tmall, nowplaying"),
    (["--models", "pop:rsc15", "--budget", "1h"],
     "--models pop:rsc15: unknown preset 'rsc15' for pop; its presets: none"),
    (["--models", "gru4rec:retailrocket", "--budget", "1h"],
     "--models gru4rec:retailrocket: space gru4rec-cross-entropy fixes logq = 1.0 and loss = "
     "'cross-entropy', preset retailrocket has logq = 0.0 and loss = 'bpr-max'"),
    (["--models", "gcegnn:", "--budget", "1h"], "--models gcegnn:: expected MODEL:PRESET"),
])  # fmt: skip
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, argv, message):
    data = str(DATA)
    if argv[-1] == "EMPTY":  # a directory without the splits
        argv = argv[:-1]
        data = str(tmp_path)
    code = main(["benchmark", data, *argv, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_dead_workers_trial_does_not_spend_the_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    done, failed, stale = study.ask(), study.ask(), study.ask()
    time.sleep(0.2)
    study.tell(done, 0.5)
    failed.set_user_attr("fail_reason", "ValueError: refused")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.tell(stale, state=optuna.trial.TrialState.FAIL)  # as the heartbeat check does
    spans = {t.number: (t.datetime_complete - t.datetime_start).total_seconds()
             for t in study.get_trials()}  # fmt: skip
    assert min(spans.values()) >= 0.2
    assert spent_seconds(storage, "s") == pytest.approx(spans[0] + spans[1])
    assert spent_seconds(storage, "none") == 0.0
