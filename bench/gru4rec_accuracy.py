"""GRU4Rec accuracy and training speed on the RSC15 sample; prints one JSON object.

    python bench/gru4rec_accuracy.py rsc15 [--data DIR] [--seeds 1 2 3]

Presets rsc15 and retailrocket on the RSC15 sample (train_full -> test, 10 epochs), one run
per seed: Recall@20, MRR@20, events/s, peak memory. Each run is a fresh process
(`nextclick run --json`), so peak memory is per run; conservative ties over the full
catalogue. (The SR-GNN benchmarks, for GRU4Rec as for every model: bench/srgnn_accuracy.py.)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import nextclick, rsc15_sample, summary


def rsc15(args: argparse.Namespace) -> dict:
    train, test = rsc15_sample(args.data)
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
                for key in ("recall@20", "mrr@20", "train_targets_per_second")
                for stat, fn in (("mean", statistics.mean), ("min", min), ("max", max))
            },
        }
    return {"benchmark": "gru4rec_rsc15_100k", "train": train, "test": test, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["rsc15"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    print(json.dumps(rsc15(args), indent=2))


if __name__ == "__main__":
    main()
