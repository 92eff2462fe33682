"""Training and evaluation speed of the item-list models on an SR-GNN benchmark split, one
fresh process per model; prints one JSON object.

    python bench/neural_speed.py [--data DIR] [--models narm,stamp,sasrec,srgnn,gcegnn]
        [--epochs 1] [--out FILE]

Each model trains --epochs epochs with its defaults (--preset NAME applies to the models that
have it) on the whole train part and is evaluated on every next click of the test sessions:
seconds per epoch, training targets per second, evaluation seconds and the peak memory of the
process. Accuracy after so few epochs means nothing; bench/srgnn_accuracy.py measures that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import emit, nextclick, srgnn_split

from nextclick.models import model_class

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose1_64-srgnn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--models", default="narm,stamp,sasrec,srgnn,gcegnn")
    parser.add_argument("--preset")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    record: dict = {"benchmark": "neural_speed", "data": str(args.data), "epochs": args.epochs,
                    "models": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split"
        srgnn_split(args.data, split)
        for name in args.models.split(","):
            preset = args.preset if args.preset in model_class(name).presets else None
            print(f"{name}...", file=sys.stderr)
            run = nextclick("run", "--model", name, *(["--preset", preset] if preset else []),
                            "--param", f"n_epochs={args.epochs}",
                            "--train", str(split / "train_full.tsv.gz"),
                            "--test", str(split / "test.tsv.gz"),
                            "--run-dir", str(Path(tmp) / "runs"))  # fmt: skip
            record["models"][name] = {
                "preset": preset,
                "seconds_per_epoch": [round(e["seconds"], 1) for e in run["epochs"]],
                "train_targets_per_second": round(run["train_events_per_second"]),
                "eval_seconds": round(run["eval_seconds"], 1),
                "n_targets": run["n_targets"],
                "peak_rss_mb": round(run["peak_rss_mb"]),
            }
    emit(record, args.out)


if __name__ == "__main__":
    main()
