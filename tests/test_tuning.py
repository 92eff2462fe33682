"""Tuning with Optuna (spaces, studies, failures, workers sharing a study, resuming), run
records, and the report page (checked in headless Chromium)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nextclick.api import preset_base, tune
from nextclick.cli import main
from nextclick.config import build_config, read_toml
from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.errors import ConfigError
from nextclick.models import model_class
from nextclick.tuning import study as study_module
from nextclick.tuning.space import BUILTIN, load_space, parse_space
from nextclick.tuning.study import Objective, TuneData, open_study, run_study, trials_table

DATA = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"
TRAIN_TR = DATA / "yoochoose-clicks-100k_train_tr.txt.gz"
VALID = DATA / "yoochoose-clicks-100k_train_valid.txt.gz"
TRAIN_FULL = DATA / "yoochoose-clicks-100k_train_full.txt.gz"
TEST = DATA / "yoochoose-clicks-100k_test.txt.gz"


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_spaces_load_and_fit_their_model(name):
    space = load_space(name)
    assert space.model is not None
    config_cls = model_class(space.model).Config
    # The lowest value of every range (and the first choice) makes a valid config.
    lows = {r.name: r.choices[0] if r.choices else r.low for r in space.ranges}
    build_config(config_cls, space.fixed, lows)


def test_published_gru4rec_ranges():
    space = load_space("gru4rec-bpr-max")
    ranges = {r.name: (r.low, r.high, r.step, r.choices) for r in space.ranges}
    assert ranges["layers"] == (64, 512, 32, ())
    assert ranges["batch_size"] == (32, 256, 16, ())
    assert ranges["learning_rate"] == (0.01, 0.25, 0.005, ())
    assert ranges["bpreg"] == (0.0, 2.0, 0.05, ())
    assert ranges["elu_param"][3] == (0.0, 0.5, 1.0)
    assert space.fixed["loss"] == "bpr-max" and space.fixed["n_epochs"] == 10
    assert "bpreg" not in {r.name for r in load_space("gru4rec-cross-entropy").ranges}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[params.a]\ntype = 'int'\nlow = 5\nhigh = 1", "low (5) is above high (1)"),
        ("[params.a]\ntype = 'cube'", "type must be int, float or categorical"),
        ("[params.a]\ntype = 'float'\nlow = 0.1\nhigh = 1.0\nlog = true\nstep = 0.1",
         "step must be a positive float (and not with log)"),
        ("[params.a]\ntype = 'categorical'\nchoices = []", "choices must be a non-empty list"),
        ("[params.a]\ntype = 'int'\nlow = 1.5\nhigh = 3", "low and high must be ints"),
        ("[params.a]\ntype = 'int'\nlow = 1\nhigh = 3\nchoices = [1]",
         "unexpected key 'choices' for type int"),
        ("[fixed]\na = 1\n[params.a]\ntype = 'int'\nlow = 1\nhigh = 3", "'a' is both fixed"),
        ("[fixed]\na = 1", "expected a [fixed] table and [params.NAME] tables"),
        ("colour = 'red'\n[params.a]\ntype = 'int'\nlow = 1\nhigh = 3",
         "unknown table or key 'colour'"),
        ("[params.a\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_spaces_are_one_line_errors(text, message):
    with pytest.raises(ConfigError, match=r"space\.toml") as info:
        parse_space(text, "space.toml")
    assert message in str(info.value)


def test_float_steps_come_out_clean():
    space = parse_space("[params.x]\ntype = 'float'\nlow = 0.0\nhigh = 1.0\nstep = 0.05", "s")
    assert space.ranges[0].clean(0.7000000000000001) == 0.7
    assert space.values({"x": 0.15000000000000002}) == {"x": 0.15}


def _states(storage: str, study: str) -> list[tuple[int, str]]:
    loaded = optuna.load_study(study_name=study, storage=storage)
    return [(t.number, t.state.name) for t in loaded.get_trials(deepcopy=False)]


def test_study_writes_the_best_parameters_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = tune("itemknn", TRAIN_TR, VALID, "itemknn", trials=3, storage=storage, seed=3,
                 tune_dir=tmp_path)  # fmt: skip
    assert [t["state"] for t in first.trials] == ["COMPLETE"] * 3
    assert first.best_value == max(t["value"] for t in first.trials)
    # The TOML file is what --params takes, and gives the best trial's parameters.
    params = read_toml(first.best_params_file)
    best = max(first.trials, key=lambda t: t["value"])
    assert params == best["params"]
    build_config(model_class("itemknn").Config, params)
    # Same storage and study: it resumes (3 more trials to 6), it does not start again.
    second = tune("itemknn", TRAIN_TR, VALID, "itemknn", trials=6, storage=storage, seed=4,
                  tune_dir=tmp_path)  # fmt: skip
    assert [t["number"] for t in second.trials] == list(range(6))
    assert second.best_value >= first.best_value


def test_failing_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path):
    # alpha above 1 is refused by Item-KNN's config: those trials fail, the others complete.
    space = tmp_path / "space.toml"
    space.write_text("model = 'itemknn'\n[params.alpha]\ntype = 'float'\nlow = 0.5\n"
                     "high = 1.5\nstep = 0.5\n")  # fmt: skip
    result = tune("itemknn", TRAIN_TR, VALID, space, trials=6, seed=0, tune_dir=tmp_path)
    failed = [t for t in result.trials if t["state"] == "FAIL"]
    assert len(result.trials) == 6
    assert failed and all(t["params"]["alpha"] == 1.5 for t in failed)
    assert all("parameter 'alpha'" in t["fail_reason"] for t in failed)
    assert all(t["params"]["alpha"] <= 1.0 for t in result.trials if t["state"] == "COMPLETE")


@pytest.mark.parametrize(("model", "fixed"), [
    ("gru4rec", "layers = 16\nn_sample = 64\n"),
    ("narm", "embedding_dim = 8\nhidden_size = 16\n"),
])  # fmt: skip
def test_neural_trials_report_the_validation_metric_each_epoch(tmp_path, model, fixed):
    space = tmp_path / "space.toml"
    space.write_text(
        f"model = '{model}'\n[fixed]\nn_epochs = 3\n{fixed}"
        "[params.learning_rate]\ntype = 'float'\nlow = 0.001\nhigh = 0.1\nlog = true\n"
    )  # fmt: skip
    result = tune(model, TRAIN_TR, VALID, space, trials=2, seed=0, tune_dir=tmp_path)
    # The first trial is the model's published learning rate (inside the range).
    default = model_class(model).Config().learning_rate
    assert result.trials[0]["params"] == {"learning_rate": default}
    for trial in result.trials:
        assert trial["state"] == "COMPLETE"
        curve = [trial["intermediate"][str(e)] for e in (1, 2, 3)]
        # The trial's value is its best epoch's validation metric; that epoch is recorded.
        assert trial["value"] == max(curve)
        assert trial["best_epoch"] == curve.index(max(curve)) + 1
        assert trial["stopped_at_epoch"] is None
    # The tuned n_epochs is the best trial's best epoch, not the fixed 3.
    best = max(result.trials, key=lambda t: t["value"])
    assert read_toml(result.best_params_file) == {
        **load_space(space).fixed, "learning_rate": best["params"]["learning_rate"],
        "n_epochs": best["best_epoch"],
    }  # fmt: skip


def _tune_data() -> TuneData:
    index = ItemIndex.from_items(read_events(TRAIN_TR)["ItemId"].to_numpy())
    return TuneData(encode_sessions(read_events(TRAIN_TR), index).sessions, index,
                    encode_sessions(read_events(VALID), index))  # fmt: skip


def test_a_trial_running_at_the_deadline_ends_after_its_epoch_with_what_it_has(tmp_path):
    space = parse_space("[fixed]\nn_epochs = 4\nlayers = 16\nn_sample = 64\n"
                        "[params.learning_rate]\ntype = 'float'\nlow = 0.01\nhigh = 0.1\n",
                        "s.toml")  # fmt: skip
    data = _tune_data()
    study = open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", seed=0)
    objective = Objective("gru4rec", space, data, "mrr@20", deadline=time.monotonic() - 1)
    run_study(study, objective, trials=1, timeout=None)
    [trial] = trials_table(study)
    assert trial["state"] == "COMPLETE"
    assert trial["stopped_at_epoch"] == 1 and list(trial["intermediate"]) == ["1"]
    assert trial["value"] == trial["intermediate"]["1"] and trial["best_epoch"] == 1
    # A one-epoch trial past the deadline ran to its end: it was not stopped.
    one = parse_space("[fixed]\nn_epochs = 1\nlayers = 16\nn_sample = 64\n[params.momentum]\n"
                      "type = 'categorical'\nchoices = [0.0]\n", "one.toml")
    run_study(open_study(f"sqlite:///{tmp_path / 'one.db'}", "one", seed=0),
              Objective("gru4rec", one, data, "mrr@20", deadline=time.monotonic() - 1),
              trials=1, timeout=None)  # fmt: skip
    [trial] = trials_table(optuna.load_study(study_name="one",
                                             storage=f"sqlite:///{tmp_path / 'one.db'}"))
    assert trial["state"] == "COMPLETE" and trial["stopped_at_epoch"] is None


def test_the_first_trial_is_the_defaults_that_lie_inside_the_space():
    space = parse_space(
        "[params.k]\ntype = 'int'\nlow = 50\nhigh = 500\nstep = 50\n"
        "[params.alpha]\ntype = 'float'\nlow = 0.1\nhigh = 0.9\nstep = 0.2\n"
        "[params.mode]\ntype = 'categorical'\nchoices = [1, 'b']\n"
        "[params.lr]\ntype = 'float'\nlow = 0.001\nhigh = 0.1\nlog = true\n", "s.toml"
    )  # fmt: skip
    # k=100 is on the grid, alpha=0.4 is not, True is not the choice 1, lr lies inside.
    assert space.defaults({"k": 100, "alpha": 0.4, "mode": True, "lr": 0.01, "other": 3}) == {
        "k": 100, "lr": 0.01,
    }  # fmt: skip
    assert space.defaults({"k": 525, "alpha": 0.5, "mode": "b", "lr": 0.2}) == {
        "alpha": 0.5, "mode": "b",
    }  # fmt: skip


def test_a_study_on_a_preset_starts_from_it_and_its_trials_build_on_it(tmp_path, monkeypatch):
    # The space searches two of the three values STAMP's diginetica preset sets.
    space = tmp_path / "stamp.toml"
    space.write_text('model = "stamp"\n[fixed]\nn_epochs = 1\nembedding_dim = 8\n'
                     '[params.learning_rate]\ntype = "float"\nlow = 0.001\nhigh = 0.01\n'
                     '[params.grad_clip]\ntype = "float"\nlow = 50.0\nhigh = 200.0\n')
    preset = model_class("stamp").preset("diginetica")
    assert preset == {"learning_rate": 0.005, "emb_max_norm": 1.5, "grad_clip": 110.0}
    built = []  # the config of every model the study trains (a spy: it still builds them)
    real = study_module.create_model
    monkeypatch.setattr(study_module, "create_model",
                        lambda *a: built.append(real(*a).config) or real(*a))
    result = tune("stamp", TRAIN_TR, VALID, space, trials=2, seed=0, tune_dir=tmp_path,
                  preset="diginetica")  # fmt: skip
    assert result.study_name == "stamp-stamp-diginetica"
    assert result.trials[0]["params"] == {"learning_rate": 0.005, "grad_clip": 110.0}
    assert result.trials[1]["params"] != result.trials[0]["params"]
    # Every trial: the preset's unsearched input norm, the space's fixed values.
    assert [(c.emb_max_norm, c.embedding_dim, c.n_epochs) for c in built] == [(1.5, 8, 1)] * 2
    assert (built[0].learning_rate, built[0].grad_clip) == (0.005, 110.0)
    # The best parameters stand alone: the preset's values are in them.
    written = read_toml(result.best_params_file)
    assert written == result.best_params and written["emb_max_norm"] == 1.5
    assert "on top of preset diginetica" in result.best_params_file.read_text()
    # The study keeps its preset: resuming it without one (or another) is refused.
    with pytest.raises(ConfigError, match=r"--preset \(none\): study stamp-stamp-diginetica "
                                          r"was started with preset diginetica"):  # fmt: skip
        tune("stamp", TRAIN_TR, VALID, space, trials=3, study_name="stamp-stamp-diginetica",
             tune_dir=tmp_path)
    with pytest.raises(ConfigError, match="--preset x: unknown preset 'x' for stamp"):
        tune("stamp", TRAIN_TR, VALID, space, trials=1, tune_dir=tmp_path, preset="x")


def test_a_preset_meets_its_space():
    # A one-layer size, (224,) in the Config, is the value the layers range searches.
    space = load_space("gru4rec-bpr-max")
    config = build_config(model_class("gru4rec").Config, model_class("gru4rec").preset(
        "retailrocket"))  # fmt: skip
    assert space.defaults(dataclasses.asdict(config)) == {
        "layers": 224, "batch_size": 80, "learning_rate": 0.05, "dropout_p_embed": 0.5,
        "dropout_p_hidden": 0.05, "momentum": 0.4, "sample_alpha": 0.4, "bpreg": 1.95,
        "elu_param": 0.5,
    }  # fmt: skip
    # A space that fixes what the preset sets otherwise would run a setting the name hides.
    with pytest.raises(ConfigError, match=re.escape(
        "space gru4rec-cross-entropy fixes logq = 1.0 and loss = 'cross-entropy', preset "
        "retailrocket has logq = 0.0 and loss = 'bpr-max'")):  # fmt: skip
        preset_base("gru4rec", load_space("gru4rec-cross-entropy"), "retailrocket")
    assert preset_base("gcegnn", load_space("gcegnn"), "tmall") == {
        "n_iter": 1, "dropout_gcn": 0.6, "dropout_local": 0.5}  # fmt: skip
    assert preset_base("gcegnn", load_space("gcegnn"), None) == {}


def test_the_defaults_trial_is_retried_after_its_worker_died_but_not_after_it_ran(tmp_path):
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    first = {"k": 100}
    study = open_study(storage, "s", seed=1, first=first)
    dist = {"k": optuna.distributions.IntDistribution(50, 500, step=50)}
    # Trial 0 was given the defaults, then its worker died: the heartbeat fails it with no
    # fail_reason. The resumed study's next trial is the defaults again.
    dead = study.ask(dist)
    assert dead.params == first
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    study = open_study(storage, "s", seed=1, first=first)
    retried = study.ask(dist)
    assert retried.number == 1 and retried.params == first
    # Once a trial has run (a live worker's trial, whatever its end, or one still running on
    # another worker), TPE samples: with seed 1 its first draw is not k=100.
    failed = study.ask(dist)
    assert failed.params != first
    failed.set_user_attr("fail_reason", "loss diverged")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.tell(retried, 0.5)
    assert study.ask(dist).params != first


def test_two_worker_processes_share_one_study_without_duplicates_or_losses(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "nextclick.cli", "-q", "tune", "--model", "itemknn",
               "--train", str(TRAIN_TR), "--valid", str(VALID), "--space", "itemknn",
               "--trials", "10", "--storage", storage, "--study", "shared",
               "--run-dir", str(tmp_path / "runs"), "--best-params",
               str(tmp_path / "best.toml")]  # fmt: skip
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]  # fmt: skip
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    trials = _states(storage, "shared")
    numbers = [n for n, _ in trials]
    assert numbers == list(range(len(trials)))  # every trial once, none missing
    assert 10 <= len(trials) <= 11  # a worker may start one more as the other ends the 10th
    assert {state for _, state in trials} == {"COMPLETE"}  # none lost or left running


def test_tune_cli_final_run_writes_a_record_and_mistakes_are_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["-q", "tune", "--model", "itemknn", "--train", str(TRAIN_TR), "--valid",
                 str(VALID), "--space", "itemknn", "--trials", "2", "--seed", "1",
                 "--storage", f"sqlite:///{tmp_path / 's.db'}", "--run-dir", str(runs),
                 "--best-params", str(tmp_path / "best.toml"), "--final-train",
                 str(TRAIN_FULL), "--final-test", str(TEST), "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_trials"] == 2 and set(out["final"]["metrics"]) >= {"recall@20", "mrr@20"}
    (record_dir,) = runs.iterdir()
    record = json.loads((record_dir / "record.json").read_text())
    assert record["kind"] == "tune" and record["final"]["metrics"] == out["final"]["metrics"]
    assert record["environment"]["torch"] and len(record["final"]["curves"]["recall"]) == 20
    # Recall@20 of the curve is the metric itself.
    assert record["final"]["curves"]["recall"][19] == pytest.approx(
        record["final"]["metrics"]["recall@20"]
    )
    for argv, message in [
        (["--metric", "precision@20"], "--metric 'precision@20': expected recall@K, mrr@K"),
        (["--space", "sknn"], "is a space for sknn, not itemknn"),
        (["--final-train", str(TRAIN_FULL)], "--final-train and --final-test go together"),
        (["--space", str(tmp_path / "nope.toml")], "no such file (built-in spaces:"),
    ]:
        base = ["tune", "--model", "itemknn", "--train", str(TRAIN_TR), "--valid", str(VALID),
                "--space", "itemknn", "--trials", "1", "--run-dir", str(runs)]  # fmt: skip
        for i, arg in enumerate(argv[::2]):
            if arg in base:
                base[base.index(arg) + 1] = argv[2 * i + 1]
            else:
                base += argv[2 * i : 2 * i + 2]
        assert main(base) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_report_page_loads_in_chromium_with_every_image(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    common = ["--train", str(TRAIN_FULL), "--test", str(TEST), "--run-dir", str(runs)]
    assert main(["-q", "run", "--model", "vsknn", *common]) == 0
    assert main(["-q", "run", "--model", "gru4rec", "--param", "layers=16", "--param",
                 "n_epochs=2", "--param", "n_sample=64", *common]) == 0  # fmt: skip
    assert main(["-q", "tune", "--model", "itemknn", "--train", str(TRAIN_TR), "--valid",
                 str(VALID), "--space", "itemknn", "--trials", "4", "--seed", "2",
                 "--storage", f"sqlite:///{tmp_path / 's.db'}", "--run-dir", str(runs),
                 "--best-params", str(tmp_path / "b.toml"), "--final-train",
                 str(TRAIN_FULL), "--final-test", str(TEST)]) == 0  # fmt: skip
    out = tmp_path / "report"
    assert main(["report", *sorted(str(p) for p in runs.iterdir()), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert markdown.count("\n| ") == 6  # header and three runs; header and one study
    assert {"curves_recall.png", "curves_mrr.png", "loss.png", "time.png", "popularity.png",
            "coverage.png", "history0.png", "importance0.png"} <= {p.name for p in out.iterdir()}
    # The directory that holds the records reads as all of them.
    whole = tmp_path / "whole"
    assert main(["report", str(runs), "--out", str(whole)]) == 0
    assert (whole / "report.md").read_text() == markdown
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run `bash scripts/test-services.sh`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "index.html").as_uri())
            images = page.locator("img")
            assert images.count() == 8
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            widths = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth)")
            assert all(w > 0 for w in widths)
            assert page.locator("table.metrics tbody tr").count() == 3
            assert page.locator("table.studies tbody tr").count() == 1
            assert errors == []
        finally:
            browser.close()


def _write_record(directory: Path, record: dict) -> Path:
    directory.mkdir(parents=True)
    (directory / "record.json").write_text(json.dumps(record))
    return directory


def test_report_tables_from_hand_written_records(tmp_path):
    curves = {"k": [1], "recall": [0.1], "mrr": [0.1]}
    run = _write_record(tmp_path / "a", {
        "kind": "run", "label": "pop", "train_seconds": 1.25, "curves": curves,
        "metrics": {"recall@20": 0.5, "mrr@20": 0.25, "coverage@20": 0.1,
                    "popularity@20": 0.9},
    })  # fmt: skip
    trials = [
        {"number": 0, "state": "COMPLETE", "value": 0.3, "params": {"lr": 0.1},
         "seconds": 60.0, "intermediate": {"1": 0.2, "2": 0.3}},
        {"number": 1, "state": "PRUNED", "value": None, "params": {"lr": 0.9},
         "seconds": 30.0, "intermediate": {"1": 0.1}},
        {"number": 2, "state": "COMPLETE", "value": 0.35, "params": {"lr": 0.15000000000000002},
         "seconds": 90.0, "intermediate": {"1": 0.25, "2": 0.35}, "best_epoch": 2},
        {"number": 3, "state": "FAIL", "value": None, "params": {"lr": 2.0}, "seconds": None,
         "intermediate": {}, "fail_reason": "loss diverged"},
    ]  # fmt: skip
    study = _write_record(tmp_path / "b", {
        "kind": "tune", "label": "s", "metric": "mrr@20", "best_value": 0.35,
        "best_params": {"n_epochs": 2, "lr": 0.15}, "trials": trials, "importances": {"lr": 1.0},
        "final": {"metrics": {"recall@20": 0.75, "mrr@20": 0.125}, "train_seconds": 2.0,
                  "curves": curves},
    })  # fmt: skip
    out = tmp_path / "report"
    assert main(["report", str(run), str(study), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text().splitlines()
    rows = [line for line in markdown if line.startswith("| ")]
    # The best of each accuracy column is in bold; coverage and popularity are not ranked.
    assert rows[1] == (
        "| pop (run) | – | – | – | 0.5000 | – | – | – | **0.2500** | 0.1000 | 0.9000 | 1.2 |"
    )
    assert rows[2] == "| s (tune) | – | – | – | **0.7500** | – | – | – | 0.1250 | – | – | 2.0 |"
    # 180 s of trials; the best is trial 2, its searched parameter as the study wrote it and
    # the epochs it chose on validation.
    assert rows[4] == (
        "| s (tune) | 4 | 2 | 1 | 1 | 3.0 | mrr@20 0.3500 (trial 2) | n_epochs=2, lr=0.15 |"
    )
    # No per-epoch losses in these records, so no loss plot.
    assert {p.name for p in out.glob("*.png")} == {
        "curves_recall.png", "curves_mrr.png", "time.png", "validation.png", "popularity.png",
        "coverage.png", "history0.png", "importance0.png",
    }  # fmt: skip
    page = (out / "index.html").read_text()
    assert page.count("<strong>") == 2 and '<table class="studies">' in page

    # One run alone, a NaN and a column where every run ties: nothing to mark as best.
    lone = _write_record(tmp_path / "c", {
        "kind": "run", "label": "nan", "metrics": {"recall@20": float("nan"), "mrr@20": 0.25},
    })  # fmt: skip
    for dirs, expected in [([run], "| pop (run) | – | – | – | 0.5000 | – | – | – | 0.2500 |"),
                           ([run, lone], "| nan (run) | – | – | – | nan | – | – | – | 0.2500 |")]:
        assert main(["report", *map(str, dirs), "--out", str(out)]) == 0
        text = (out / "report.md").read_text()
        assert "**" not in text and expected in text
    # A study whose trials were all pruned or failed, one still running elsewhere.
    stopped = _write_record(tmp_path / "d", {
        "kind": "tune", "label": "t", "trials": [trials[1], trials[3],
        {"number": 4, "state": "RUNNING", "value": None, "params": {}, "seconds": None,
         "intermediate": {}}],
    })  # fmt: skip
    assert main(["report", str(stopped), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| t (tune) | 3 (1 running) | 0 | 1 | 1 | 0.5 | – | – |" in text
    assert "| run |" not in text  # no final test: no metrics table
    assert (out / "history0.png").exists()  # the pruned trial is plotted


def test_report_gives_each_of_twelve_runs_its_own_line_style():
    from nextclick.report import Run, _styles

    runs = [Run.from_record({"kind": "run", "label": f"m{i}"}) for i in range(12)]
    style = _styles(runs)
    pairs = [(style[id(r)]["color"], style[id(r)]["linestyle"]) for r in runs]
    # A benchmark of every model has twelve runs; matplotlib's cycle has ten colours.
    assert len(set(pairs)) == 12
    assert pairs[0] == ("C0", "-") and pairs[9] == ("C9", "-") and pairs[10] == ("C0", "--")


def test_run_records_are_named_by_label_or_model_and_preset(tmp_path):
    runs = tmp_path / "runs"
    assert main(["-q", "run", "--model", "pop", "--train", str(TRAIN_FULL), "--test", str(TEST),
                 "--label", "pop baseline", "--run-dir", str(runs)]) == 0  # fmt: skip
    assert main(["-q", "train", "--model", "gru4rec", "--preset", "rsc15", "--param",
                 "n_epochs=1", "--param", "n_sample=16", "--train", str(TRAIN_FULL), "--out",
                 str(tmp_path / "model"), "--run-dir", str(runs)]) == 0  # fmt: skip
    labels = {}
    for directory in runs.iterdir():
        record = json.loads((directory / "record.json").read_text())
        labels[record["label"]] = directory.name.split("-", 3)[3]
    assert labels == {"pop baseline": "pop-baseline", "gru4rec:rsc15": "gru4rec-rsc15"}


def test_records_written_at_once_under_one_name_all_survive(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from nextclick.records import read_record, write_record

    # Workers of one study can end in the same second with the same label.
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: write_record(tmp_path, "tune", "shared", {"i": i}),
                              range(8)))  # fmt: skip
    assert len(set(paths)) == 8 and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in paths
    )
    assert sorted(read_record(p)["i"] for p in paths) == list(range(8))
    assert all(p.name.split("-", 3)[3] in {"shared", *(f"shared-{n}" for n in range(2, 9))}
               for p in paths)  # fmt: skip
