"""A loaded model serving sessions: one click or one look at a time, many sessions per pass.

A session is a :class:`SessionRecord`: the raw ids of its recent clicks and, for models that
keep a state (GRU4Rec's hidden vectors), that state as bytes, tagged with the model version
that made it; raw ids, not indices, so that a session survives a model with another catalogue.
:meth:`Engine.run` takes a batch of jobs (a session, maybe a new click, what to return) and
answers all of them with one pass through the model; :class:`MicroBatcher` gathers the jobs
of concurrent requests into such batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick.models import load_model
from nextclick.models.base import Recommender

#: Clicks a session keeps (its recent history, replayed after a model reload).
MAX_ITEMS = 50


@dataclass(frozen=True)
class SessionRecord:
    """What the service keeps of one session."""

    items: tuple[Any, ...] = ()  # raw ids of the recent clicks, oldest first
    state: bytes = b""  # the model's packed state after ``items`` (models with keeps_state)
    version: str = ""  # model version that made ``state``
    clicks: int = 0  # clicks recorded, unknown items included
    token: str = ""  # changes with every write: what a compare-and-set compares

    def to_bytes(self) -> bytes:
        header = json.dumps([list(self.items), self.version, self.clicks, self.token])
        return header.encode() + b"\n" + self.state

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionRecord:
        header, _, state = data.partition(b"\n")
        items, version, clicks, token = json.loads(header)
        return cls(tuple(items), state, version, clicks, token)


@dataclass(frozen=True)
class Job:
    """One request's work: record ``click`` (an item index; an unknown item is recorded as
    ``unknown``, its raw id, without advancing the state; neither: just look) in ``record``
    and return its top ``k`` items, never those in ``exclude``."""

    record: SessionRecord
    click: int | None
    k: int
    exclude: frozenset[int] = field(default_factory=frozenset)
    exclude_seen: bool = False
    unknown: Any = None


@dataclass(frozen=True)
class Answer:
    record: SessionRecord
    items: list[tuple[Any, float]]  # (item id, score), best first


def directory_version(directory: Path) -> str:
    """A short hash of a model directory's files: changes whenever the model does."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Engine:
    """A loaded model directory, answering batches of jobs."""

    def __init__(self, model: Recommender, directory: Path, version: str) -> None:
        self.model = model
        self.directory = directory
        self.version = version
        index = model.item_index_
        assert index is not None and model.item_support_ is not None
        self.ids = index.ids
        self._numeric_ids = bool(np.issubdtype(self.ids.dtype, np.integer))
        self._lookup = {item_id: i for i, item_id in enumerate(self.ids.tolist())}
        self._empty: bytes | None = None

    @classmethod
    def load(cls, directory: str | Path) -> Engine:
        directory = Path(directory)
        model = load_model(directory)
        return cls(model, directory, directory_version(directory))

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def item_index(self, item_id: Any) -> int | None:
        """The model's index of a raw item id (an int or a string), or None if unknown."""
        if self._numeric_ids:
            try:
                item_id = int(item_id)
            except (TypeError, ValueError):
                return None
        else:
            item_id = str(item_id)
        return self._lookup.get(item_id)

    def item_id(self, index: int) -> Any:
        return self.ids[index].item()

    def indices(self, item_ids: Sequence[Any]) -> list[int]:
        """Indices of the ids this model knows, in order (the others are left out)."""
        found = (self._lookup.get(i) for i in item_ids)
        return [i for i in found if i is not None]

    def popular(self, limit: int) -> list[tuple[Any, int]]:
        support = self.model.item_support_
        assert support is not None
        order = np.argsort(-support, kind="stable")[:limit]
        return [(self.item_id(i), int(support[i])) for i in order]

    # -- one batch ---------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, jobs: Sequence[Job]) -> list[Answer]:
        """Advance every job's session by its click, then score all of them at once."""
        records = self._current([job.record for job in jobs])
        clicked = [i for i, job in enumerate(jobs) if job.click is not None]
        model = self.model
        if model.keeps_state:
            blobs = [r.state for r in records]
            if clicked:
                empty = self._empty_state()
                state = model.unpack_states([blobs[i] or empty for i in clicked])
                state = model.step(state, np.array([jobs[i].click for i in clicked]))
                for i, blob in zip(clicked, model.pack_states(state), strict=True):
                    blobs[i] = blob
            records = [
                replace(r, state=b, version=self.version)
                for r, b in zip(records, blobs, strict=True)
            ]
        for i, job in enumerate(jobs):
            if job.click is not None or job.unknown is not None:
                record = records[i]
                item = job.unknown if job.click is None else self.item_id(job.click)
                records[i] = replace(record, items=(*record.items, item)[-MAX_ITEMS:],
                                     version=self.version, clicks=record.clicks + 1)  # fmt: skip
        scores = self._scores(records)
        k_max = max(min(job.k, self.n_items) for job in jobs)
        for row, (job, record) in enumerate(zip(jobs, records, strict=True)):
            banned = set(job.exclude)
            if job.exclude_seen:
                banned.update(self.indices(record.items))
            if banned:
                scores[row, np.fromiter(banned, dtype=np.int64)] = -np.inf
        # One partial sort for the whole batch, then each row's top k by score, ties by index.
        if k_max < self.n_items:
            top = np.argpartition(-scores, k_max - 1, axis=1)[:, :k_max]
        else:
            top = np.broadcast_to(np.arange(self.n_items), scores.shape)
        answers = []
        for row, (job, record) in enumerate(zip(jobs, records, strict=True)):
            candidates = top[row]
            values = scores[row, candidates].astype(np.float64)
            order = np.lexsort((candidates, -values))
            order = order[np.isfinite(values[order])][: job.k]
            items = [(self.item_id(c), float(v))
                     for c, v in zip(candidates[order].tolist(), values[order].tolist(),
                                     strict=True)]  # fmt: skip
            answers.append(Answer(record, items))
        return answers

    def _current(self, records: list[SessionRecord]) -> list[SessionRecord]:
        """The records with states of this model: one made by another version (or none, as
        for the stateless route) is rebuilt from its items, all such records together."""
        if not self.model.keeps_state:
            return records
        stale = [i for i, r in enumerate(records) if r.items and r.version != self.version]
        if not stale:
            return records
        states = self._replay([self.indices(records[i].items) for i in stale])
        records = list(records)
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

    def _scores(self, records: Sequence[SessionRecord]) -> np.ndarray:
        model = self.model
        if model.keeps_state:
            empty = self._empty_state()
            return model.scores(model.unpack_states([r.state or empty for r in records]))
        out = np.empty((len(records), self.n_items), dtype=np.float32)
        prefixes = [self.indices(r.items) for r in records]
        started = [i for i, p in enumerate(prefixes) if p]
        if started:
            out[started] = model.score_prefixes([prefixes[i] for i in started])
        if len(started) < len(records):
            fresh = [i for i, p in enumerate(prefixes) if not p]
            out[fresh] = model.scores(model.init_state(1))
        return out


class MicroBatcher:
    """Runs the jobs of concurrent requests through the model together.

    Jobs wait while the model works; when it is free it takes every waiting job (up to
    ``max_batch``) of the same engine in one :meth:`Engine.run`, on a worker thread so that
    the event loop keeps accepting requests.
    """

    def __init__(self, max_batch: int = 128, on_batch: Callable[[int], None] | None = None) -> None:
        self.max_batch = max_batch
        self.on_batch = on_batch  # called with the number of jobs of each pass
        self._waiting: list[tuple[Engine, Job, asyncio.Future[Answer]]] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextclick-model")
        self._drainer: asyncio.Task | None = None

    async def submit(self, engine: Engine, job: Job) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((engine, job, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            engine = self._waiting[0][0]
            batch = [w for w in self._waiting if w[0] is engine][: self.max_batch]
            taken = {id(w[2]) for w in batch}
            self._waiting = [w for w in self._waiting if id(w[2]) not in taken]
            try:
                answers = await loop.run_in_executor(
                    self._worker, engine.run, [job for _, job, _ in batch]
                )
            except Exception:
                # One bad job (say, a corrupt stored state) must not fail the others:
                # run them one by one, failing only those that fail alone.
                answers = []
                for _, job, future in batch:
                    try:
                        answers.extend(await loop.run_in_executor(self._worker, engine.run, [job]))
                    except Exception as exc:
                        answers.append(None)
                        if not future.done():
                            future.set_exception(exc)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if answer is not None and not future.done():
                    future.set_result(answer)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
