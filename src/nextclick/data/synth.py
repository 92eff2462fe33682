"""Synthetic click logs, for speed and memory benchmarks at sizes no bundled sample reaches.

Never for accuracy claims: the log has a sequential signal so that models have something to
learn, but its strength is a parameter here, not a property of any shop. Every file written
gets a ``FILE.synthetic.json`` beside it saying so, with the parameters that made it.

The log, for a seed:

- items by popularity rank follow a Zipf-Mandelbrot law, ``P(rank r) ∝ (r + 1 + q)^-zipf``
  (q = ``zipf_offset``: a flatter head; with 37.5k items the top one gets ~0.6% of the clicks
  and the top tenth ~70%, as in RSC15), their ids a random permutation of the ranks;
- session lengths are log-normal (median 2, mean ~3.6 as RSC15's raw clicks; cut at 200);
- the first click of a session is drawn by popularity; each next one repeats an earlier click
  of the session with probability ``p_repeat``, follows the previous item to one of its
  ``n_successors`` fixed successors (themselves drawn by popularity) with probability
  ``p_sequential``, and is a fresh popularity draw otherwise;
- sessions start in order over ``days`` days, their ids increasing with their start; clicks
  within one are 1 to ~300 s apart (times strictly increase within a session).

Formats: ``tsv`` (``SessionId  ItemId  Time``, Unix seconds: what every command reads) and
``yoochoose`` (``yoochoose-clicks.dat``'s ``SessionId,Timestamp,ItemId,Category`` without a
header, for ``nextclick prepare rsc15``). Sessions are generated and written in chunks, so
memory stays bounded whatever ``events``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from nextclick.data.io import atomic_path, label_path
from nextclick.errors import ConfigError

#: Sessions generated (and written) at once: a few tens of MB whatever the log's size.
CHUNK_SESSIONS = 250_000
MAX_LENGTH = 200
#: Day 0 of the log: RSC15's first day, so that the yoochoose format looks like the real one.
START = 1_396_310_400  # 2014-04-01T00:00:00Z
#: Raw yoochoose item ids are 9-digit numbers; synthetic ones are this plus the item index.
YOOCHOOSE_ITEM_BASE = 214_500_000


_ID = pa.int64()
SCHEMAS = {
    "tsv": pa.schema([("SessionId", _ID), ("ItemId", _ID), ("Time", pa.float64())]),
    "yoochoose": pa.schema([("SessionId", _ID), ("Timestamp", pa.string()), ("ItemId", _ID),
                            ("Category", _ID)]),
}  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """What ``nextclick synth`` generates (see the module docstring)."""

    events: int
    items: int
    format: Literal["tsv", "yoochoose"] = "tsv"
    seed: int = 0
    zipf: float = 1.0
    zipf_offset: float = 20.0
    p_repeat: float = 0.15
    p_sequential: float = 0.5
    n_successors: int = 4
    days: int = 183

    def __post_init__(self) -> None:
        for name, ok, expected in (
            ("events", self.events >= 1, "an integer >= 1"),
            ("items", self.items >= 1, "an integer >= 1"),
            ("format", self.format in ("tsv", "yoochoose"), "'tsv' or 'yoochoose'"),
            ("zipf", self.zipf >= 0, "a number >= 0"),
            ("zipf_offset", self.zipf_offset >= 0, "a number >= 0"),
            ("p_repeat", 0 <= self.p_repeat <= 1, "a probability"),
            (
                "p_sequential",
                0 <= self.p_sequential <= 1 - self.p_repeat,
                "a probability <= 1 - p_repeat",
            ),
            ("n_successors", self.n_successors >= 1, "an integer >= 1"),
            ("days", self.days >= 1, "an integer >= 1"),
        ):
            if not ok:
                raise ConfigError(f"synth: {name} must be {expected}, got {getattr(self, name)!r}")


class _World:
    """What is fixed for the whole log: popularity, item ids, successor table."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        weights = (np.arange(cfg.items, dtype=np.float64) + 1.0 + cfg.zipf_offset) ** -cfg.zipf
        self.cumulative = np.cumsum(weights / weights.sum())
        self.item_of_rank = rng.permutation(cfg.items).astype(np.int64)
        ranks = self.popular(rng, cfg.items * cfg.n_successors)
        self.successors = self.item_of_rank[ranks].reshape(cfg.items, cfg.n_successors)

    def popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` popularity ranks."""
        return np.minimum(np.searchsorted(self.cumulative, rng.random(n)), len(self.cumulative) - 1)


def session_lengths(rng: np.random.Generator, events: int) -> Iterator[np.ndarray]:
    """Chunks of session lengths summing to exactly ``events``."""
    left = events
    while left > 0:
        lengths = np.rint(rng.lognormal(np.log(2.0), 1.1, CHUNK_SESSIONS)).astype(np.int64)
        lengths = np.clip(lengths, 1, MAX_LENGTH)
        ends = np.cumsum(lengths)
        if ends[-1] >= left:
            cut = int(np.searchsorted(ends, left))
            lengths = lengths[: cut + 1]
            lengths[-1] -= int(ends[cut] - left)
        left -= int(lengths.sum())
        yield lengths


def session_items(cfg: SynthConfig, world: _World, rng: np.random.Generator,
                  lengths: np.ndarray) -> np.ndarray:  # fmt: skip
    """The clicked item indices of sessions of ``lengths``, concatenated."""
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    items = np.empty(int(lengths.sum()), dtype=np.int64)
    items[starts] = world.item_of_rank[world.popular(rng, len(starts))]
    for t in range(1, int(lengths.max())):
        rows = starts[lengths > t] + t
        u = rng.random(len(rows))
        nxt = world.item_of_rank[world.popular(rng, len(rows))]
        follow = (u >= cfg.p_repeat) & (u < cfg.p_repeat + cfg.p_sequential)
        pick = rng.integers(cfg.n_successors, size=len(rows))
        nxt[follow] = world.successors[items[rows - 1], pick][follow]
        repeat = u < cfg.p_repeat
        back = (rng.random(len(rows)) * t).astype(np.int64) + 1  # 1..t clicks back
        nxt[repeat] = items[(rows - back)[repeat]]
        items[rows] = nxt
    return items


def _chunk_table(cfg: SynthConfig, world: _World, rng: np.random.Generator,
                 lengths: np.ndarray, first_session: int, start: float,
                 span: float) -> pa.Table:  # fmt: skip
    n = len(lengths)
    sessions = np.repeat(np.arange(first_session, first_session + n, dtype=np.int64), lengths)
    begins = start + np.sort(rng.random(n)) * span
    gaps = np.exp(rng.uniform(0.0, np.log(300.0), int(lengths.sum())))
    clock = np.cumsum(gaps)
    offsets = clock - np.repeat(clock[np.cumsum(lengths) - lengths], lengths)
    times = np.round(np.repeat(begins, lengths) + offsets, 3)
    items = session_items(cfg, world, rng, lengths)
    if cfg.format == "tsv":
        return pa.table([sessions, items, times], schema=SCHEMAS["tsv"])
    stamps = pa.array(np.rint(times * 1000).astype(np.int64), type=pa.timestamp("ms", tz="UTC"))
    stamps = pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")
    category = np.zeros(len(items), dtype=np.int64)
    return pa.table([sessions, stamps, items + YOOCHOOSE_ITEM_BASE, category],
                    schema=SCHEMAS["yoochoose"])  # fmt: skip


def synthesize(cfg: SynthConfig, out: str | os.PathLike[str]) -> dict:
    """Write the log of ``cfg`` to ``out`` (and its ``.synthetic.json``); return the label."""
    out = Path(out)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed))
    world = _World(cfg, rng)
    span = cfg.days * 86_400.0
    sep = "\t" if cfg.format == "tsv" else ","
    options = pacsv.WriteOptions(include_header=False, delimiter=sep, quoting_style="none")
    schema = SCHEMAS[cfg.format]
    done = n_sessions = 0
    with atomic_path(out) as tmp:
        if cfg.format == "tsv":  # arrow would quote the names
            tmp.write_text("SessionId\tItemId\tTime\n")
        with (
            pa.OSFile(str(tmp), "ab") as sink,
            pacsv.CSVWriter(sink, schema, write_options=options) as writer,
        ):
            # Each chunk's sessions start in its share of the time span, by events.
            for lengths in session_lengths(rng, cfg.events):
                size = int(lengths.sum())
                writer.write_table(_chunk_table(
                    cfg, world, rng, lengths, n_sessions + 1, START + span * done / cfg.events,
                    span * size / cfg.events,
                ))  # fmt: skip
                done += size
                n_sessions += len(lengths)
        label = {"synthetic": True, "generator": "nextclick synth",
                 "purpose": "speed and memory benchmarks only; never for accuracy claims",
                 "sessions": n_sessions, **asdict(cfg)}  # fmt: skip
        with atomic_path(label_path(out)) as meta:  # the label first: never an unlabelled log
            meta.write_text(json.dumps(label, indent=2) + "\n")
    return label
