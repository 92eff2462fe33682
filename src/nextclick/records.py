"""Run records: what every ``train``, ``run`` and ``tune`` did, for reports to read.

A record is a directory ``RUN_DIR/YYYYmmdd-HHMMSS-KIND-LABEL/`` holding ``record.json``: the
command, the resolved configuration, the metrics (also as curves over K = 1..20), the
per-epoch history, a tuning study's trials, and the environment (versions, device, seed,
git commit). It is separate from the model directory that ``--out`` writes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nextclick import __version__
from nextclick.data.io import atomic_path
from nextclick.evaluation import EvalResult

RECORD = "record.json"
CURVE_KS = tuple(range(1, 21))


def curves(result: EvalResult) -> dict[str, list[float]]:
    """Recall@K and MRR@K for K = 1..20, from the evaluation's ranks."""
    ranks = np.asarray(result.ranks, dtype=np.float64)
    n = max(len(ranks), 1)
    recall = [float((ranks <= k).sum() / n) for k in CURVE_KS]
    mrr = [float(np.where(ranks <= k, 1.0 / ranks, 0.0).sum() / n) for k in CURVE_KS]
    return {"k": list(CURVE_KS), "recall": recall, "mrr": mrr}


def environment(device: str = "cpu", seed: int | None = None) -> dict[str, Any]:
    import numba
    import pandas
    import torch

    return {
        "nextclick": __version__, "python": platform.python_version(),
        "platform": platform.platform(), "torch": torch.__version__, "numpy": np.__version__,
        "pandas": pandas.__version__, "numba": numba.__version__, "device": device,
        "cpu_count": os.cpu_count(), "seed": seed, "git_commit": git_commit(),
    }  # fmt: skip


@functools.cache
def git_commit() -> str | None:
    """The checkout's HEAD, read once per process: a record of a long study names the code it
    started with, even if the checkout moves on meanwhile."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def config_dict(model: Any) -> dict[str, Any]:
    return {
        f.name: (list(v) if isinstance(v := getattr(model.config, f.name), tuple) else v)
        for f in dataclasses.fields(model.config)
    }


def write_record(run_dir: str | os.PathLike[str], kind: str, label: str,
                 record: dict[str, Any]) -> Path:  # fmt: skip
    """Write ``record`` (plus kind, time and command) as a new run directory; its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)
    base = Path(run_dir) / f"{stamp}-{kind}-{safe}"
    base.parent.mkdir(parents=True, exist_ok=True)
    # Workers of one study can end in the same second: an exclusive mkdir claims the name.
    for n in itertools.count(1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    body = {"kind": kind, "label": label, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": sys.argv, **record}  # fmt: skip
    try:
        with atomic_path(path / RECORD) as tmp:
            tmp.write_text(json.dumps(body, indent=2, default=_plain) + "\n")
    except BaseException:
        path.rmdir()  # no half-made record for a report to trip on
        raise
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_record(directory: str | os.PathLike[str]) -> dict[str, Any]:
    from nextclick.errors import DataError

    path = Path(directory) / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{directory}: not a run record (no {RECORD})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
