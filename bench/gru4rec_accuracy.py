"""GRU4Rec accuracy and training speed; prints one JSON object.

    python bench/gru4rec_accuracy.py rsc15 [--data DIR] [--seeds 1 2 3]
        presets rsc15 and retailrocket on the RSC15 sample (train_full -> test, 10 epochs),
        one run per seed: Recall@20, MRR@20, events/s, peak memory.
    python bench/gru4rec_accuracy.py srgnn --data DIR --preset NAME --max-epochs N
        an SR-GNN benchmark (train_sessions.tsv.gz / test_sessions.tsv.gz): the number of
        epochs is chosen on train_tr -> train_valid (best MRR@20 up to N epochs; the split
        comes from the srgnn-benchmark recipe), then the model is trained on the whole
        train part and evaluated on every next click of the test sessions, reporting the
        "unknown targets dropped" and "unknown targets counted as misses" figures.

Each run is a fresh process (`nextclick run --json`), so peak memory is per run. All
evaluations use conservative ties over the full catalogue.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.evaluation import evaluate
from nextclick.models import create_model
from nextclick.models.gru4rec import preset_params
from nextclick.training.loop import EpochStats

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def nextclick(*args: str) -> dict:
    """Run the CLI with --json and return its record."""
    done = subprocess.run(
        [sys.executable, "-m", "nextclick.cli", *args, "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"nextclick {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def summary(record: dict) -> dict:
    m, miss = record["metrics"], record["metrics_unknown_as_miss"]
    return {
        "recall@20": round(m["recall@20"], 4),
        "mrr@20": round(m["mrr@20"], 4),
        "recall@20_unknown_as_miss": round(miss["recall@20"], 4),
        "mrr@20_unknown_as_miss": round(miss["mrr@20"], 4),
        "n_targets": record["n_targets"],
        "n_dropped_unknown": record["n_dropped_unknown"],
        "train_events_per_second": round(record.get("train_events_per_second", 0)),
        "train_seconds": round(record["train_seconds"], 1),
        "eval_seconds": round(record["eval_seconds"], 2),
        "peak_rss_mb": round(record["peak_rss_mb"]),
        "epoch_losses": [round(e["loss"], 4) for e in record.get("epochs", [])],
    }


def rsc15(args: argparse.Namespace) -> dict:
    data = args.data or SHARED / "rsc15-100k"
    if not (data / "yoochoose-clicks-100k_train_full.txt").exists():
        data = ROOT / "data" / "rsc15-100k"
    suffix = "" if (data / "yoochoose-clicks-100k_train_full.txt").exists() else ".gz"
    train = str(data / f"yoochoose-clicks-100k_train_full.txt{suffix}")
    test = str(data / f"yoochoose-clicks-100k_test.txt{suffix}")
    out = {}
    for preset in ("rsc15", "retailrocket"):
        runs = []
        for seed in args.seeds:
            record = nextclick(
                "run",
                "--model",
                "gru4rec",
                "--preset",
                preset,
                "--param",
                f"seed={seed}",
                "--train",
                train,
                "--test",
                test,
            )
            runs.append({"seed": seed, **summary(record)})
        out[preset] = {
            "runs": runs,
            **{
                f"{key}_{stat}": round(fn([r[key] for r in runs]), 4)
                for key in ("recall@20", "mrr@20", "train_events_per_second")
                for stat, fn in (("mean", statistics.mean), ("min", min), ("max", max))
            },
        }
    return {"benchmark": "gru4rec_rsc15_100k", "train": train, "test": test, **out}


def validation_curve(split: Path, preset: str, max_epochs: int) -> list[dict]:
    """Recall@20 / MRR@20 on train_valid after each epoch of one run on train_tr."""
    train = read_events(split / "train_tr.tsv.gz")
    valid = read_events(split / "train_valid.tsv.gz")
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    model = create_model("gru4rec", preset_params(preset), {"n_epochs": max_epochs})
    curve: list[dict] = []

    def on_epoch(stats: EpochStats) -> None:
        result = evaluate(model, valid, cutoffs=(20,))
        curve.append({"n_epochs": stats.epoch, "loss": round(stats.loss, 4),
                      "recall@20": round(result.metrics["recall@20"], 4),
                      "mrr@20": round(result.metrics["mrr@20"], 4)})  # fmt: skip

    model.on_epoch = on_epoch
    model.fit(encode_sessions(train, index).sessions, index)
    return curve


def srgnn(args: argparse.Namespace) -> dict:
    data = args.data
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split"
        nextclick(
            "prepare",
            "srgnn-benchmark",
            str(data / "train_sessions.tsv.gz"),
            str(data / "test_sessions.tsv.gz"),
            "--out",
            str(split),
        )
        curve = validation_curve(split, args.preset, args.max_epochs)
        best = max(curve, key=lambda r: r["mrr@20"])["n_epochs"]
        final = nextclick("run", "--model", "gru4rec", "--preset", args.preset, "--param",
                          f"n_epochs={best}", "--train", str(split / "train_full.tsv.gz"),
                          "--test", str(split / "test.tsv.gz"))  # fmt: skip
    return {
        "benchmark": "gru4rec_srgnn",
        "data": str(data),
        "preset": args.preset,
        "validation_curve": curve,
        "chosen_n_epochs": best,
        "test": summary(final),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["rsc15", "srgnn"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--preset", default="rsc15")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    if args.which == "srgnn" and args.data is None:
        parser.error("srgnn needs --data")
    result = rsc15(args) if args.which == "rsc15" else srgnn(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
