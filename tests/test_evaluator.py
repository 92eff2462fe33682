"""The batched evaluator against an independent one-session-at-a-time evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.evaluation import evaluate
from nextclick.models import MODELS, create_model
from nextclick.models.neural import TorchRecommender

DATA = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"
CUTOFFS = (1, 5, 10, 20)


@pytest.fixture(scope="module")
def rsc15():
    train = read_events(DATA / "yoochoose-clicks-100k_train_full.txt.gz")
    test = read_events(DATA / "yoochoose-clicks-100k_test.txt.gz")
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    return encode_sessions(train, index).sessions, index, test


def brute_force(model, sessions, k_max):
    """Ranks (standard, conservative) and top lists, one session at a time.

    Plain comparisons over the model's scores; ties in a top list go to the lower index; an
    item at or below the model's no-evidence score is never listed, and as a target it is a
    miss (rank infinity) in every tie mode.
    """
    floor = model.score_floor
    ranks_std, ranks_con, tops = [], [], []
    for s in range(sessions.n_sessions):
        items = sessions.session(s)
        if len(items) < 2:
            continue
        all_scores = model.score_prefixes([items[: t + 1] for t in range(len(items) - 1)])
        for t in range(len(items) - 1):
            scores = all_scores[t]
            target = scores[items[t + 1]]
            listed = target > floor
            ranks_std.append(1 + int(np.count_nonzero(scores > target)) if listed else np.inf)
            ranks_con.append(int(np.count_nonzero(scores >= target)) if listed else np.inf)
            order = np.lexsort((np.arange(len(scores)), -scores))
            order = order[scores[order] > floor][:k_max]
            tops.append(np.pad(order, (0, k_max - len(order)), constant_values=-1))
    return np.array(ranks_std, float), np.array(ranks_con, float), np.array(tops)


def reference_metrics(ranks, tops, support, n_items):
    out = {}
    for k in CUTOFFS:
        hit = ranks <= k
        out[f"recall@{k}"] = hit.mean()
        out[f"mrr@{k}"] = np.where(hit, 1 / ranks, 0).mean()
        out[f"ndcg@{k}"] = np.where(hit, 1 / np.log2(ranks + 1), 0).mean()
        lists = [[i for i in row if i >= 0] for row in tops[:, :k].tolist()]
        out[f"coverage@{k}"] = len({i for row in lists for i in row}) / n_items
        out[f"popularity@{k}"] = np.mean(
            [np.mean(support[row]) / support.max() for row in lists if row]
        )
    return out


# The baselines score in float64 row by row, so batched and one-by-one ranks agree exactly;
# the torch models' float32 matrix products may differ in the last bit with the batch shape
# (their batched = one-by-one check, with a tolerance, is in test_models).
BASELINES = sorted(name for name, cls in MODELS.items() if not issubclass(cls, TorchRecommender))


@pytest.mark.parametrize("name", BASELINES)
def test_batched_evaluator_matches_brute_force(rsc15, name):
    sessions, index, test = rsc15
    model = create_model(name, {"n_iterations": 2} if name == "bprmf" else {})
    model.fit(sessions, index)
    encoded = encode_sessions(test, index)
    ranks_std, ranks_con, tops = brute_force(model, encoded.sessions, max(CUTOFFS))
    # Targets come out in the same order: session by session, click by click.
    standard = evaluate(model, encoded, cutoffs=CUTOFFS, ties="standard")
    conservative = evaluate(model, encoded, cutoffs=CUTOFFS, ties="conservative")
    median = evaluate(model, encoded, cutoffs=CUTOFFS, ties="median")
    np.testing.assert_array_equal(standard.ranks, ranks_std)
    np.testing.assert_array_equal(conservative.ranks, ranks_con)
    np.testing.assert_array_equal(median.ranks, (ranks_std + ranks_con) / 2)
    expected = reference_metrics(ranks_con, tops, model.item_support_, len(index))
    assert conservative.metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert conservative.metrics[key] == pytest.approx(value, abs=1e-9), key


def test_rsc15_sample_counts(rsc15):
    sessions, index, test = rsc15
    # The bundled sample: 70,278 training events in 17,794 sessions over 2,933 items;
    # 13,568 test events in 3,416 sessions, every test item known.
    assert (sessions.n_events, sessions.n_sessions, len(index)) == (70278, 17794, 2933)
    encoded = encode_sessions(test, index)
    assert encoded.n_dropped_unknown == 0
    assert encoded.n_targets_raw == 13568 - 3416


def test_small_batches_and_blocks_match_defaults(rsc15):
    sessions, index, test = rsc15
    model = create_model("vsknn").fit(sessions, index)
    default = evaluate(model, test)
    small = evaluate(model, test, batch_size=7, max_block_bytes=64 << 10)
    np.testing.assert_array_equal(default.ranks, small.ranks)
    assert default.metrics == small.metrics


THREADS_SCRIPT = """
import sys
import numpy as np, numba, torch
from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.evaluation import evaluate
from nextclick.models import create_model
from nextclick.ranking import TopK
if sys.argv[1] == "set":
    torch.set_num_threads(1)
train = read_events(sys.argv[2])
test = read_events(sys.argv[3])
index = ItemIndex.from_items(train["ItemId"].to_numpy())
model = create_model("vsknn").fit(encode_sessions(train, index).sessions, index)
evaluate(model, test.head(2000))
top = TopK(2, 3)
top.push(np.random.default_rng(0).random((2, 1 << 20)))
top.result()
print(torch.get_num_threads(), numba.get_num_threads())
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every count is 1")
@pytest.mark.parametrize("how", ["env", "set"])
def test_numba_kernels_keep_torch_to_its_one_thread(how):
    """numba's OpenMP layer shares torch's runtime: its first parallel launch used to set
    torch's thread count to the core count, so a one-thread run trained on every core after
    its first evaluation. The kNN scoring, the evaluator and the top-K kernels all ran here."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if how == "env" else {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, how,
         str(DATA / "yoochoose-clicks-100k_train_full.txt.gz"),
         str(DATA / "yoochoose-clicks-100k_test.txt.gz")],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["1", "1"]
