"""Any model on an SR-GNN benchmark split, under the honest protocol; prints one JSON object.

    python bench/srgnn_accuracy.py --model NAME --data DIR [--preset P] [--param K=V ...]
        [--max-epochs N] [--out FILE] [--curve-only | --curve EARLIER.json] [--test-curve N]
        [--work DIR] [--final-snapshots N]

DIR holds train_sessions.tsv.gz / test_sessions.tsv.gz (../shared/data/yoochoose1_64-srgnn,
diginetica-srgnn, tmall-gcegnn). The split comes from the ``srgnn-benchmark`` recipe. For a
model that trains in epochs, the number of epochs is chosen on train_tr -> train_valid (best
MRR@20 after each of 1..N epochs of one run); then the model is trained on the whole train
part and evaluated on every next click of the test sessions, with conservative ties over the
full catalogue, reporting both the "unknown targets dropped" and the "unknown targets counted
as misses" figures, training time per epoch and targets per second, evaluation time and the
peak memory of the final run (a fresh ``nextclick run`` process).

``--test-curve N`` adds a diagnostic that is not a result: N epochs on the whole train part
with the test split evaluated after each, and the best Recall@20 and the best MRR@20 over
those epochs, each on its own (maybe different) epoch — the way the SR-GNN and GCE-GNN
reference scripts report their figures — so that a gap to a published figure can be split
into what test-set selection is worth and the rest. With ``--curve EARLIER.json`` only the
diagnostic runs (resumable with ``--work``); the earlier run's test is kept when it had the
same preset and parameters (another ``--param seed=S``: a seed's diagnostic alone).

``--work DIR`` keeps the split, the validation curve so far and the training states (the
models that checkpoint) in DIR, so that a run longer than one sitting resumes where it was
stopped when the same command is run again: each epoch's figures are those of its own
sitting; the final run's ``train_seconds`` and peak memory are those of its last sitting
(``seconds_per_epoch`` covers every epoch). DIR records the data it was made from and is
refused for other data.

On two cores, the final run can train beside the curve, each process on one core (the
number of epochs it will need is not known yet, so it saves every epoch)::

    OMP_NUM_THREADS=1 python bench/srgnn_accuracy.py ... --work W --curve-only --out C.json &
    OMP_NUM_THREADS=1 python bench/srgnn_accuracy.py ... --work W --final-snapshots N &
    wait; python bench/srgnn_accuracy.py ... --work W --curve C.json --out RESULT.json

The last command tests the saved epoch that the curve chose (``nextclick evaluate``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import emit, nextclick, srgnn_split, summary

from nextclick.api import peak_rss_mb
from nextclick.config import parse_overrides
from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.data.io import atomic_path
from nextclick.evaluation import evaluate
from nextclick.models import create_model, model_class
from nextclick.training.loop import EpochStats

Figures = Callable[[Any, EpochStats], dict]


def each_epoch(train_file: Path, model: str, params: list[dict], max_epochs: int,
               work: Path | None, name: str, figures: Figures) -> list:  # fmt: skip
    """One run of up to ``max_epochs`` on ``train_file`` with ``figures(model, stats)`` taken
    after each epoch, returned as rows; with ``work``, kept in WORK/NAME.json and resumed from
    the training state in WORK/NAME-checkpoint."""
    train = read_events(train_file)
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    instance = create_model(model, *params, {"n_epochs": max_epochs})
    saved = None if work is None else work / f"{name}.json"
    earlier = json.loads(saved.read_text()) if saved and saved.exists() else []
    rows = {r["n_epochs"]: r for r in earlier}
    checkpoint = work / f"{name}-checkpoint" if work and instance.checkpoints else None
    if checkpoint and (checkpoint / "training.pt").exists() and not rows:
        raise SystemExit(f"{checkpoint}: a training state without {saved}; remove both")

    def on_epoch(stats: EpochStats) -> None:
        rows[stats.epoch] = {"n_epochs": stats.epoch, "loss": round(stats.loss, 4),
                             "seconds": round(stats.seconds, 1),
                             **figures(instance, stats)}  # fmt: skip
        print(f"  epoch {stats.epoch}: {rows[stats.epoch]}", file=sys.stderr)
        if saved is not None:
            with atomic_path(saved) as partial:
                partial.write_text(json.dumps(sorted(rows.values(), key=lambda r: r["n_epochs"])))

    instance.fit(encode_sessions(train, index).sessions, index, on_epoch=on_epoch,
                 checkpoint=checkpoint)  # fmt: skip
    return [rows[e] for e in range(1, max_epochs + 1)]


def epoch_curve(train_file: Path, eval_file: Path, model: str, params: list[dict],
                max_epochs: int, work: Path | None = None,
                name: str = "curve") -> list:  # fmt: skip
    """Recall@20 / MRR@20 on ``eval_file`` after each epoch of one run on ``train_file``
    (train_tr -> train_valid: the validation curve); with ``work``, resumed from there."""
    valid = read_events(eval_file)

    def figures(instance: Any, stats: EpochStats) -> dict:
        started = time.perf_counter()
        result = evaluate(instance, valid, cutoffs=(20,))
        m, miss = result.metrics, result.metrics_unknown_as_miss
        return {"recall@20": round(m["recall@20"], 4), "mrr@20": round(m["mrr@20"], 4),
                "recall@20_unknown_as_miss": round(miss["recall@20"], 4),
                "mrr@20_unknown_as_miss": round(miss["mrr@20"], 4),
                "eval_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip

    return each_epoch(train_file, model, params, max_epochs, work, name, figures)


def final_snapshots(split: Path, work: Path, model: str, params: list[dict],
                    n_epochs: int) -> None:  # fmt: skip
    """The final run of every epoch count up to ``n_epochs`` at once: one run on the whole
    train part saving the model after each epoch K as WORK/final-epoch-K. Epoch K of that run
    is the K-epoch model (the validation curve relies on the same), so this can train in a
    second process while the curve is still choosing K."""
    started = time.perf_counter()

    def figures(instance: Any, stats: EpochStats) -> dict:
        instance.save(work / f"final-epoch-{stats.epoch}", provenance={
            "train_file": str(split / "train_full.tsv.gz"),
            "train_seconds": time.perf_counter() - started})  # fmt: skip
        return {"targets_per_second": round(stats.events_per_second),
                "peak_rss_mb": round(peak_rss_mb())}

    each_epoch(split / "train_full.tsv.gz", model, params, n_epochs, work, "final", figures)


def snapshot_summary(split: Path, work: Path, n_epochs: int) -> dict:
    """``summary`` of the final run of ``n_epochs`` from ``final_snapshots``: its training
    figures from WORK/final.json, its test figures from ``nextclick evaluate`` of the saved
    epoch (peak memory: the larger of the two processes')."""
    epochs = json.loads((work / "final.json").read_text())[:n_epochs]
    tested = nextclick("evaluate", "--model-dir", str(work / f"final-epoch-{n_epochs}"),
                       "--test", str(split / "test.tsv.gz"))  # fmt: skip
    train_seconds = sum(e["seconds"] for e in epochs)
    tested.update(
        epochs=epochs, train_seconds=train_seconds,
        train_events_per_second=epochs[-1]["targets_per_second"],
        peak_rss_mb=max(tested["peak_rss_mb"], *(e["peak_rss_mb"] for e in epochs)))
    record = summary(tested)
    record["final_run"] = f"saved after epoch {n_epochs} of a --final-snapshots run"
    return record


def split_in(work: Path, data: Path) -> Path:
    """The split of ``data`` in ``work``, made there unless an earlier run made it; a split
    of other data (by path, size and time of its files) is refused."""
    split, made_from = work / "split", work / "split.json"
    sources = [data / "train_sessions.tsv.gz", data / "test_sessions.tsv.gz"]
    origin = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in sources]
    if made_from.exists():
        if json.loads(made_from.read_text()) != origin:
            raise SystemExit(f"{work}: holds the split of other data ({made_from}); "
                             "give another --work")  # fmt: skip
        return split
    srgnn_split(data, split)
    with atomic_path(made_from) as partial:
        partial.write_text(json.dumps(origin))
    return split


def earlier_run(path: Path) -> dict:
    """An earlier JSON output of this script, with its validation curve."""
    try:
        record = json.loads(path.read_text())
        curve = record.get("validation_curve")
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"{path}: not a JSON output of this script ({exc})") from None
    if not curve:
        raise SystemExit(f"{path}: no validation_curve in it")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--preset")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    # A long benchmark in two sittings: the curve first, the final run later from its JSON.
    parser.add_argument("--curve-only", action="store_true",
                        help="stop after the validation curve (no test run)")
    parser.add_argument("--curve", type=Path, metavar="JSON",
                        help="take the curve and chosen epochs from an earlier --out")
    parser.add_argument("--test-curve", type=int, metavar="N",
                        help="diagnostic: test after each of N epochs on the train part")
    parser.add_argument("--final-snapshots", type=int, metavar="N",
                        help="only train N epochs on the train part, saving each in --work "
                             "(run beside --curve-only; a later --curve run tests one)")
    parser.add_argument("--work", type=Path, metavar="DIR",
                        help="keep the split, the curve and training states here; rerun to resume")
    args = parser.parse_args()
    cls = model_class(args.model)
    if args.test_curve is not None and (args.test_curve < 1 or not cls.trains_in_epochs
                                        or args.curve_only):  # fmt: skip
        raise SystemExit(f"--test-curve {args.test_curve}: expected a number of epochs >= 1, "
                         "for a model that trains in epochs, without --curve-only")  # fmt: skip
    if args.final_snapshots is not None and (args.final_snapshots < 1 or not args.work
                                            or not cls.trains_in_epochs):  # fmt: skip
        raise SystemExit(f"--final-snapshots {args.final_snapshots}: expected a number of "
                         "epochs >= 1, with --work, for a model that trains in epochs")  # fmt: skip
    params = [cls.preset(args.preset)] if args.preset else []
    params.append(parse_overrides(args.param))
    flags = [*(["--preset", args.preset] if args.preset else []),
             *(f for p in args.param for f in ("--param", p))]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        split = split_in(work, args.data)
        if args.final_snapshots:
            final_snapshots(split, work, args.model, params, args.final_snapshots)
            return
        record: dict = {"benchmark": "srgnn_accuracy", "model": args.model,
                        "data": str(args.data), "preset": args.preset, "params": args.param}
        earlier = earlier_run(args.curve) if args.curve else {}
        if cls.trains_in_epochs:
            curve = earlier.get("validation_curve")
            if curve is None:
                print(f"{args.model}: validation curve, up to {args.max_epochs} epochs",
                      file=sys.stderr)  # fmt: skip
                curve = epoch_curve(split / "train_tr.tsv.gz", split / "train_valid.tsv.gz",
                                    args.model, params, args.max_epochs, args.work)  # fmt: skip
            best = max(curve, key=lambda r: r["mrr@20"])["n_epochs"]
            record.update(validation_curve=curve, chosen_n_epochs=best)
            flags += ["--param", f"n_epochs={best}"]
        if args.curve_only:
            emit(record, args.out)
            return
        if args.test_curve and args.curve:
            # The diagnostic alone, beside the earlier run's result where it is the same run.
            same = (earlier.get("preset"), earlier.get("params")) == (args.preset, args.param)
            if same and "test" in earlier:
                record["test"] = earlier["test"]
        elif cls.trains_in_epochs and (work / f"final-epoch-{best}").is_dir():
            record["test"] = snapshot_summary(split, work, best)
        else:
            print(f"{args.model}: final run on the train part", file=sys.stderr)
            if args.work and cls.checkpoints:
                flags += ["--checkpoint", str(work / f"final-checkpoint-{best}")]
            final = nextclick("run", "--model", args.model, *flags,
                              "--train", str(split / "train_full.tsv.gz"),
                              "--test", str(split / "test.tsv.gz"),
                              "--run-dir", str(work / "runs"))  # fmt: skip
            record["test"] = summary(final)
        if args.test_curve:
            record["test_curve_diagnostic"] = test_curve(split, args.model, params,
                                                         args.test_curve, args.work)  # fmt: skip
    emit(record, args.out)


def test_curve(split: Path, model: str, params: list[dict], n_epochs: int,
               work: Path | None) -> dict:  # fmt: skip
    """The --test-curve diagnostic: each metric's best over the epochs, on its own epoch."""
    print(f"{model}: test curve (diagnostic), {n_epochs} epochs", file=sys.stderr)
    curve = epoch_curve(split / "train_full.tsv.gz", split / "test.tsv.gz", model, params,
                        n_epochs, work, name="test-curve")  # fmt: skip
    best = {}
    for metric in ("recall@20", "mrr@20", "recall@20_unknown_as_miss", "mrr@20_unknown_as_miss"):
        top = max(curve, key=lambda r: (r[metric], r["n_epochs"]))  # ties: the later epoch
        best[metric] = {"value": top[metric], "n_epochs": top["n_epochs"]}
    return {"note": "epochs chosen on the test split, as the published tables did; not a "
                    "nextclick result", "curve": curve, "best_on_test": best}  # fmt: skip


if __name__ == "__main__":
    main()
