"""What the benchmark scripts share: running the CLI in a fresh process, and printing (and
saving) their one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def nextclick(*args: str) -> dict:
    """Run ``nextclick -q ARGS --json`` in a fresh process (its peak memory is its own) and
    return the record it prints; stop with its error output if it fails."""
    done = subprocess.run([sys.executable, "-m", "nextclick.cli", "-q", *args, "--json"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"nextclick {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def srgnn_split(data: Path, out: Path) -> None:
    """``nextclick prepare srgnn-benchmark`` of an SR-GNN benchmark folder (train_sessions /
    test_sessions .tsv.gz) into ``out``."""
    nextclick("prepare", "srgnn-benchmark", str(data / "train_sessions.tsv.gz"),
              str(data / "test_sessions.tsv.gz"), "--out", str(out))  # fmt: skip


def emit(record: dict, out: Path | None) -> None:
    """Print the benchmark's JSON object, and write it to ``out`` when given."""
    text = json.dumps(record, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)


def summary(record: dict) -> dict:
    """The test figures of a ``nextclick run --json`` record, rounded: both unknown-item
    variants, training time per epoch and targets per second, evaluation time, memory."""
    m, miss = record["metrics"], record["metrics_unknown_as_miss"]
    epochs = record.get("epochs", [])
    return {
        "recall@20": round(m["recall@20"], 4),
        "mrr@20": round(m["mrr@20"], 4),
        "recall@20_unknown_as_miss": round(miss["recall@20"], 4),
        "mrr@20_unknown_as_miss": round(miss["mrr@20"], 4),
        "n_targets": record["n_targets"],
        "n_dropped_unknown": record["n_dropped_unknown"],
        "train_seconds": round(record["train_seconds"], 1),
        "seconds_per_epoch": [round(e["seconds"], 1) for e in epochs],
        "train_targets_per_second": round(record.get("train_events_per_second", 0)),
        "eval_seconds": round(record["eval_seconds"], 2),
        "peak_rss_mb": round(record["peak_rss_mb"]),
        "epoch_losses": [round(e["loss"], 4) for e in epochs],
    }


def rsc15_sample(data: Path | None = None) -> tuple[str, str]:
    """(train_full, test) of the RSC15 sample: ``data``, else ../shared's copy, else the
    project's bundled (gzipped) one."""
    for folder in [data] if data else [SHARED / "rsc15-100k", ROOT / "data" / "rsc15-100k"]:
        for suffix in ("", ".gz"):
            train = folder / f"yoochoose-clicks-100k_train_full.txt{suffix}"
            if train.exists():
                return str(train), str(folder / f"yoochoose-clicks-100k_test.txt{suffix}")
    raise SystemExit(f"no RSC15 sample (yoochoose-clicks-100k_train_full.txt) in {data or SHARED}")
