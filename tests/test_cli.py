"""The command line end to end on the bundled RSC15 sample: JSON contract and error paths."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nextclick import __version__
from nextclick.cli import main

DATA = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"
TRAIN = str(DATA / "yoochoose-clicks-100k_train_full.txt.gz")
TEST = str(DATA / "yoochoose-clicks-100k_test.txt.gz")
METRIC_KEYS = {
    f"{name}@{k}"
    for name in ("recall", "mrr", "ndcg", "coverage", "popularity")
    for k in (1, 5, 10, 20)
}


def _json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_train_then_evaluate_equals_run(tmp_path, capsys):
    model_dir = tmp_path / "knn"
    trained = _json(capsys, ["train", "--model", "itemknn", "--train", TRAIN,
                             "--param", "lmbd=10", "--out", str(model_dir), "--json"])  # fmt: skip
    assert trained["model"] == "itemknn" and trained["out"] == str(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["config"] == {"n_sims": 100, "lmbd": 10.0, "alpha": 0.5, "counting": "sessions"}
    evaluated = _json(capsys, ["evaluate", "--model-dir", str(model_dir), "--test", TEST,
                               "--json"])  # fmt: skip
    ran = _json(capsys, ["run", "--model", "itemknn", "--train", TRAIN, "--test", TEST,
                         "--param", "lmbd=10", "--json"])  # fmt: skip
    expected_keys = {"model", "train_file", "test_file", "ties", "n_targets",
                     "n_dropped_unknown", "metrics", "metrics_unknown_as_miss",
                     "train_seconds", "eval_seconds", "peak_rss_mb"}  # fmt: skip
    assert set(evaluated) == expected_keys == set(ran)
    assert set(evaluated["metrics"]) == METRIC_KEYS == set(evaluated["metrics_unknown_as_miss"])
    assert evaluated["metrics"] == ran["metrics"]
    assert evaluated["train_file"] == TRAIN and evaluated["ties"] == "conservative"
    assert (evaluated["n_targets"], evaluated["n_dropped_unknown"]) == (10152, 0)


def test_params_file_and_override_order(tmp_path, capsys):
    params = tmp_path / "p.toml"
    params.write_text("n_sims = 5\nlmbd = 1.0\n")
    out = tmp_path / "m"
    _json(capsys, ["train", "--model", "itemknn", "--train", TRAIN, "--params", str(params),
                   "--param", "lmbd=2", "--out", str(out), "--json"])  # fmt: skip
    config = json.loads((out / "model.json").read_text())["config"]
    assert config == {"n_sims": 5, "lmbd": 2.0, "alpha": 0.5, "counting": "sessions"}


def test_compare_prints_one_table(capsys):
    code = main(["compare", "--models", "pop,spop", "--train", TRAIN, "--test", TEST,
                 "--cutoffs", "1", "20"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "Recall@1", "Recall@20", "MRR@1", "MRR@20",
                                "train", "s", "eval", "s"]  # fmt: skip
    assert lines[2].split()[0] == "pop" and lines[3].split()[0] == "spop"
    assert "ties=conservative; 10152 targets" in lines[4]


def test_compare_json_and_tie_mode(capsys):
    record = _json(capsys, ["compare", "--models", "pop", "--train", TRAIN, "--test", TEST,
                            "--ties", "standard", "--json"])  # fmt: skip
    assert record["ties"] == "standard"
    assert [r["model"] for r in record["results"]] == ["pop"]
    assert record["results"][0]["ties"] == "standard"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--model", "nope", "--train", TRAIN, "--test", TEST],
         "unknown model 'nope'; models: pop, spop, itemknn, bprmf, sknn, vsknn, gru4rec"),
        (["run", "--model", "itemknn", "--train", TRAIN, "--test", TEST, "--param", "k=3"],
         "unknown parameter 'k'; known parameters: alpha, counting, lmbd, n_sims"),
        (["run", "--model", "itemknn", "--train", TRAIN, "--test", TEST, "--param", "lmbd=x"],
         "parameter 'lmbd': 'x' is not a number"),
        (["run", "--model", "itemknn", "--train", TRAIN, "--test", TEST, "--param", "alpha=2"],
         "parameter 'alpha': expected a number in [0, 1]"),
        (["run", "--model", "pop", "--train", TRAIN, "--test", TEST, "--param", "novalue"],
         "--param 'novalue': expected KEY=VALUE"),
        (["run", "--model", "pop", "--train", TRAIN, "--test", TEST, "--cutoffs", "0"],
         "--cutoffs: expected positive integers"),
        (["compare", "--models", "pop,knn", "--train", TRAIN, "--test", TEST],
         "unknown model 'knn'"),
        (["evaluate", "--model-dir", "/nonexistent/dir", "--test", TEST],
         "/nonexistent/dir: not a model directory"),
        (["run", "--model", "pop", "--train", TRAIN, "--test", TEST, "--checkpoint", "ck"],
         "pop does not save its training state between epochs"),
    ],
)  # fmt: skip
def test_user_mistakes_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nextclick: error: ") and message in err
    assert err.count("\n") == 1


def test_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(tmp_path, capsys):
    head = "".join(gzip.open(TRAIN, "rt").readlines()[:3001])
    train = tmp_path / "train.tsv"
    train.write_text(head)
    base = ["run", "--model", "narm", "--train", str(train), "--test", TEST, "--json",
            "--param", "embedding_dim=16", "--param", "hidden_size=16",
            "--run-dir", str(tmp_path / "runs")]  # fmt: skip
    whole = _json(capsys, [*base, "--param", "n_epochs=2"])
    ck = ["--checkpoint", str(tmp_path / "ck")]
    first = _json(capsys, [*base, "--param", "n_epochs=1", *ck])
    resumed = _json(capsys, [*base, "--param", "n_epochs=2", *ck])
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in whole["epochs"]]
    assert resumed["epochs"][0] == first["epochs"][0]  # epoch 1 came from the checkpoint
    assert resumed["metrics"] == whole["metrics"]
    assert main([*base, "--param", "n_epochs=2", "--param", "ct_dropout=0.3", *ck]) == 2
    assert "the checkpoint of another training" in capsys.readouterr().err


def test_bad_params_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("n_sims = [\n")
    argv = ["run", "--model", "itemknn", "--train", TRAIN, "--test", TEST, "--params", str(bad)]
    assert main(argv) == 2
    assert "bad.toml: not valid TOML" in capsys.readouterr().err


def test_corrupt_model_directory(tmp_path, capsys):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.json").write_text('{"format_version": 1, "model": "pop"}')
    assert main(["evaluate", "--model-dir", str(model_dir), "--test", TEST]) == 2
    assert "expected keys format_version, model, config" in capsys.readouterr().err


SAMPLES = Path(__file__).resolve().parent / "data" / "samples"


def test_prepare_and_stats(tmp_path, capsys):
    out = tmp_path / "rsc15"
    record = _json(capsys, ["prepare", "rsc15", str(SAMPLES / "sample_yoochoose.dat"),
                            "--out", str(out), "--json"])  # fmt: skip
    assert record["report"]["splits"]["train_full"] == {"events": 515, "sessions": 158,
                                                        "items": 90}  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "test.tsv.gz", "train_full.tsv.gz", "train_tr.tsv.gz", "train_valid.tsv.gz"]  # fmt: skip
    stats = _json(capsys, ["stats", str(out / "test.tsv.gz"), "--json"])
    assert (stats["n_events"], stats["n_sessions"], stats["n_items"]) == (76, 25, 30)


def test_prepare_unknown_recipe_and_bad_raw_file(tmp_path, capsys):
    assert main(["prepare", "nope", str(SAMPLES / "sample_yoochoose.dat"), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    bad = tmp_path / "clicks.dat"
    bad.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n1,yesterday,214536500,0\n")
    assert main(["prepare", "rsc15", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: column 'Timestamp'" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_gru4rec_preset_param_override_and_training_record(tmp_path, capsys):
    out = tmp_path / "gru"
    record = _json(capsys, ["train", "--model", "gru4rec", "--preset", "rsc15", "--param",
                            "n_epochs=2", "--param", "layers=24", "--train", TRAIN, "--out",
                            str(out), "--json"])  # fmt: skip
    config = json.loads((out / "model.json").read_text())["config"]
    assert (config["n_epochs"], config["layers"], config["batch_size"], config["loss"]) == (
        2, [24], 32, "cross-entropy")  # fmt: skip
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["epochs"][1]["loss"] < record["epochs"][0]["loss"]
    assert record["train_events_per_second"] > 0
    evaluated = _json(capsys, ["evaluate", "--model-dir", str(out), "--test", TEST, "--json"])
    assert evaluated["model"] == "gru4rec" and evaluated["n_targets"] == 10152


@pytest.mark.slow  # ten epochs of the published setting
def test_compare_labels_presets(capsys):
    record = _json(capsys, ["compare", "--models", "pop,gru4rec:rsc15", "--train", TRAIN,
                            "--test", TEST, "--json"])  # fmt: skip
    assert [r["model"] for r in record["results"]] == ["pop", "gru4rec:rsc15"]
    assert len(record["results"][1]["epochs"]) == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "rsc15", "--model", "itemknn"],
         "unknown preset 'rsc15' for itemknn; its presets: none"),
        (["--preset", "rsc16", "--model", "gru4rec"], "unknown preset 'rsc16'"),
        (["--model", "gru4rec", "--device", "tpu"], "expected cpu, cuda, cuda:N or auto"),
        (["--model", "gru4rec", "--param", "loss=hinge"], "'hinge' is not one of"),
    ],
)
def test_gru4rec_option_mistakes(capsys, argv, message):
    assert main(["run", "--train", TRAIN, "--test", TEST, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_python_dash_m_nextclick_is_the_command_line(tmp_path):
    """``python -m nextclick`` (what torchrun starts) runs the CLI and passes its exit code."""

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nextclick", *argv], capture_output=True,
                              text=True, check=False)  # fmt: skip

    assert run("--version").stdout == f"nextclick {__version__}\n"
    bad = run("stats", str(tmp_path / "missing.tsv"))
    assert bad.returncode == 2 and bad.stderr.startswith("nextclick: error: ")
