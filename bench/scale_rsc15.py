"""RSC15 at full size on one machine: prepare, one GRU4Rec epoch, full evaluation; one JSON.

    python bench/scale_rsc15.py [--events 33003944] [--work DIR] [--prepare-only] [--out FILE]

Writes a raw-format click log of RSC15's size with ``nextclick synth --format yoochoose``
(SYNTHETIC: speed and memory only, never accuracy), then times ``nextclick prepare rsc15`` on
it and ``nextclick run`` of GRU4Rec with the rsc15 preset for one epoch on train_full and the
full-catalogue evaluation of test, each in a fresh process: wall seconds and peak resident
memory per step (the issue's aims: prepare under 5 minutes and 6 GiB; peak under 8 GiB end
to end). The raw file is reused when ``--work`` already holds one of the asked size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

#: Clicks in RSC15's yoochoose-clicks.dat.
RSC15_CLICKS = 33_003_944


def measured(*args: str) -> tuple[dict, float, int]:
    """(JSON record, wall seconds, peak RSS in MiB) of ``nextclick -q ARGS --json``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "nextclick", "-q", *args, "--json"],
                                 stdout=out, stderr=err)  # fmt: skip
        # wait4 gives this child's own peak memory (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"nextclick {' '.join(args)} failed:\n{err.read()}")
        return json.loads(out.read()), round(wall, 1), round(usage.ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=RSC15_CLICKS)
    parser.add_argument("--items", type=int, default=37_500)
    parser.add_argument("--work", type=Path, default=Path("bench-work/scale_rsc15"))
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    raw = args.work / f"clicks-{args.events}.dat"
    if not raw.exists():
        measured("synth", "--events", str(args.events), "--items", str(args.items),
                 "--format", "yoochoose", "--out", str(raw))  # fmt: skip
    split = args.work / "split"
    prepared, wall, rss = measured("prepare", "rsc15", str(raw), "--out", str(split))
    rows = {name: counts["events"] for name, counts in prepared["report"]["splits"].items()}
    record: dict = {
        "benchmark": "scale_rsc15", "synthetic": True, "raw_events": args.events,
        "items": args.items, "cpu_count": os.cpu_count(),
        "prepare": {"wall_seconds": wall, "peak_rss_mb": rss, "split_events": rows},
    }  # fmt: skip
    if not args.prepare_only:
        run, wall, rss = measured("run", "--model", "gru4rec", "--preset", "rsc15",
                                  "--param", "n_epochs=1",
                                  "--train", str(split / "train_full.tsv.gz"),
                                  "--test", str(split / "test.tsv.gz"),
                                  "--run-dir", str(args.work / "runs"))  # fmt: skip
        record["gru4rec_one_epoch"] = {
            "wall_seconds": wall, "peak_rss_mb": rss,
            "train_seconds": round(run["train_seconds"], 1),
            "train_events_per_second": round(run["train_events_per_second"]),
            "eval_seconds": round(run["eval_seconds"], 1), "n_targets": run["n_targets"],
        }  # fmt: skip
    emit(record, args.out)


if __name__ == "__main__":
    main()
