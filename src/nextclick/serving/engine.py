"""A loaded model answering many sessions per pass, exactly as its own ``recommend`` does.

The service hands the engine a round of work: for each session its record and the requests
that wait on it, in arrival order (a :class:`Chain`). The engine advances the sessions in
*waves* (the first request of every session, then the second, ...), one model pass per wave,
so a burst of clicks on one session costs one round, not one round each. Every list comes
from :func:`nextclick.ranking.top_k` (ties by lower item index, no item without evidence),
and every raw id maps to an item by :meth:`ItemIndex.lookup`: the service answers what
``model.recommend_ids`` answers after the same clicks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick.models import load_model
from nextclick.models.base import Recommender
from nextclick.ranking import top_k
from nextclick.serving.store import MAX_ITEMS, SessionRecord


@dataclass(frozen=True, slots=True)
class Op:
    """One request's work on a session: record a click (``item``: the raw id, None to only
    look) and list the top ``k`` items, never those in ``exclude`` (item indices).

    A click whose ``event_id`` the session already recorded is a retry: it only looks.
    """

    k: int
    item: Any = None
    event_id: str | None = None
    exclude: frozenset[int] = field(default_factory=frozenset)
    exclude_seen: bool = False


@dataclass(slots=True)
class Chain:
    """A session's record and the operations waiting on it, oldest first."""

    record: SessionRecord
    ops: list[Op]


@dataclass(frozen=True, slots=True)
class Answer:
    """What one operation gets: the session after it and its list, best first."""

    record: SessionRecord
    item_ids: list[Any]
    scores: list[float]
    unknown_item: bool = False  # the clicked id is not in the model: state not advanced
    duplicate: bool = False  # the click's event id was recorded before: nothing recorded


def directory_version(directory: Path) -> str:
    """A short hash of a model directory's files: changes whenever the model does."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Engine:
    """A loaded model directory, answering rounds of chains."""

    def __init__(self, model: Recommender, directory: Path, version: str) -> None:
        if model.item_index_ is None or model.item_support_ is None:
            raise ValueError("the engine needs a fitted model")
        self.model = model
        self.directory = directory
        self.version = version
        self.index = model.item_index_
        self._empty: bytes | None = None

    @classmethod
    def load(cls, directory: str | Path) -> Engine:
        """Load a model directory, and answer one click so that the first request does not
        pay for compiling or loading kernels."""
        directory = Path(directory)
        model = load_model(directory)
        engine = cls(model, directory, directory_version(directory))
        first = engine.index.decode(np.zeros(1, dtype=np.int64))[0].item()
        engine.run([Chain(SessionRecord(), [Op(20, first)])])
        return engine

    @property
    def n_items(self) -> int:
        return len(self.index)

    def lookup(self, item_id: Any) -> int | None:
        """The model's index of a raw item id, or None if unknown (:meth:`ItemIndex.lookup`)."""
        return self.index.lookup(item_id)

    def indices(self, item_ids: Sequence[Any]) -> list[int]:
        """Indices of the ids this model knows, in order (the others are left out)."""
        return [i for i in map(self.index.lookup, item_ids) if i is not None]

    def popular(self, limit: int) -> list[tuple[Any, int]]:
        support = self.model.item_support_
        assert support is not None
        order = np.argsort(-support, kind="stable")[:limit]
        return list(zip(self.index.decode(order).tolist(), support[order].tolist(), strict=True))

    # -- one round ---------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, chains: Sequence[Chain]) -> list[list[Answer]]:
        """Each chain's answers, in order; the last answer's record is the session's new one."""
        records = self._current([chain.record for chain in chains])
        answers: list[list[Answer]] = [[] for _ in chains]
        for wave in range(max((len(chain.ops) for chain in chains), default=0)):
            rows = [c for c, chain in enumerate(chains) if len(chain.ops) > wave]
            ops = [chains[c].ops[wave] for c in rows]
            outcomes = [self._record_click(records[c], op) for c, op in zip(rows, ops, strict=True)]
            self._advance(records, rows, ops, outcomes)
            lists = self._lists([records[c] for c in rows], ops)
            for c, (unknown, duplicate), (ids, scores) in zip(rows, outcomes, lists, strict=True):
                answers[c].append(Answer(records[c], ids, scores, unknown, duplicate))
        return answers

    def _record_click(self, record: SessionRecord, op: Op) -> tuple[bool, bool]:
        """(unknown item, duplicate event) of an operation on ``record``."""
        if op.item is None:
            return False, False
        if op.event_id is not None and op.event_id in record.events:
            return False, True
        return self.lookup(op.item) is None, False

    def _advance(self, records: list[SessionRecord], rows: list[int], ops: list[Op],
                 outcomes: list[tuple[bool, bool]]) -> None:  # fmt: skip
        """Record the wave's clicks: the item in the history, the state one step on."""
        stepping = []
        for c, op, (unknown, duplicate) in zip(rows, ops, outcomes, strict=True):
            if op.item is None or duplicate:
                continue
            record = records[c]
            events = record.events
            if op.event_id is not None:
                events = (*events, op.event_id)[-MAX_ITEMS:]
            items = (*record.items, op.item)
            items = items[-MAX_ITEMS:] if self.model.kept_clicks == "last" else items[:MAX_ITEMS]
            records[c] = replace(record, items=items, clicks=record.clicks + 1,
                                 events=events)  # fmt: skip
            if not unknown:
                stepping.append((c, self.lookup(op.item)))
        if stepping and self.model.keeps_state:
            empty = self._empty_state()
            state = self.model.unpack_states([records[c].state or empty for c, _ in stepping])
            state = self.model.step(state, np.array([i for _, i in stepping], dtype=np.int64))
            for (c, _), blob in zip(stepping, self.model.pack_states(state), strict=True):
                records[c] = replace(records[c], state=blob, version=self.version)

    def _lists(self, records: list[SessionRecord], ops: list[Op]) -> list[tuple[list, list]]:
        """Each record's top list for its operation: (item ids, scores)."""
        scores = self._scores(records)
        floor = self.model.score_floor
        for row, (record, op) in enumerate(zip(records, ops, strict=True)):
            banned = list(op.exclude)
            if op.exclude_seen:
                banned += self.indices(record.items)
            if banned:
                scores[row, banned] = -np.inf
        ks = np.array([min(op.k, self.n_items) for op in ops], dtype=np.int64)
        items, values, lengths = top_k(scores, ks, floor)
        out = []
        for row, n in enumerate(lengths.tolist()):
            out.append((self.index.decode(items[row, :n]).tolist(), values[row, :n].tolist()))
        return out

    def _scores(self, records: Sequence[SessionRecord]) -> np.ndarray:
        model = self.model
        if model.keeps_state:
            empty = self._empty_state()
            return model.scores(model.unpack_states([r.state or empty for r in records]))
        return model.score_prefixes([self.indices(r.items) for r in records])

    def _current(self, records: list[SessionRecord]) -> list[SessionRecord]:
        """The records with states of this model: one made by another version (or none, as
        for the stateless route) is rebuilt from its items, all such records together."""
        records = list(records)
        if not self.model.keeps_state:
            return records
        stale = [i for i, r in enumerate(records) if r.items and r.version != self.version]
        if stale:
            states = self._replay([self.indices(records[i].items) for i in stale])
            for i, state in zip(stale, states, strict=True):
                records[i] = replace(records[i], state=state, version=self.version)
        return records

    def _empty_state(self) -> bytes:
        if self._empty is None:
            self._empty = self.model.pack_states(self.model.init_state(1))[0]
        return self._empty

    def _replay(self, prefixes: Sequence[Sequence[int]]) -> list[bytes]:
        """Packed states after each prefix of item indices (the empty state for none)."""
        out: list[bytes] = [self._empty_state()] * len(prefixes)
        for rows, state in self.model.states_after(prefixes):
            for row, blob in zip(rows, self.model.pack_states(state), strict=True):
                out[row] = blob
        return out
