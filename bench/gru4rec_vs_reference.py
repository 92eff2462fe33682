"""nextclick's GRU4Rec against the author's reference implementation, on one machine, in one
run: training time and speed, full-catalogue evaluation time, and test accuracy at equal
settings. Prints one JSON object.

    python bench/gru4rec_vs_reference.py --reference DIR [--data DIR] [--preset diginetica]
        [--epochs 2] [--out FILE]

DIR is a checkout of https://github.com/hidasib/GRU4Rec_PyTorch_Official; the script imports
its ``gru4rec_pytorch`` and ``evaluation`` modules from there (nothing of it is part of
nextclick). --data holds an SR-GNN benchmark split (train_sessions.tsv.gz,
test_sessions.tsv.gz; default ../shared/data/diginetica-srgnn); it is prepared with the
``srgnn-benchmark`` recipe, whose surrogate times order the sessions as the benchmark does, and
both implementations get the same frames. Both evaluate every next click of the test sessions
against every item, with conservative ties; both use the machine's default torch threads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import emit

from nextclick.api import peak_rss_mb
from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.data.recipes import prepare
from nextclick.evaluation import evaluate
from nextclick.models import create_model
from nextclick.models.gru4rec import GRU4Rec

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "diginetica-srgnn"


def run_nextclick(train, test, params: dict) -> dict:
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    sessions = encode_sessions(train, index).sessions
    model = create_model("gru4rec", params)
    started = time.perf_counter()
    model.fit(sessions, index)
    train_seconds = time.perf_counter() - started
    result = evaluate(model, test, cutoffs=(20,), ties="conservative")
    pairs = sum(e.events_per_second * e.seconds for e in model.history_)
    return {
        "train_seconds": round(train_seconds, 1),
        "train_events_per_second": round(pairs / sum(e.seconds for e in model.history_)),
        "epoch_losses": [round(e.loss, 4) for e in model.history_],
        "eval_seconds": round(result.seconds, 1),
        "recall@20": round(result.metrics["recall@20"], 4),
        "mrr@20": round(result.metrics["mrr@20"], 4),
        "n_targets": result.n_targets,
    }


@contextlib.contextmanager
def series_accepted_by_torch_tensor():
    """The reference's logQ path (cross-entropy with logq > 0: the presets rsc15, yoochoose,
    rees46) passes a pandas
    Series to torch.tensor, which current torch rejects ("could not determine the shape of
    object type 'Series'"); hand it the Series' array instead, changing nothing else."""
    original = torch.tensor

    def tensor(data, *args, **kwargs):
        return original(data.to_numpy() if isinstance(data, pd.Series) else data, *args, **kwargs)

    torch.tensor = tensor
    try:
        yield
    finally:
        torch.tensor = original


def run_reference(reference: Path, train, test, params: dict) -> dict:
    sys.path.insert(0, str(reference))
    from evaluation import batch_eval  # the reference's own modules
    from gru4rec_pytorch import GRU4Rec

    names = ("loss", "constrained_embedding", "embedding", "elu_param", "layers", "n_epochs",
             "batch_size", "dropout_p_embed", "dropout_p_hidden", "learning_rate", "momentum",
             "n_sample", "sample_alpha", "bpreg", "logq")  # fmt: skip
    model = GRU4Rec(device=torch.device("cpu"))
    model.set_params(**{name: list(v) if isinstance(v := params[name], tuple) else v
                        for name in names})  # fmt: skip
    started = time.perf_counter()
    # Its compatibility-mode initialisation fails on current torch (float64 numbers set into
    # float32 tensors); the standard one costs the same time per epoch.
    with series_accepted_by_torch_tensor():
        model.fit(train, compatibility_mode=False)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    recall, mrr = batch_eval(model, test, cutoff=[20], batch_size=512, mode="conservative")
    pairs = params["n_epochs"] * int(len(train) - train["SessionId"].nunique())
    return {
        "train_seconds": round(train_seconds, 1),
        "train_events_per_second": round(pairs / train_seconds),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "recall@20": round(float(recall[20]), 4),
        "mrr@20": round(float(mrr[20]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="checkout of hidasib/GRU4Rec_PyTorch_Official")  # fmt: skip
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--preset", default="diginetica")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not (args.reference / "gru4rec_pytorch.py").is_file():
        raise SystemExit(f"{args.reference}: no gru4rec_pytorch.py (a reference checkout?)")
    work = Path(tempfile.mkdtemp(prefix="nextclick-vs-ref-"))
    prepare("srgnn-benchmark", [args.data / "train_sessions.tsv.gz",
                                args.data / "test_sessions.tsv.gz"], work)  # fmt: skip
    train = read_events(work / "train_full.tsv.gz")
    test = read_events(work / "test.tsv.gz")
    params = {**GRU4Rec.preset(args.preset), "n_epochs": args.epochs}
    print(f"nextclick, {args.preset} preset, {args.epochs} epochs...", file=sys.stderr)
    ours = run_nextclick(train, test, params)
    ours["peak_rss_mb"] = round(peak_rss_mb())
    print("reference, same settings...", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # it prints its progress on stdout
        ref = run_reference(args.reference, train, test, params)
    record = {
        "benchmark": "gru4rec_vs_reference", "data": str(args.data), "preset": args.preset,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "ties": "conservative", "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "nextclick": ours, "reference": ref,
        "training_speedup": round(ref["train_seconds"] / ours["train_seconds"], 2),
        "evaluation_speedup": round(ref["eval_seconds"] / ours["eval_seconds"], 2),
    }  # fmt: skip
    emit(record, args.out)


if __name__ == "__main__":
    main()
