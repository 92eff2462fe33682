"""A million-item catalogue on one machine: training speed, memory, the service; one JSON.

    python bench/scale_items.py [--events 4000000 10000000] [--items 1000000]
        [--baseline-items 37500] [--work DIR] [--serve-seconds 30] [--out FILE]

For each event count, a SYNTHETIC log (``nextclick synth``: speed and memory only) with
``--items`` items and one with ``--baseline-items`` items are split into train and the
last 2% of sessions (by start time) as test. Each is run, in a fresh process per model with
its own peak RSS: GRU4Rec with the rsc15 preset for one epoch and the full-catalogue
evaluation of test (training events/s; the issue's aims: within 30% of the baseline
catalogue's, and under 4 GiB peak), V-SKNN and Item-KNN (fit and evaluation under 4 GiB).
Then the million-item GRU4Rec model of the largest log is served (``nextclick serve``, the
in-process store) under an open-loop load of 100 clicks/s replaying its test sessions
(``bench/serve_load.py``): p50/p99 per click and the service's memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import emit
from scale_rsc15 import measured

from nextclick.data import read_events, write_events
from nextclick.data.io import SESSION, TIME

MODELS = {"gru4rec": ["--preset", "rsc15", "--param", "n_epochs=1"], "vsknn": [], "itemknn": []}


def split(log: Path, out: Path) -> tuple[Path, Path]:
    """train / test (the sessions starting last, 2% of them) of a synthetic log."""
    train, test = out / "train.tsv.gz", out / "test_sessions.tsv.gz"
    if not test.exists():
        events = read_events(log)
        starts = events.groupby(SESSION, sort=False)[TIME].min().sort_values(kind="stable")
        last = starts.index[int(len(starts) * 0.98) :]
        in_test = events[SESSION].isin(last).to_numpy()
        write_events(events[~in_test], train)
        write_events(events[in_test], test)
    return train, test


def one_log(events: int, items: int, work: Path) -> dict:
    folder = work / f"e{events}-i{items}"
    log = folder / "events.tsv.gz"
    if not log.exists():
        measured("synth", "--events", str(events), "--items", str(items), "--out", str(log))
    train, test = split(log, folder)
    runs = {}
    for model, flags in MODELS.items():
        out = folder / f"model-{model}"
        record, wall, rss = measured("run", "--model", model, *flags, "--train", str(train),
                                     "--test", str(test), "--out", str(out),
                                     "--run-dir", str(folder / "runs"))  # fmt: skip
        runs[model] = {
            "wall_seconds": wall, "peak_rss_mb": rss,
            "train_seconds": round(record["train_seconds"], 1),
            "train_events_per_second": round(record.get("train_events_per_second", 0)),
            "eval_seconds": round(record["eval_seconds"], 1), "n_targets": record["n_targets"],
            "recall@20": round(record["metrics"]["recall@20"], 4),
        }  # fmt: skip
    return {"events": events, "items": items, "runs": runs}


def serve(model_dir: Path, data: Path, seconds: float) -> dict:
    """bench/serve_load.py on the in-process store at 100 clicks/s."""
    script = Path(__file__).with_name("serve_load.py")
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(data), "--model-dir", str(model_dir),
         "--setups", "memory", "--rate", "100", "--duration", str(seconds),
         "--sessions", "2000", "--search-rates"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"serve_load failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[4_000_000, 10_000_000])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--baseline-items", type=int, default=37_500)
    parser.add_argument("--work", type=Path, default=Path("bench-work/scale_items"))
    parser.add_argument("--serve-seconds", type=float, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logs = []
    for events in args.events:
        big = one_log(events, args.items, args.work)
        base = one_log(events, args.baseline_items, args.work)
        rates = [log["runs"]["gru4rec"]["train_events_per_second"] for log in (big, base)]
        big["gru4rec_speed_vs_baseline"] = round(rates[0] / max(rates[1], 1), 3)
        logs += [big, base]
    largest = args.work / f"e{max(args.events)}-i{args.items}"
    record = {
        "benchmark": "scale_items", "synthetic": True, "logs": logs,
        "serve": serve(largest / "model-gru4rec", largest, args.serve_seconds),
    }  # fmt: skip
    emit(record, args.out)


if __name__ == "__main__":
    main()
