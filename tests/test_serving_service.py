"""The session service without a web framework: rounds, waves, compare-and-set, retries."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from nextclick.models import load_model
from nextclick.serving.engine import Chain, Engine, Op
from nextclick.serving.service import Conflict, SessionService, Timings
from nextclick.serving.store import MemoryStore, SessionRecord, new_token


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def gru(model_dirs):
    return Engine.load(model_dirs["gru4rec"]), load_model(model_dirs["gru4rec"])


def pairs(answer) -> list:
    return list(zip(answer.item_ids, answer.scores, strict=True))


def assert_same(got: list, want: list) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)


def test_a_burst_is_one_round_and_every_answer_is_the_models(gru, popular_ids):
    engine, model = gru
    rounds: list[Timings] = []
    burst = [popular_ids[i % 7] for i in range(30)]  # 30 clicks on one session
    others = popular_ids[:20]  # one click on each of 20 sessions

    async def scenario():
        service = SessionService(engine, MemoryStore(), on_round=rounds.append)
        try:
            return await asyncio.gather(
                *(service.click("busy", Op(10, item)) for item in burst),
                *(service.click(f"s{i}", Op(10, item)) for i, item in enumerate(others)),
            )
        finally:
            await service.close()

    answers = run(scenario())
    # Every request of the burst waited in one queue: one round of 20 + 30 requests, in 30
    # waves (the busy session's clicks one after the other).
    assert [t.jobs for t in rounds] == [50]
    for n, answer in enumerate(answers[:30], start=1):
        assert answer.record.clicks == n
        assert_same(pairs(answer), model.recommend_ids(burst[:n], 10))
    for item, answer in zip(others, answers[30:], strict=True):
        assert_same(pairs(answer), model.recommend_ids([item], 10))


def test_a_retried_event_id_is_recorded_once(gru, popular_ids):
    engine, model = gru
    a, b = popular_ids[3], popular_ids[4]

    async def scenario():
        service = SessionService(engine, MemoryStore())
        try:
            first = await service.click("s", Op(5, a, "e1"))
            again = await asyncio.gather(service.click("s", Op(5, a, "e1")),
                                         service.click("s", Op(5, b, "e2")),
                                         service.click("s", Op(5, b, "e2")))  # fmt: skip
            return first, again, await service.session("s")
        finally:
            await service.close()

    first, (retry, second, retry2), record = run(scenario())
    assert (first.duplicate, retry.duplicate, second.duplicate, retry2.duplicate) == (
        False, True, False, True
    )  # fmt: skip
    assert record.items == (a, b) and record.clicks == 2 and record.events == ("e1", "e2")
    assert pairs(retry) == pairs(first)
    assert_same(pairs(retry2), model.recommend_ids([a, b], 5))


def test_two_services_on_one_store_lose_no_click(gru, popular_ids):
    # Two replicas (each its own service and rounds) share one store: their writes to the
    # same session collide, the losers redo their clicks on what the winner wrote.
    engine, model = gru
    clicks = [popular_ids[i % 9] for i in range(24)]

    async def scenario():
        store = MemoryStore()
        one, two = SessionService(engine, store), SessionService(engine, store)

        async def send(service, items):
            out = []
            for item in items:
                out.append(await service.click("shared", Op(3, item)))
            return out

        try:
            await asyncio.gather(send(one, clicks[::2]), send(two, clicks[1::2]))
            return await store.get("shared")
        finally:
            await one.close()
            await two.close()

    record = run(scenario())
    assert record.clicks == 24 and sorted(record.items) == sorted(clicks)
    # The stored state is the model's after the clicks in the order they were recorded.
    state = model.unpack_states([record.state])
    expected = model.score_prefixes([model.item_index_.encode(np.array(record.items))])
    np.testing.assert_allclose(model.scores(state), expected, rtol=1e-5, atol=1e-6)


class CrowdedStore(MemoryStore):
    """A store in which another replica writes every session just before each of our
    writes (as one that keeps winning the race would)."""

    async def put_many(self, writes):
        for session_id, _, _ in writes:
            current = (await self.get_many([session_id]))[0]
            token = None if current is None else current.token
            await super().put_many([(session_id, SessionRecord(token=new_token()), token)])
        return await super().put_many(writes)


def test_a_session_that_keeps_changing_is_a_conflict_after_the_deadline(gru, popular_ids):
    engine, _ = gru

    async def scenario():
        service = SessionService(engine, CrowdedStore(), conflict_seconds=0.05)
        try:
            return await service.click("s", Op(5, popular_ids[0]))
        finally:
            await service.close()

    with pytest.raises(Conflict, match=r"kept changing for 0\.05 s"):
        run(scenario())


def test_stateless_prefixes_and_unknown_items(gru, popular_ids):
    engine, model = gru
    prefixes = [popular_ids[:3], ["nope", popular_ids[5]], []]

    async def scenario():
        service = SessionService(engine, MemoryStore())
        try:
            return await service.recommend(prefixes, 7, exclude_seen=True)
        finally:
            await service.close()

    used, answers = run(scenario())
    assert used is engine
    for prefix, answer in zip(prefixes, answers, strict=True):
        known = [i for i in prefix if engine.lookup(i) is not None]
        assert_same(pairs(answer), model.recommend_ids(known, 7, exclude=known))


def test_engine_waves_equal_one_round_per_click(gru, popular_ids):
    # The same chains answered in one round or click by click give the same lists.
    engine, _ = gru
    ops = [Op(8, popular_ids[i]) for i in (1, 2, 1, 3)]
    together = engine.run([Chain(SessionRecord(), ops)])[0]
    record = SessionRecord()
    for op, answer in zip(ops, together, strict=True):
        (alone,) = engine.run([Chain(record, [op])])[0]
        record = alone.record
        assert alone.item_ids == answer.item_ids
        np.testing.assert_allclose(alone.scores, answer.scores, rtol=1e-6)
    assert together[-1].record.items == tuple(popular_ids[i] for i in (1, 2, 1, 3))
