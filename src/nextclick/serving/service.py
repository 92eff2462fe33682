"""The session service, without a web framework: click, look, recommend prefixes, reload.

Requests queue; one task runs them in *rounds*. A round takes the waiting requests (up to
``max_batch``) that share the oldest one's model, grouped by session in arrival order; reads
all their sessions from the store at once; lets the :class:`Engine` answer every request in
one pass per wave on a worker thread (so the event loop keeps accepting requests); and writes
every changed session back at once, each as a compare-and-set. A session whose write lost
(another process wrote it in between) has its requests queued again at the front, to be
redone on what the other process wrote, until ``conflict_seconds`` have passed (then 409).

Within a process one round runs at a time and a session is in at most one round, so clicks
of a session are applied once each, in arrival order; across processes the compare-and-set
keeps that promise. A click may carry a client event id: a retried click whose id the
session already recorded only looks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nextclick.errors import NextclickError
from nextclick.serving.engine import Answer, Chain, Engine, Op, directory_version
from nextclick.serving.store import RedisStore, SessionRecord, SessionStore, new_token

log = logging.getLogger(__name__)


class Conflict(NextclickError):
    """A session kept changing under a click for longer than the service waits (409)."""


class BadModel(NextclickError):
    """A model directory given to reload cannot be loaded (400)."""


@dataclass(frozen=True)
class Timings:
    """Where one round's time went, for the metrics."""

    jobs: int
    store_read: float
    model: float
    store_write: float


@dataclass(eq=False)
class _Request:
    session_id: str | None  # None: a stateless prefix
    op: Op
    engine: Engine  # the model the request started with
    future: asyncio.Future[Answer]
    deadline: float  # write conflicts are retried until then
    prefix: SessionRecord | None = None  # the stateless request's session


class SessionService:
    """Sessions over a model and a store (see the module docstring).

    Parameters
    ----------
    engine, store
        The model to serve and where sessions live.
    max_batch
        Most requests per round.
    conflict_seconds
        How long a click is redone when other processes keep writing its session.
    on_round
        Called with each round's :class:`Timings` (the metrics).
    """

    def __init__(
        self,
        engine: Engine,
        store: SessionStore,
        *,
        max_batch: int = 256,
        conflict_seconds: float = 10.0,
        on_round: Callable[[Timings], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_batch = max_batch
        self.conflict_seconds = conflict_seconds
        self.on_round = on_round
        self.on_reload: Callable[[Engine], None] | None = None
        self._queue: deque[_Request] = deque()
        self._runner: asyncio.Task | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextclick-model")

    # -- what the routes call ------------------------------------------------------------------

    async def click(self, session_id: str, op: Op) -> Answer:
        """Record the click ``op.item`` (None: only look) and answer the session's list."""
        return await self._submit(session_id, op, self.engine)

    async def recommend(
        self, prefixes: Sequence[Sequence[Any]], k: int, exclude_seen: bool
    ) -> tuple[Engine, list[Answer]]:
        """Lists after each prefix of raw ids (unknown ids skipped); nothing is stored."""
        engine = self.engine
        answers = await asyncio.gather(*(
            self._submit(None, Op(k, exclude_seen=exclude_seen), engine,
                         SessionRecord(tuple(prefix)))
            for prefix in prefixes
        ))  # fmt: skip
        return engine, list(answers)

    async def session(self, session_id: str) -> SessionRecord | None:
        return await self.store.get(session_id)

    async def end(self, session_id: str) -> bool:
        """Delete a session (a click still queued for it starts a new one)."""
        return await self.store.delete(session_id)

    async def reload(self, directory: str) -> tuple[str, str]:
        """Swap in the model of ``directory``; requests already queued keep their model.

        Returns the (previous, new) versions.
        """
        try:
            new = await asyncio.to_thread(Engine.load, directory)
        except NextclickError as exc:
            raise BadModel(f"cannot load model: {exc}") from None
        old, self.engine = self.engine, new
        if self.on_reload is not None:
            self.on_reload(new)
        log.warning("model %s -> %s (%s)", old.version, new.version, directory)
        return old.version, new.version

    async def follow_reloads(self, store: RedisStore) -> None:
        """Serve the model directory last announced by any replica: read at start and after
        each reconnection, then followed as announced (runs until cancelled)."""
        while True:
            try:
                async for directory in store.model_directories():
                    version = await asyncio.to_thread(directory_version, Path(directory))
                    if version != self.engine.version:
                        await self.reload(directory)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following whatever one reload did
                log.warning("model directory channel: %s", exc)
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        await self.store.close()
        self._worker.shutdown(wait=True)

    # -- rounds --------------------------------------------------------------------------------

    async def _submit(self, session_id: str | None, op: Op, engine: Engine,
                      prefix: SessionRecord | None = None) -> Answer:  # fmt: skip
        loop = asyncio.get_running_loop()
        request = _Request(session_id, op, engine, loop.create_future(),
                           time.monotonic() + self.conflict_seconds, prefix)  # fmt: skip
        self._queue.append(request)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await request.future

    async def _run(self) -> None:
        while self._queue:
            requests = self._take()
            try:
                await self._round(requests)
            except Exception as exc:  # the store is down, or a bug: fail this round only
                _settle(requests, exc)

    def _take(self) -> list[_Request]:
        """The next round: waiting requests of the oldest one's model, whole sessions in
        arrival order; a session one of whose requests must wait waits from there on."""
        engine = self._queue[0].engine
        taken: list[_Request] = []
        left: deque[_Request] = deque()
        held: set[str] = set()
        for request in self._queue:
            session = request.session_id
            if (len(taken) < self.max_batch and request.engine is engine
                    and (session is None or session not in held)):  # fmt: skip
                taken.append(request)
            else:
                left.append(request)
                if session is not None:
                    held.add(session)
        self._queue = left
        return taken

    async def _round(self, requests: list[_Request]) -> None:
        started = time.perf_counter()
        by_session: dict[str, list[_Request]] = {}
        for request in requests:
            if request.session_id is not None:
                by_session.setdefault(request.session_id, []).append(request)
        stored = await self.store.get_many(list(by_session))
        read = time.perf_counter()
        groups = list(by_session.values())
        chains = [Chain(record or SessionRecord(), [r.op for r in group])
                  for record, group in zip(stored, groups, strict=True)]  # fmt: skip
        for request in requests:
            if request.session_id is None:
                groups.append([request])
                chains.append(Chain(request.prefix or SessionRecord(), [request.op]))
        answers = await self._answer(requests[0].engine, chains)
        modelled = time.perf_counter()
        lost = await self._write(by_session, stored, answers)
        for group, chain_answers in zip(groups, answers, strict=True):
            if isinstance(chain_answers, Exception):
                _settle(group, chain_answers)
            elif group[0].session_id in lost:
                self._retry(group)
            else:
                for request, answer in zip(group, chain_answers, strict=True):
                    if not request.future.done():
                        request.future.set_result(answer)
        if self.on_round is not None:
            self.on_round(Timings(len(requests), read - started, modelled - read,
                                  time.perf_counter() - modelled))  # fmt: skip

    async def _write(self, by_session: dict[str, list[_Request]],
                     stored: list[SessionRecord | None],
                     answers: list[list[Answer] | Exception]) -> set[str]:  # fmt: skip
        """Store every session that a click changed; the sessions whose write lost."""
        writes = []
        for session_id, record, chain_answers in zip(by_session, stored, answers, strict=False):
            if isinstance(chain_answers, Exception):
                continue
            new = chain_answers[-1].record
            if new.clicks != (0 if record is None else record.clicks):
                expected = None if record is None else record.token
                writes.append((session_id, replace(new, token=new_token()), expected))
        done = await self.store.put_many(writes)
        return {session_id for ok, (session_id, _, _) in zip(done, writes, strict=True) if not ok}

    async def _answer(self, engine: Engine, chains: list[Chain]
                      ) -> list[list[Answer] | Exception]:  # fmt: skip
        """The engine's answers; if the round fails, each chain alone, so that one bad
        session (say, a corrupt stored state) fails only its own requests."""
        loop = asyncio.get_running_loop()
        try:
            return list(await loop.run_in_executor(self._worker, engine.run, chains))
        except Exception:
            log.exception("a round failed; answering its sessions one by one")
        out: list[list[Answer] | Exception] = []
        for chain in chains:
            try:
                out.extend(await loop.run_in_executor(self._worker, engine.run, [chain]))
            except Exception as exc:
                out.append(exc)
        return out

    def _retry(self, group: list[_Request]) -> None:
        """Queue a session's requests again, first, after a lost compare-and-set."""
        if time.monotonic() > group[0].deadline:
            _settle(group, Conflict(f"session {group[0].session_id!r} kept changing for "
                                    f"{self.conflict_seconds:g} s under this click; retry"))
            return
        self._queue.extendleft(reversed(group))


def _settle(group: list[_Request], exc: Exception) -> None:
    for request in group:
        if not request.future.done():
            request.future.set_exception(exc)
