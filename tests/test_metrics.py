"""Metrics and tie handling on a hand-computed 3-session example, plus property tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextclick.data import ItemIndex, encode_sessions
from nextclick.evaluation import evaluate
from nextclick.evaluation.metrics import coverage, mrr, ndcg, popularity, ranks_from_counts, recall
from nextclick.models.base import Recommender


@dataclass(frozen=True)
class _NoParams:
    pass


class TableModel(Recommender):
    """Scores depend only on the last item, through a fixed table: a model whose ranks are
    easy to work out by hand, so the evaluator (the thing under test) can be checked."""

    name = "table"
    Config = _NoParams

    def __init__(self, table: np.ndarray, support: np.ndarray) -> None:
        super().__init__()
        self.table = np.asarray(table, dtype=np.float64)
        self.item_index_ = ItemIndex(np.arange(len(self.table)))
        self.item_support_ = np.asarray(support, dtype=np.int64)

    def _fit(self, train, *, progress):
        raise NotImplementedError

    def init_state(self, n):
        return np.full(n, -1)

    def step(self, state, items):
        return np.asarray(items).copy()

    def select(self, state, rows):
        return state[rows]

    def scores(self, state, start=0, stop=None):
        return self.table[state, start:stop].copy()


TABLE = [
    [0.1, 0.5, 0.5, 0.2],  # after item 0
    [0.3, 0.3, 0.3, 0.3],  # after item 1: everything tied
    [0.9, 0.1, 0.4, 0.4],  # after item 2
    [0.2, 0.8, 0.6, 0.6],  # after item 3
]
SUPPORT = [10, 5, 0, 20]
# Sessions 0->1->2, 2->3, 3->0->3: five targets.
EVENTS = pd.DataFrame(
    {
        "SessionId": [1, 1, 1, 2, 2, 3, 3, 3],
        "ItemId": [0, 1, 2, 2, 3, 3, 0, 3],
        "Time": [1.0, 2, 3, 1, 2, 1, 2, 3],
    }
)
# Worked out by hand from TABLE: (items strictly above the target, items >= target).
#   after [0] -> 1: 0.5 ties with item 2            gt=0 ge=2
#   after [0,1] -> 2: all 0.3                         gt=0 ge=4
#   after [2] -> 3: 0.9 above, 0.4 ties with item 2   gt=1 ge=3
#   after [3] -> 0: 0.8, 0.6, 0.6 above               gt=3 ge=4
#   after [3,0] -> 3: 0.5, 0.5 above                  gt=2 ge=3
EXPECTED_RANKS = {
    "standard": [1, 1, 2, 4, 3],
    "conservative": [2, 4, 3, 4, 3],
    "median": [1.5, 2.5, 2.5, 4, 3],
}


def _evaluate(ties, **kwargs):
    model = TableModel(TABLE, SUPPORT)
    return evaluate(model, EVENTS, cutoffs=(1, 2, 3), ties=ties, **kwargs)


@pytest.mark.parametrize("ties", ["standard", "conservative", "median"])
def test_ranks_by_tie_mode(ties):
    result = _evaluate(ties)
    np.testing.assert_array_equal(result.ranks, EXPECTED_RANKS[ties])


def test_conservative_metrics_by_hand():
    m = _evaluate("conservative").metrics
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx(1 / 5)
    assert m["recall@3"] == pytest.approx(3 / 5)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 5)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 2 * 0.5) / 5)


def test_standard_and_median_metrics_by_hand():
    s = _evaluate("standard").metrics
    assert s["recall@1"] == pytest.approx(2 / 5)
    assert s["mrr@3"] == pytest.approx((1 + 1 + 1 / 2 + 1 / 3) / 5)
    m = _evaluate("median").metrics
    assert m["recall@2"] == pytest.approx(1 / 5)
    assert m["recall@3"] == pytest.approx(4 / 5)
    assert m["mrr@3"] == pytest.approx((1 / 1.5 + 1 / 2.5 + 1 / 2.5 + 1 / 3) / 5)


def test_coverage_and_popularity_by_hand():
    # Top-2 lists, ties to the lower index: [1,2] [0,1] [0,2] [1,2] [1,2].
    m = _evaluate("conservative").metrics
    assert m["coverage@1"] == pytest.approx(2 / 4)  # items 1 and 0
    assert m["coverage@2"] == pytest.approx(3 / 4)
    # Normalised popularity 10/20, 5/20, 0, 20/20 -> per list .125 .375 .25 .125 .125.
    assert m["popularity@2"] == pytest.approx(0.2)


def test_exclude_seen_by_hand():
    # Seen items cannot be recommended; the last target (3 after [3, 0]) repeats item 3 and
    # so becomes a miss. Conservative ranks: 2, 2, 2, 3, inf.
    result = _evaluate("conservative", exclude_seen=True)
    np.testing.assert_array_equal(result.ranks, [2, 2, 2, 3, np.inf])
    assert result.metrics["recall@2"] == pytest.approx(3 / 5)
    assert result.metrics["recall@3"] == pytest.approx(4 / 5)


def test_unknown_items_are_dropped_and_counted():
    events = pd.concat(
        [EVENTS, pd.DataFrame({"SessionId": [3, 4], "ItemId": [99, 98], "Time": [4.0, 1.0]})]
    )
    model = TableModel(TABLE, SUPPORT)
    from nextclick.data.io import sort_events

    result = evaluate(model, sort_events(events), cutoffs=(3,))
    assert result.n_dropped_unknown == 2
    assert result.n_targets == 5
    # Before dropping: 2 + 1 + 3 targets (session 4 has one event).
    assert result.n_targets_raw == 6
    assert result.metrics_unknown_as_miss["recall@3"] == pytest.approx(3 / 6)
    assert result.metrics_unknown_as_miss["coverage@3"] == result.metrics["coverage@3"]


def test_item_blocks_give_the_same_result():
    whole = _evaluate("conservative")
    blocked = _evaluate("conservative", max_block_bytes=8)  # one item per block
    np.testing.assert_array_equal(whole.ranks, blocked.ranks)
    assert whole.metrics == blocked.metrics


def test_constant_scores_get_zero_recall_under_conservative_ties():
    n_items = 50
    model = TableModel(np.ones((n_items, n_items)), np.ones(n_items))
    rng = np.random.default_rng(0)
    events = pd.DataFrame(
        {
            "SessionId": np.repeat(np.arange(40), 5),
            "ItemId": rng.integers(n_items, size=200),
            "Time": np.tile(np.arange(5.0), 40),
        }
    )
    result = evaluate(model, events, cutoffs=(1, 20))
    assert result.metrics["recall@20"] == 0.0
    assert result.metrics["mrr@20"] == 0.0
    assert set(result.ranks) == {50.0}
    standard = evaluate(model, events, cutoffs=(1,), ties="standard")
    assert standard.metrics["recall@1"] == 1.0  # what an optimistic evaluation would claim


ranks_strategy = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=50
).map(lambda pairs: (np.array([a for a, _ in pairs]), np.array([a + b + 1 for a, b in pairs])))


@given(ranks_strategy, st.sampled_from(["standard", "conservative", "median"]))
def test_metric_properties(counts, ties):
    n_greater, n_greater_equal = counts
    ranks = ranks_from_counts(n_greater, n_greater_equal, ties)
    previous = 0.0
    for k in range(1, 70):
        r = recall(ranks, k)
        assert r >= previous  # Recall@K never decreases in K
        previous = r
        assert 0.0 <= mrr(ranks, k) <= r  # each hit contributes at most 1
        assert mrr(ranks, k) <= ndcg(ranks, k) <= r  # 1/r <= 1/log2(r+1) <= 1


@given(ranks_strategy)
def test_tie_modes_are_ordered(counts):
    n_greater, n_greater_equal = counts
    std = ranks_from_counts(n_greater, n_greater_equal, "standard")
    med = ranks_from_counts(n_greater, n_greater_equal, "median")
    con = ranks_from_counts(n_greater, n_greater_equal, "conservative")
    assert np.all(std <= med) and np.all(med <= con)
    np.testing.assert_array_equal(std, n_greater + 1)
    np.testing.assert_array_equal(con, n_greater_equal)


def test_coverage_and_popularity_ignore_padding():
    top = np.array([[3, -1], [0, 3]])
    assert coverage(top, 2, 4) == pytest.approx(2 / 4)
    support = np.array([4, 0, 0, 2])
    # List 1: item 3 only -> 0.5; list 2: (1 + 0.5) / 2.
    assert popularity(top, 2, support) == pytest.approx((0.5 + 0.75) / 2)


def test_encode_sessions_counts():
    index = ItemIndex(np.array([0, 1, 2, 3]))
    encoded = encode_sessions(EVENTS, index)
    assert encoded.sessions.n_sessions == 3
    assert encoded.n_targets_raw == 5
