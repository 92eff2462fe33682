"""GRU4Rec training throughput: one process against ``torchrun`` with N gloo processes.

    python bench/distributed_speed.py [--nproc 2] [--epochs 1] [--preset rsc15]
        [--train FILE] [--out FILE]

Trains with ``nextclick train`` (one process, torch's default threads) and with
``torchrun --nproc-per-node N -m nextclick train`` (torchrun gives each process one
thread), the same command line otherwise, on the RSC15 sample unless ``--train``; prints
training events/s of the job, per process, and the ratio to one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import emit, rsc15_sample


def train(launcher: list[str], args: argparse.Namespace, out: Path) -> dict:
    done = subprocess.run(
        [*launcher, "-m", "nextclick", "-q", "train", "--model", "gru4rec", "--preset",
         args.preset, "--param", f"n_epochs={args.epochs}", "--train", args.train,
         "--out", str(out), "--json"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr}")
    record = json.loads(done.stdout)
    return {"train_seconds": round(record["train_seconds"], 1),
            "train_events_per_second": round(record["train_events_per_second"])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--preset", default="rsc15")
    parser.add_argument("--train", default=rsc15_sample()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = train([sys.executable], args, Path(tmp) / "one")
        many = train([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                      str(args.nproc)], args, Path(tmp) / "many")  # fmt: skip
    many["train_events_per_second_per_process"] = round(
        many["train_events_per_second"] / args.nproc
    )
    emit({"benchmark": "distributed_speed", "train": args.train, "preset": args.preset,
          "epochs": args.epochs, "cpu_count": os.cpu_count(), "one_process": one,
          f"{args.nproc}_processes": many,
          "ratio": round(many["train_events_per_second"] / one["train_events_per_second"], 3)},
         args.out)  # fmt: skip


if __name__ == "__main__":
    main()
