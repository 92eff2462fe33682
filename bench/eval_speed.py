"""Evaluation speed of the baselines on the yoochoose1_64 (SR-GNN) benchmark; prints JSON.

    python bench/eval_speed.py [--data DIR] [--models itemknn,vsknn,gru4rec:rsc15]
        [--gru-epochs 1]

DIR holds train_sessions.tsv.gz and test_sessions.tsv.gz (default: the copy in
../shared/data/yoochoose1_64-srgnn beside the repository). Each model is trained on the
train part and evaluated on every next click of the test sessions over the full catalogue
(conservative ties). Numba kernels are compiled (or loaded from cache) by a warm-up
evaluation on a few sessions first, so the figure is the steady-state evaluation time.
``gru4rec:PRESET`` trains GRU4Rec with a published setting for ``--gru-epochs`` epochs
(evaluation time does not depend on how long the model was trained).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.evaluation import evaluate
from nextclick.models import create_model
from nextclick.models.gru4rec import GRU4Rec

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose1_64-srgnn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--models", default="itemknn,vsknn")
    parser.add_argument("--gru-epochs", type=int, default=1)
    args = parser.parse_args()
    train = read_events(args.data / "train_sessions.tsv.gz")
    test = read_events(args.data / "test_sessions.tsv.gz")
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    sessions = encode_sessions(train, index).sessions
    encoded = encode_sessions(test, index)
    warmup = encode_sessions(test[test["SessionId"].isin(test["SessionId"].unique()[:50])], index)
    results = []
    for label in args.models.split(","):
        name, _, preset = label.partition(":")
        params = [GRU4Rec.preset(preset), {"n_epochs": args.gru_epochs}] if preset else []
        started = time.perf_counter()
        model = create_model(name, *params).fit(sessions, index)
        train_seconds = time.perf_counter() - started
        evaluate(model, warmup)
        result = evaluate(model, encoded)
        results.append(
            {
                "model": label,
                "n_targets": result.n_targets,
                "n_dropped_unknown": result.n_dropped_unknown,
                "n_items": len(index),
                "train_seconds": round(train_seconds, 2),
                "eval_seconds": round(result.seconds, 2),
                "recall@20": round(result.metrics["recall@20"], 4),
                "mrr@20": round(result.metrics["mrr@20"], 4),
                "recall@20_unknown_as_miss": round(result.metrics_unknown_as_miss["recall@20"], 4),
                "mrr@20_unknown_as_miss": round(result.metrics_unknown_as_miss["mrr@20"], 4),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "eval_speed",
                "data": str(args.data),
                "ties": "conservative",
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "numpy": np.__version__,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
