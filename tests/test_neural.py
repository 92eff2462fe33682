"""The item-list neural models (NARM, STAMP, SASRec): the checks of FOLLOWUPS.md that catch
wrong implementations — padding, row independence, causality, masks, clipping, the losses,
the schedule — and a pattern each model must learn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from nextclick.data import ItemIndex, encode_sessions
from nextclick.data.batching import equal_length_batches, padded_rows, prefix_batches
from nextclick.data.io import ITEM, SESSION, TIME
from nextclick.errors import ConfigError
from nextclick.models import create_model, load_model
from nextclick.training import losses
from nextclick.training.checkpoint import CheckpointError

NEURAL = ["narm", "stamp", "sasrec", "srgnn", "gcegnn"]
SMALL = {
    "narm": {"embedding_dim": 16, "hidden_size": 24},
    "stamp": {"embedding_dim": 24},
    "sasrec": {"hidden_size": 24, "n_heads": 2, "max_len": 12},
    "srgnn": {"hidden_size": 24},
    "gcegnn": {"hidden_size": 24, "n_iter": 2, "n_sample": 4},
}


def sessions_frame(sessions: list[list[int]]) -> pd.DataFrame:
    rows = [(s, item, t) for s, items in enumerate(sessions) for t, item in enumerate(items)]
    return pd.DataFrame(rows, columns=[SESSION, ITEM, TIME])


def fitted(name: str, sessions: list[list[int]], **params):
    events = sessions_frame(sessions)
    index = ItemIndex.from_items(events[ITEM].to_numpy())
    model = create_model(name, {**SMALL[name], "n_epochs": 1, "batch_size": 16, **params})
    return model.fit(encode_sessions(events, index).sessions, index), index


@pytest.fixture(scope="module", params=NEURAL)
def model(request):
    rng = np.random.default_rng(3)
    sessions = [list(rng.integers(0, 30, size=rng.integers(2, 9))) for _ in range(300)]
    trained, _ = fitted(request.param, sessions, n_epochs=2)
    return trained


def encode(model, rows: list[list[int]]) -> torch.Tensor:
    """The network's query vectors of item-index rows, padded as the model pads."""
    lengths = np.array([len(r) for r in rows])
    flat = np.concatenate([np.asarray(r) for r in rows])
    ends = np.cumsum(lengths)
    items = padded_rows(flat, ends, lengths, model.padding_side)
    with torch.no_grad():
        return model.network_.encode(torch.as_tensor(items), torch.as_tensor(lengths))


def test_a_padded_batch_equals_one_by_one(model):
    rows = [[3], [4, 5, 6, 7, 8, 9], [1, 2], [7, 7, 7], [0, 11, 12, 13]]
    together = encode(model, rows)
    alone = torch.cat([encode(model, [r]) for r in rows])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_rows_never_see_each_other(model):
    rows = [[3, 4, 5], [9, 1], [2, 2, 8, 6]]
    base = encode(model, rows)
    # Shuffled, and other rows replaced by longer prefixes of the same session.
    shuffled = encode(model, [rows[2], rows[0], rows[1]])
    torch.testing.assert_close(shuffled, base[[2, 0, 1]], rtol=1e-5, atol=1e-6)
    longer = encode(model, [[*rows[0], 7, 1, 0], rows[1], [*rows[2], 4]])
    torch.testing.assert_close(longer[1], base[1], rtol=1e-5, atol=1e-6)


def test_exactly_n_score_columns_and_the_pad_never_ranked(model):
    n = model.n_items
    scores = model.score_prefixes([[0, 1], [5]])
    assert scores.shape == (2, n)
    items, _ = model.recommend([0, 1], k=n + 5)
    assert len(items) == n and sorted(items.tolist()) == list(range(n))


def test_save_load_gives_identical_scores(model, tmp_path):
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    prefixes = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
    np.testing.assert_array_equal(loaded.score_prefixes(prefixes), model.score_prefixes(prefixes))


@pytest.fixture(scope="module")
def small_sessions() -> list[list[int]]:
    rng = np.random.default_rng(4)
    return [list(rng.integers(0, 20, size=rng.integers(2, 7))) for _ in range(100)]


def test_sasrec_is_causal(small_sessions):
    net = fitted("sasrec", small_sessions)[0].network_
    a = torch.tensor([[0, 4, 5, 6, 7]])
    b = torch.tensor([[0, 4, 5, 9, 1]])  # differs after position 2
    lengths = torch.tensor([4])
    with torch.no_grad():
        out_a, out_b = net.sequence(a, lengths), net.sequence(b, lengths)
    torch.testing.assert_close(out_a[:, :3], out_b[:, :3])
    assert not torch.allclose(out_a[:, 3:], out_b[:, 3:])


def test_narm_attention_sums_to_one_over_real_positions(small_sessions):
    net = fitted("narm", small_sessions)[0].network_
    items = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    lengths = torch.tensor([3, 5])
    with torch.no_grad():
        states = net.recur(net.embedding(items), lengths)  # packed: the rows differ in length
        last = states[torch.arange(2), lengths - 1]
        real = torch.arange(5)[None, :] < lengths[:, None]
        alpha = net.attention(states, last, real)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(2))
    assert (alpha[0, 3:] == 0).all() and (alpha[0, :3] > 0).all()


def test_prefix_batches_keep_the_last_or_the_first_clicks():
    # One session of 5 items, its 4 prefixes cut to 2 clicks; rows hold indices + 1.
    index = ItemIndex.from_items(np.arange(5))
    session = encode_sessions(sessions_frame([[0, 1, 2, 3, 4]]), index).sessions
    expected = {
        "last": {2: (1,), 3: (1, 2), 4: (2, 3), 5: (3, 4)},
        "first": {2: (1,), 3: (1, 2), 4: (1, 2), 5: (1, 2)},
    }
    for keep, rows in expected.items():
        (batch,) = prefix_batches(session, 8, 2, np.random.default_rng(0), keep=keep)
        pairs = zip(batch.items, batch.targets, strict=True)
        got = {int(t): tuple(int(i) for i in row if i) for row, t in pairs}
        assert got == rows


def test_equal_length_batches_step_through_each_chunks_prefixes_without_pads():
    sessions = [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9], [0, 2, 4, 6]]
    index = ItemIndex.from_items(np.arange(10))
    data = encode_sessions(sessions_frame(sessions), index).sessions
    batches = list(equal_length_batches(data, 8, 50, np.random.default_rng(0)))
    got = [(sorted(tuple(int(i) for i in row) for row in b.items), sorted(b.targets.tolist()))
           for b in batches]  # fmt: skip
    by_length = {  # per session length, its chunk's batches in order (rows hold indices + 1)
        2: [([(4,), (9,)], [5, 10])],
        3: [([(1,), (6,)], [2, 7]), ([(1, 2), (6, 7)], [3, 8])],
        4: [([(1,)], [3]), ([(1, 3)], [5]), ([(1, 3, 5)], [7])],
    }
    assert sorted(got) == sorted(b for chunk in by_length.values() for b in chunk)
    for chunk in by_length.values():  # each chunk's steps are consecutive, shortest first
        first = got.index(chunk[0])
        assert got[first : first + len(chunk)] == chunk
    assert all((b.lengths == b.items.shape[1]).all() for b in batches)
    # One session per chunk; the length-4 session's third prefix cut to its last 2 clicks.
    batches = list(equal_length_batches(data, 1, 2, np.random.default_rng(0)))
    rows = sorted((tuple(int(i) for i in b.items[0]), int(b.targets[0])) for b in batches)
    assert len(batches) == 9 and all(len(b) == 1 for b in batches)
    assert ((3, 5), 7) in rows and ((1, 3, 5), 7) not in rows


def test_narm_trains_on_the_clicks_its_truncation_keeps():
    index = ItemIndex.from_items(np.arange(5))
    session = encode_sessions(sessions_frame([[0, 1, 2, 3, 4]]), index).sessions
    model = create_model("narm", {"truncation": "first", "max_len": 2, "batch_size": 8})
    (batch,) = model._batches(session, np.random.default_rng(0))
    assert sorted(tuple(int(i) for i in row if i) for row in batch.items) == [
        (1,), (1, 2), (1, 2), (1, 2)
    ]


@pytest.mark.parametrize(("truncation", "read"), [("last", [1, 2]), ("first", [0, 1])])
def test_narm_scores_the_clicks_its_truncation_keeps(small_sessions, truncation, read):
    model, _ = fitted("narm", small_sessions, max_len=2, truncation=truncation)
    np.testing.assert_array_equal(model.scores(np.array([[3, 4, 5]])),
                                  model.scores(np.array([[3, 4, 5][i] for i in read])[None]))


def test_stamp_clips_looked_up_vectors_not_the_stored_rows():
    model, _ = fitted("stamp", [[0, 1, 2], [2, 3], [1, 3, 0]], emb_max_norm=1.0)
    net = model.network_
    with torch.no_grad():
        net.embedding.weight[1:] = 3.0  # rows far longer than the clip norm (14.7)
    stored = net.embedding.weight.detach().clone()
    looked_up = net._lookup(torch.tensor([[1, 2, 0]]))
    norms = looked_up.norm(dim=-1)[0]
    torch.testing.assert_close(norms[:2], torch.ones(2))
    assert norms[2] == 0.0  # the pad
    assert torch.equal(net.embedding.weight, stored)
    assert torch.equal(net.item_vectors(), stored[1:])  # scoring uses the unclipped rows


def test_gbce_at_t0_is_bce_and_beta_of_the_spec():
    assert losses.gbce_beta(256, 10_001, 0.75) == pytest.approx(0.2692, abs=5e-5)
    assert losses.gbce_beta(256, 10_001, 0.0) == 1.0
    generator = torch.Generator().manual_seed(0)
    positive = torch.randn(7, generator=generator)
    negatives = torch.randn(7, 5, generator=generator)
    bce = (torch.nn.functional.softplus(-positive)
           + torch.nn.functional.softplus(negatives).sum(dim=1)) / 6  # fmt: skip
    torch.testing.assert_close(losses.gbce(positive, negatives, 1000, 0.0), bce.mean())
    # t = 1: the positive term is weighted by beta = alpha = 5/999.
    beta = 5 / 999
    expected = (beta * torch.nn.functional.softplus(-positive)
                + torch.nn.functional.softplus(negatives).sum(dim=1)) / 6  # fmt: skip
    torch.testing.assert_close(losses.gbce(positive, negatives, 1000, 1.0), expected.mean(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_logq_changes_nothing_when_every_column_is_drawn_alike():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(4, 8, generator=generator)
    W = torch.randn(50, 8, generator=generator)
    targets = torch.tensor([3, 17, 3, 40])
    samples = torch.tensor([5, 17, 22, 49])  # as many as rows: every column K * Q = 4 / 50
    uniform = torch.full((50,), math.log(1 / 50))
    got = losses.sampled_softmax(q, W, targets, samples, uniform, 50)
    logits = q @ W[torch.cat((targets, samples))].T
    same = torch.cat((targets, samples))[None, :] == targets[:, None]
    same[torch.arange(4), torch.arange(4)] = False
    expected = torch.nn.functional.cross_entropy(logits.masked_fill(same, -math.inf),
                                                 torch.arange(4))  # fmt: skip
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("max_logits", [10**6, 10])  # probabilities kept / recomputed
@pytest.mark.parametrize("first", [0, 1, 3])  # rows of the table before the items (pads)
def test_softmax_in_item_blocks_equals_autograd_of_the_plain_formula(monkeypatch, max_logits,
                                                                     first):  # fmt: skip
    monkeypatch.setattr(losses, "ITEM_BLOCK", 4)  # 23 items: six blocks, the last short
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    table = torch.randn(first + 23, 5, generator=generator, dtype=torch.float64,
                        requires_grad=True)  # fmt: skip
    targets = torch.tensor([0, 22, 5, 5, 11, 7])
    plain = torch.nn.functional.cross_entropy(q @ table[first:].T, targets)
    grads_plain = torch.autograd.grad(plain, (q, table))
    blocks = losses.softmax_cross_entropy(q, table, targets, max_logits, first)
    grads_blocks = torch.autograd.grad(blocks, (q, table))
    torch.testing.assert_close(blocks, plain)
    for a, b in zip(grads_blocks, grads_plain, strict=True):
        torch.testing.assert_close(a, b)
    assert not grads_blocks[1][:first].any()  # the rows before the items get no gradient


def test_learning_rate_steps_down_every_lr_dc_step_epochs():
    model, _ = fitted("narm", [[0, 1, 2], [2, 3], [1, 3, 0]], n_epochs=6, lr_dc_step=3)
    assert [e.learning_rate for e in model.history_] == pytest.approx([1e-3] * 3 + [1e-4] * 3)


@pytest.mark.parametrize(("params", "message"), [
    ({"loss": "hinge"}, "parameter 'loss': 'hinge' is not one of 'cross-entropy', 'sampled'"),
    ({"max_len": 0}, "parameter 'max_len': expected an integer >= 1"),
    ({"n_heads": 3}, "parameter 'n_heads': expected an integer >= 1 dividing hidden_size"),
])  # fmt: skip
def test_bad_configurations_are_one_line_errors(params, message):
    name = "sasrec" if "n_heads" in params else "narm"
    with pytest.raises(ConfigError) as caught:
        create_model(name, params)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# -- a pattern every model must learn ------------------------------------------------------------

SUCCESSOR = {i: (7 * i + 3) % 16 for i in range(16)}  # a permutation of the items 0..15
AFTER_MARKER = {i: (5 * i + 1) % 16 for i in range(16)}  # depends on the first click


def pattern(rng: np.random.Generator, n: int) -> list[list[int]]:
    """Chains that follow SUCCESSOR, and sessions [a, marker, AFTER_MARKER[a]] whose last
    target depends on the first click (markers 16..19 carry no information)."""
    out = []
    for _ in range(n):
        a = int(rng.integers(16))
        if rng.random() < 0.7:
            chain = [a]
            for _ in range(int(rng.integers(1, 5))):
                chain.append(SUCCESSOR[chain[-1]])
            out.append(chain)
        else:
            out.append([a, int(rng.integers(16, 20)), AFTER_MARKER[a]])
    return out


LEARN = {
    "narm": {"n_epochs": 30, "learning_rate": 0.01, "emb_dropout": 0.0, "ct_dropout": 0.0},
    "stamp": {"n_epochs": 30, "learning_rate": 0.01},
    "sasrec": {"n_epochs": 30, "learning_rate": 0.01, "dropout": 0.0},
    "srgnn": {"n_epochs": 30, "learning_rate": 0.01, "lr_dc_step": 0, "l2": 0.0},
    "gcegnn": {"n_epochs": 30, "learning_rate": 0.01, "lr_dc_step": 0, "l2": 0.0,
               "dropout_global": 0.0, "n_iter": 1},
}
# Sessions to learn from: GCE-GNN's steps cost the most, and 600 teach it the pattern.
N_SESSIONS = {"gcegnn": 600}


@pytest.mark.parametrize("name", [*NEURAL, "stamp:equal_length"])
def test_each_model_learns_the_pattern_to_recall_at_1(name):
    name, _, batching = name.partition(":")  # STAMP also with the reference's batches
    params = {**LEARN[name], **({"batching": batching} if batching else {})}
    rng = np.random.default_rng(11)
    model, index = fitted(name, pattern(rng, N_SESSIONS.get(name, 1500)), batch_size=64,
                          **params)  # fmt: skip
    held_out = pattern(rng, 200)
    # Only the targets the pattern determines: every chain step, and the click after a
    # marker (a marker itself is random).
    cases = []
    for session in held_out:
        if session[1] >= 16:
            cases.append((session[:2], session[2]))
        else:
            cases += [(session[:t], session[t]) for t in range(1, len(session))]
    prefixes = [index.encode(np.array(prefix)) for prefix, _ in cases]
    best = model.score_prefixes(prefixes).argmax(axis=1)  # Recall@1: the top item
    assert index.decode(best).tolist() == [target for _, target in cases]


# -- the graph models' graphs (FOLLOWUPS.md's cases) ----------------------------------------------


def srgnn_graph(row: list[int]):
    from nextclick.models.srgnn import SessionGraph

    return SessionGraph(torch.tensor([row]), torch.tensor([len(row)]))


def test_srgnn_session_graph_of_the_paper():
    graph = srgnn_graph([1, 2, 3, 2, 4])
    assert graph.nodes.tolist() == [[1, 2, 3, 4]] and graph.alias.tolist() == [[0, 1, 2, 1, 3]]
    A_in, A_out = graph.A[0, :, :4], graph.A[0, :, 4:]
    assert A_in.tolist() == [[0, 0, 0, 0], [0.5, 0, 0.5, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    assert A_out.tolist() == [[0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_srgnn_self_loop_and_binary_edges():
    graph = srgnn_graph([5, 5, 6])
    assert graph.A[0, :, :2].tolist() == [[1, 0], [1, 0]]
    assert graph.A[0, :, 2:].tolist() == [[0.5, 0.5], [0, 0]]
    twice = srgnn_graph([1, 2, 1, 2])
    assert twice.A[0, :, :2].tolist() == twice.A[0, :, 2:].tolist() == [[0, 1], [1, 0]]


def test_gcegnn_relations_of_a_session():
    from nextclick.models.gcegnn import BOTH, NEXT, PREV, SELF, ReversedGraph

    graph = ReversedGraph(torch.tensor([[1, 2, 3, 2, 4, 0]]), torch.tensor([5]))
    node = {item: i for i, item in enumerate(graph.nodes[0].tolist())}

    def relation(a: int, b: int) -> int:
        return int(graph.relation[0, node[a], node[b]])

    assert [relation(i, i) for i in (1, 2, 3, 4)] == [SELF] * 4
    assert relation(2, 3) == relation(3, 2) == BOTH
    assert relation(2, 1) == relation(4, 2) == PREV
    assert relation(1, 2) == relation(2, 4) == NEXT
    assert relation(1, 3) == relation(1, 4) == 0


def test_gcegnn_global_graph_of_the_corpus():
    from nextclick.models.gcegnn import neighbour_counts

    corpus = [[1, 2, 3], [2, 3, 4], [1, 3], [5, 5, 6], [1, 2, 3, 4, 5]]
    events = sessions_frame(corpus)
    index = ItemIndex.from_items(events[ITEM].to_numpy())
    found = neighbour_counts(encode_sessions(events, index).sessions)

    def neighbours(item: int) -> list[tuple[int, int]]:
        return [(int(index.ids[n]), w) for n, w in found[index.lookup(item)]]

    assert neighbours(1) == [(3, 3), (2, 2), (4, 1)]
    assert neighbours(3) == [(2, 3), (1, 3), (4, 2), (5, 1)]  # ties: the first seen first
    assert neighbours(5) == [(5, 2), (6, 2), (4, 1), (3, 1), (2, 1)]
    assert neighbours(6) == [(5, 2)]


def test_gcegnn_global_graph_comes_from_the_training_split_and_reloads(tmp_path):
    train = [[0, 1, 2], [1, 2, 3], [4, 5], [2, 3, 1]]
    model, index = fitted("gcegnn", train)
    table = model.network_.neighbour_ids
    # Items 4 and 5 only ever met each other: their neighbours are each other (and
    # themselves never), whatever the draw; no pair of another split is in the graph.
    five, six = index.lookup(4) + 1, index.lookup(5) + 1
    assert set(table[five].tolist()) == {six} and set(table[six].tolist()) == {five}
    assert table[0].tolist() == [0] * table.shape[1]  # the pad has no neighbours
    model.save(tmp_path / "g")
    loaded = load_model(tmp_path / "g")
    assert torch.equal(loaded.network_.neighbour_ids, table)
    prefixes = [[0, 1], [4], [2, 3, 1, 0]]
    np.testing.assert_array_equal(loaded.score_prefixes(prefixes), model.score_prefixes(prefixes))


def tree_by_position(net, graph, session: torch.Tensor) -> torch.Tensor:
    """GCE-GNN's global vectors as the spec writes them, every position of every real node's
    neighbour tree computed on its own (no pair computed once), pads 0."""
    rows, slots = graph.node_real.nonzero(as_tuple=True)
    N, k, d = len(rows), net.neighbour_ids.shape[1], net.embedding.weight.shape[1]
    s = session[rows]
    ids, weights = [graph.nodes[rows, slots][:, None]], []
    for _ in net.hops:
        weights.append(net.neighbour_weights[ids[-1]])
        ids.append(net.neighbour_ids[ids[-1]].reshape(N, -1))
    vectors = [net.embedding(i) for i in ids]

    def hop(agg, own, neighbours, w):  # own (N, m, d), neighbours (N, m, k, d), w (N, m, k)
        pre = (s[:, None, None, :] * neighbours) @ agg.w1[:d] + w[..., None] * agg.w1[d]
        pi = torch.softmax((torch.nn.functional.leaky_relu(pre, 0.2) @ agg.w2)[..., 0], -1)
        pooled = (pi[..., None] * neighbours).sum(dim=2)
        kept = torch.nn.functional.dropout(torch.cat((own, pooled), -1), agg.dropout.p,
                                           training=net.training)  # fmt: skip
        return torch.relu(kept @ agg.w3)

    for depth, agg in enumerate(net.hops):
        vectors = [hop(agg, vectors[t], vectors[t + 1].view(N, -1, k, d), weights[t])
                   for t in range(len(net.hops) - depth)]  # fmt: skip
    out = torch.zeros((*graph.nodes.shape, d))
    out[rows, slots] = vectors[0][:, 0]
    return out


@pytest.mark.parametrize("hops", [1, 2, 3])
@pytest.mark.parametrize("training", [False, True])
def test_gcegnn_global_vectors_equal_every_tree_position_computed_alone(training, hops):
    # With dropout: the (row, item) and (row, neighbour) pairs computed once give every
    # position's value and gradient (every parameter's and the session vectors'), dropout
    # masks and all; pads stay 0, and an item without neighbours pools pads.
    from nextclick.models.gcegnn import NeighbourTree, ReversedGraph

    rng = np.random.default_rng(5)
    sessions = [list(rng.integers(0, 30, size=rng.integers(2, 9))) for _ in range(200)]
    lonely = 31  # raw item 30, only ever clicked alone: no neighbours
    model, _ = fitted("gcegnn", [*sessions, [30]], n_iter=hops, dropout_gcn=0.3)
    net = model.network_.train(training)
    assert net.neighbour_ids[lonely].tolist() == [0] * net.neighbour_ids.shape[1]
    rows = [[1, 2, 3, 4, 5, 6, 7], [8], [9, 9, 10], [1, 2, 1, 3], [30, 30, 5]]
    lengths = torch.tensor([len(r) for r in rows])
    items = torch.tensor([[i + 1 for i in r] + [0] * (7 - len(r)) for r in rows])
    graph = ReversedGraph(items, lengths)
    tree = NeighbourTree(graph, net.neighbour_ids, net.neighbour_weights, len(net.hops))
    positions = sum(i.numel() for i in tree.ids) * net.neighbour_ids.shape[1]
    assert 0 < len(tree.neighbour_items) < positions  # pairs are shared
    session = torch.randn(5, 24, generator=torch.Generator().manual_seed(1), requires_grad=True)
    probe = torch.randn(5, 7, 24, generator=torch.Generator().manual_seed(2))

    def run(compute) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net.zero_grad()
        session.grad = None
        torch.manual_seed(9)
        out = compute()
        (out * probe[:, : out.shape[1]]).sum().backward()
        grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
        return out.detach(), {**grads, "session": session.grad}

    def pairs_once() -> torch.Tensor:
        h_nodes, h_neighbours, *h_deeper = net.embed(graph.nodes, tree.neighbour_items,
                                                     *tree.ids[1:])  # fmt: skip
        return net.global_vectors(tree, h_nodes, h_neighbours, h_deeper, session)

    got, got_grads = run(pairs_once)
    want, want_grads = run(lambda: tree_by_position(net, graph, session))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == want_grads.keys() and len(got_grads) == 2 + 3 * hops
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert torch.count_nonzero(got[~graph.node_real]) == 0 and got[graph.node_real].abs().sum() > 0


def test_sampled_softmax_never_uses_a_sessions_own_targets_as_its_negatives():
    # Rows 0 and 1 are two positions of one session, row 2 another session: row 0's
    # candidates are its target, row 2's target and the sample; row 2 keeps all columns.
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    W = torch.randn(20, 6, generator=generator, dtype=torch.float64)
    targets, samples = torch.tensor([4, 9, 13]), torch.tensor([7])
    share = torch.full((20,), math.log(1 / 20), dtype=torch.float64)
    got = losses.sampled_softmax(q, W, targets, samples, share, 20, torch.tensor([0, 0, 1]))
    s = q @ W[torch.tensor([4, 9, 13, 7])].T - torch.tensor([math.log(3 / 20)] * 3
                                                             + [math.log(1 / 20)])  # fmt: skip
    rows = [[0, 2, 3], [1, 2, 3], [0, 1, 2, 3]]  # the columns each row may see
    expected = sum(torch.logsumexp(s[r, cols], 0) - s[r, r] for r, cols in enumerate(rows)) / 3
    torch.testing.assert_close(got, expected)


def _fit_resumable(name: str, sessions: list[list[int]], directory, n_epochs: int,
                   on_epoch=None, **params):  # fmt: skip
    events = sessions_frame(sessions)
    index = ItemIndex.from_items(events[ITEM].to_numpy())
    model = create_model(name, {**SMALL[name], "batch_size": 16, "lr_dc_step": 1,
                                "n_epochs": n_epochs, **params})  # fmt: skip
    return model.fit(encode_sessions(events, index).sessions, index, on_epoch=on_epoch,
                     checkpoint=directory)  # fmt: skip


RESUMED = [(name, {}) for name in NEURAL] + [("narm", {"loss": "sampled", "n_sample": 8})]


@pytest.mark.parametrize(("name", "params"), RESUMED)
def test_a_training_resumed_from_its_checkpoint_is_the_whole_training(name, params, tmp_path):
    rng = np.random.default_rng(5)
    sessions = [list(rng.integers(0, 25, size=rng.integers(2, 8))) for _ in range(120)]
    whole = _fit_resumable(name, sessions, tmp_path / "whole", 3, **params)
    _fit_resumable(name, sessions, tmp_path / "split", 1, **params)  # "interrupted" after 1
    seen = []
    resumed = _fit_resumable(name, sessions, tmp_path / "split", 3, on_epoch=seen.append,
                             **params)  # fmt: skip
    assert [s.epoch for s in seen] == [2, 3]  # epoch 1 is not trained again
    assert [e.loss for e in resumed.history_] == [e.loss for e in whole.history_]
    rates = [e.learning_rate for e in whole.history_]
    assert [e.learning_rate for e in resumed.history_] == rates
    assert rates == pytest.approx([rates[0], rates[0] / 10, rates[0] / 100])  # lr_dc_step 1
    a, b = whole.network_.state_dict(), resumed.network_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished training given its checkpoint again trains nothing and is the same model.
    again = _fit_resumable(name, sessions, tmp_path / "split", 3, on_epoch=seen.append,
                           **params)  # fmt: skip
    assert len(seen) == 2
    assert all(torch.equal(a[k], v) for k, v in again.network_.state_dict().items())


def test_a_checkpoint_of_another_training_is_refused(tmp_path):
    sessions = [[0, 1, 2], [2, 3], [1, 3, 0]]
    _fit_resumable("narm", sessions, tmp_path, 1)
    with pytest.raises(CheckpointError, match=r"training.pt: the checkpoint of another training"):
        _fit_resumable("narm", sessions, tmp_path, 2, learning_rate=0.01)
    with pytest.raises(CheckpointError, match="the checkpoint of another training"):
        _fit_resumable("narm", [*sessions, [3, 2]], tmp_path, 2)
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match=r"file: cannot be a checkpoint directory"):
        _fit_resumable("narm", sessions, tmp_path / "file", 2)
    _fit_resumable("narm", sessions, tmp_path, 2)
    with pytest.raises(CheckpointError, match=r"2 epochs trained, more than n_epochs = 1"):
        _fit_resumable("narm", sessions, tmp_path, 1)
    (tmp_path / "training.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match=r"training.pt: not a nextclick training checkpoint"):
        _fit_resumable("narm", sessions, tmp_path, 2)


def test_a_model_without_checkpoints_says_so(tmp_path):
    events = sessions_frame([[0, 1, 2], [2, 3]])
    index = ItemIndex.from_items(events[ITEM].to_numpy())
    model = create_model("vsknn")
    with pytest.raises(ConfigError, match="vsknn does not save its training state"):
        model.fit(encode_sessions(events, index).sessions, index, checkpoint=tmp_path)


@pytest.mark.parametrize("name", NEURAL)
def test_epoch_k_of_a_longer_training_is_the_k_epoch_model(name, tmp_path):
    # What the validation curve and bench/srgnn_accuracy.py --final-snapshots rely on.
    rng = np.random.default_rng(6)
    sessions = [list(rng.integers(0, 25, size=rng.integers(2, 8))) for _ in range(120)]
    after_first = []

    def keep(stats) -> None:
        if stats.epoch == 1:
            after_first.append({k: v.clone() for k, v in longer.network_.state_dict().items()})

    longer = create_model(name, {**SMALL[name], "batch_size": 16, "lr_dc_step": 1,
                                 "n_epochs": 3})  # fmt: skip
    events = sessions_frame(sessions)
    index = ItemIndex.from_items(events[ITEM].to_numpy())
    longer.fit(encode_sessions(events, index).sessions, index, on_epoch=keep)
    one = _fit_resumable(name, sessions, tmp_path, 1)
    assert one.history_[0].loss == longer.history_[0].loss
    assert all(torch.equal(after_first[0][k], v) for k, v in one.network_.state_dict().items())
    assert not all(torch.equal(after_first[0][k], v)
                   for k, v in longer.network_.state_dict().items())  # fmt: skip
