"""Dataset recipes: raw dataset files -> ``train_full``, ``test``, ``train_tr``, ``train_valid``.

Each recipe reads one public dataset in its original format, applies the filtering and
time split of ``docs/evaluation.md`` ("Datasets and splits") and :func:`prepare` writes the four
splits as ``SessionId, ItemId, Time`` TSVs (Time in seconds, except for ``srgnn-benchmark``
whose sources have no times). The shared rules live in :mod:`.common`, the parsing of each
raw format in its own module.

Example::

    report = prepare("rsc15", [Path("yoochoose-clicks.dat")], Path("data/rsc15"))
    print("\\n".join(report.lines()))
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nextclick.data.io import ITEM, SESSION, label_path, write_events
from nextclick.data.recipes.common import SPLITS, Prepared, Recipe, Removal
from nextclick.data.recipes.coveo import COVEO
from nextclick.data.recipes.diginetica import DIGINETICA
from nextclick.data.recipes.otto import OTTO
from nextclick.data.recipes.rees46 import REES46
from nextclick.data.recipes.retailrocket import RETAILROCKET
from nextclick.data.recipes.srgnn import SRGNN
from nextclick.data.recipes.yoochoose import RSC15, YOOCHOOSE
from nextclick.errors import DataError

__all__ = [
    "RECIPES",
    "SPLITS",
    "PrepareReport",
    "Recipe",
    "Removal",
    "SplitCounts",
    "prepare",
]

log = logging.getLogger(__name__)

#: Recipe name -> :class:`Recipe`, in the order help texts list them.
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (RSC15, YOOCHOOSE, DIGINETICA, RETAILROCKET, REES46, COVEO, OTTO, SRGNN)
}
#: File name of each split inside the output directory.
FILE_NAMES = {name: f"{name}.tsv.gz" for name in SPLITS}


@dataclass(frozen=True)
class SplitCounts:
    """Size of one written split."""

    events: int
    sessions: int
    items: int

    @classmethod
    def of(cls, events: pd.DataFrame) -> SplitCounts:
        return cls(len(events), int(events[SESSION].nunique()), int(events[ITEM].nunique()))


@dataclass(frozen=True)
class PrepareReport:
    """What :func:`prepare` read, removed and wrote.

    Attributes
    ----------
    recipe
        The recipe name.
    raw_events
        Rows read from the raw files (all event types).
    splits
        ``SPLITS`` name -> counts of the written file.
    files
        ``SPLITS`` name -> path of the written file.
    removed
        Every rule that removed events, in the order the rules ran.
    notes
        t_split and boundaries, filter rounds, time unit and similar facts.
    """

    recipe: str
    raw_events: int
    splits: dict[str, SplitCounts]
    files: dict[str, Path]
    removed: tuple[Removal, ...]
    notes: tuple[str, ...]

    def lines(self) -> list[str]:
        """A human-readable summary, one string per line."""
        out = [f"recipe {self.recipe}: {self.raw_events:,} raw events"]
        if self.removed:
            out.append("removed:")
            width = max(len(r.rule) for r in self.removed)
            for r in self.removed:
                sessions = "" if r.sessions is None else f" ({r.sessions:,} sessions)"
                out.append(f"  {r.rule:<{width}}  {r.events:>12,} events{sessions}")
        out.append(f"  {'split':<12} {'events':>12} {'sessions':>12} {'items':>10}  file")
        for name, counts in self.splits.items():
            out.append(
                f"  {name:<12} {counts.events:>12,} {counts.sessions:>12,} {counts.items:>10,}"
                f"  {self.files[name]}"
            )
        out += [f"note: {note}" for note in self.notes]
        return out


def prepare(
    recipe: str,
    raw: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
) -> PrepareReport:
    """Run a recipe on raw dataset files and write its four splits into ``out``.

    Parameters
    ----------
    recipe
        A key of :data:`RECIPES`.
    raw
        The raw files, in the order the recipe's summary lists them (gzip is detected).
    out
        Output directory (created if missing). Receives ``train_full.tsv.gz``,
        ``test.tsv.gz``, ``train_tr.tsv.gz`` and ``train_valid.tsv.gz`` with the columns
        ``SessionId, ItemId, Time``, sorted by session, then time. Existing files of these
        names are replaced.

    Returns
    -------
    PrepareReport

    Raises
    ------
    DataError
        For an unknown recipe, a wrong number of raw files, a bad raw file (one line naming
        file, line and column) or when filtering leaves ``train_full`` or ``test`` empty.
        Nothing is written then: the splits are computed completely first, and the files
        are written under temporary names and renamed into place only when all four are
        written. (An empty ``train_tr`` or ``train_valid``, which small samples can give,
        is written with a header only, and the report's notes say so.)
    """
    spec = RECIPES.get(recipe)
    if spec is None:
        raise DataError(f"unknown recipe {recipe!r}; known recipes: {', '.join(RECIPES)}")
    paths = [Path(p) for p in raw]
    if len(paths) < spec.min_files or (spec.max_files and len(paths) > spec.max_files):
        if spec.max_files is None:
            wanted = f"{spec.min_files} or more"
        elif spec.max_files == spec.min_files:
            wanted = f"{spec.min_files}"
        else:
            wanted = f"{spec.min_files} to {spec.max_files}"
        raise DataError(
            f"recipe {recipe} takes {wanted} raw file(s) ({spec.summary}), got {len(paths)}"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    prepared = spec.run(paths)
    for name in ("train_full", "test"):
        if prepared.splits[name].empty:
            raise DataError(
                f"recipe {recipe}: {name} is empty after filtering and splitting; the raw "
                "data is too small or covers too short a time for this recipe"
            )
    # An empty tuning pair does not spoil the final one (small samples): write it, and say so.
    empty = [name for name in ("train_tr", "train_valid") if prepared.splits[name].empty]
    warnings = tuple(f"WARNING: {name} is empty, so it cannot be used for tuning" for name in empty)
    label = _synthetic_label(paths)
    files = _write(prepared, out, label)
    synthetic = () if label is None else (
        "SYNTHETIC input (nextclick synth): for speed and memory benchmarks only, never for "
        "accuracy claims; each split has its .synthetic.json label",
    )  # fmt: skip
    notes = prepared.notes + warnings + synthetic
    return PrepareReport(
        recipe=recipe,
        raw_events=prepared.raw_events,
        splits={name: SplitCounts.of(prepared.splits[name]) for name in SPLITS},
        files=files,
        removed=prepared.removed,
        notes=notes,
    )


def _write(prepared: Prepared, out: Path, label: dict | None) -> dict[str, Path]:
    """Write all splits (and their synthetic labels) into a staging directory inside ``out``,
    then rename them in place, labels first: a synthetic split is never seen unlabelled."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / FILE_NAMES[name] for name in SPLITS}
    with tempfile.TemporaryDirectory(prefix=".prepare-", dir=out) as staging:
        for name in SPLITS:
            write_events(prepared.splits[name], Path(staging) / FILE_NAMES[name])
            if label is not None:
                text = json.dumps({**label, "split": name}, indent=2) + "\n"
                label_path(Path(staging) / FILE_NAMES[name]).write_text(text)
        for name in SPLITS:
            if label is not None:
                os.replace(label_path(Path(staging) / FILE_NAMES[name]), label_path(files[name]))
            os.replace(Path(staging) / FILE_NAMES[name], files[name])
            if label is None:  # a stale label of an earlier synthetic split
                label_path(files[name]).unlink(missing_ok=True)
    for name in SPLITS:
        log.info("wrote %s (%d events)", files[name], len(prepared.splits[name]))
    return files


def _synthetic_label(raw: list[Path]) -> dict | None:
    """The label of the first synthetic raw file (``nextclick synth``), naming every input."""
    for path in raw:
        if label_path(path).exists():
            label = json.loads(label_path(path).read_text())
            return {**label, "derived_from": [str(p) for p in raw]}
    return None
