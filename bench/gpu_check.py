"""One epoch of GRU4Rec and of each item-list model on the GPU against the same epoch on the
CPU, on the yoochoose1_64 benchmark; prints one JSON object (run by bench/gpu_check.sh).

    python bench/gpu_check.py [--data DIR] [--models gru4rec:rsc15,narm,stamp,sasrec] [--out F]

Per model: training seconds and targets per second on each device, peak GPU memory, and
Recall@20 / MRR@20 on the test split (conservative ties) from each device's model. The two
runs share the seed but not the random streams (the GPU draws its own), so their accuracy
should agree within the seed-to-seed spread, not to the last digit: the check is
``|difference| <= --tolerance``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import emit

from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.evaluation import evaluate
from nextclick.models import create_model, model_class

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose1_64-srgnn"


def one(name: str, preset: str | None, device: str, train, index, test) -> dict:
    params = model_class(name).preset(preset) if preset else {}
    model = create_model(name, params, {"n_epochs": 1}).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model.fit(train, index)
    seconds = time.perf_counter() - started
    result = evaluate(model, test, cutoffs=(20,))
    out = {
        "train_seconds": round(seconds, 2),
        "train_targets_per_second": round(model.history_[-1].events_per_second),
        "eval_seconds": round(result.seconds, 2),
        "recall@20": round(result.metrics["recall@20"], 4),
        "mrr@20": round(result.metrics["mrr@20"], 4),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--models", default="gru4rec:rsc15,narm,stamp:yoochoose1_64,sasrec")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here")
    train_events = read_events(args.data / "train_sessions.tsv.gz")
    index = ItemIndex.from_items(train_events["ItemId"].to_numpy())
    train = encode_sessions(train_events, index).sessions
    test = encode_sessions(read_events(args.data / "test_sessions.tsv.gz"), index)
    record: dict = {"benchmark": "gpu_check", "data": str(args.data),
                    "gpu": torch.cuda.get_device_name(0), "models": {}}  # fmt: skip
    failed = []
    for label in args.models.split(","):
        name, _, preset = label.partition(":")
        print(f"{label}...", file=sys.stderr)
        gpu = one(name, preset or None, "cuda", train, index, test)
        cpu = one(name, preset or None, "cpu", train, index, test)
        agree = all(abs(gpu[k] - cpu[k]) <= args.tolerance for k in ("recall@20", "mrr@20"))
        record["models"][label] = {"cuda": gpu, "cpu": cpu, "accuracy_agrees": agree}
        if not agree:
            failed.append(label)
    emit(record, args.out)
    if failed:
        raise SystemExit(f"GPU and CPU accuracy differ for {', '.join(failed)}")


if __name__ == "__main__":
    main()
