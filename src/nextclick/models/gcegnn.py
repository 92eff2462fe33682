"""GCE-GNN (Wang et al., SIGIR 2020): a session-level graph attention and a global item
graph of the training sessions, combined, then a reversed-position attention readout.

- **Global graph** (built in ``fit`` from the training split in use, never from test): every
  pair of clicks at distance 1..3 in a session adds 1 to w(a, b) and to w(b, a) (repeats
  count; a = b is a self-neighbour, +2); each item keeps its 12 heaviest neighbours (ties:
  the first seen, in the reference's order: session by session, distance 1, 2, 3). A table
  of ``n_sample`` neighbours per item is then drawn once (seeded): all 12 shuffled, or, for
  fewer, 12 drawn with replacement; none: item 0 (the pad) with weight 0. The table is saved
  with the model, so a reloaded model scores identically. Weights stay raw counts.
- **Input**: each session reversed (position 0 = last click), its distinct items as nodes.
- **Session aggregator**: relations self / prev (j clicked right before i) / next / both
  between nodes; ``e_ij = LeakyReLU_0.2(a_r . (h_i * h_j))`` with one vector ``a_r`` per
  relation, softmax over the related j, ``h^s_i = sum_j alpha_ij h_j`` (computed as four
  (n x n) products, never the (n, n, d) tensor of the reference).
- **Global aggregator**, ``n_iter`` hops: ``s`` = mean item embedding of the session;
  ``pi_k = softmax_k(q . LeakyReLU_0.2(W1 [s * h_k ; w_k]))`` over the neighbours,
  ``h_N = sum_k pi_k h_k``, ``h^g = ReLU(W2 dropout_gcn([h ; h_N]))``; with 2 hops, layer 1
  updates the nodes from their neighbours and the neighbours from theirs, layer 2 the nodes
  from the updated neighbours. ``h = dropout_local(h^s) + dropout_global(h^g)``.
- **Readout** over positions (p_0 = the last click): ``z_i = tanh(W3 [p_i ; h_i])``,
  ``beta_i = q2 . sigmoid(W4 z_i + b4 + W5 s')`` with ``s'`` the masked mean of h (no
  softmax), ``S = sum_i beta_i h_i``, item ``i`` scores ``S . E_i``; softmax cross-entropy.

Training as the reference (CCIIPLab/GCE-GNN): every parameter U(+-1/sqrt(d)); Adam 1e-3,
weight decay 1e-5; x0.1 every 3 epochs; batch 100; d 100; sessions cut to their last 200
clicks (the reference fails beyond). Presets: the reference's per-dataset settings. The pad
row of E is zero (the reference's is trainable, and an item without neighbours attends to
it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from nextclick.data.sessions import SessionData
from nextclick.models.base import OnEpoch, check
from nextclick.models.neural import Network, NeuralConfig, NeuralRecommender, session_nodes

SELF, PREV, NEXT, BOTH = 1, 2, 3, 4


@dataclass(frozen=True)
class GCEGNNConfig(NeuralConfig):
    """GCE-GNN's parameters (the reference's names and defaults; see :class:`NeuralConfig`).

    Attributes
    ----------
    hidden_size
        Embedding size d.
    n_iter
        Hops of the global aggregator.
    n_sample
        Neighbours per item in the global graph (the reference's name; GCE-GNN trains with
        the full softmax only, so the sampled loss's meaning of it does not apply).
    dropout_gcn, dropout_local, dropout_global
        Dropout in the global aggregator, on the session and on the global representation.
    alpha
        Negative slope of the LeakyReLUs.
    graph_seed
        Seed of the neighbour table's draw.
    """

    n_epochs: int = 20
    batch_size: int = 100
    learning_rate: float = 1e-3
    l2: float = 1e-5
    lr_dc_step: int = 3
    lr_dc: float = 0.1
    max_len: int = 200
    hidden_size: int = 100
    n_iter: int = 1
    n_sample: int = 12
    dropout_gcn: float = 0.0
    dropout_local: float = 0.0
    dropout_global: float = 0.5
    alpha: float = 0.2
    graph_seed: int = 2020

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden_size >= 1, "hidden_size", "an integer >= 1")
        check(self.n_iter >= 1, "n_iter", "an integer >= 1")
        check(self.n_sample >= 1, "n_sample", "an integer >= 1")
        check(self.max_len <= 200, "max_len", "at most 200 (the position embeddings)")
        for name in ("dropout_gcn", "dropout_local", "dropout_global"):
            check(0 <= getattr(self, name) < 1, name, "a probability in [0, 1)")

    @classmethod
    def losses(cls) -> tuple[str, ...]:
        return ("cross-entropy",)


# -- the global item graph ----------------------------------------------------------------------


def neighbour_counts(sessions: SessionData, width: int = 3) -> list[list[tuple[int, int]]]:
    """Each item's 12-or-fewer heaviest neighbours as (item, weight), heaviest first, ties
    by first appearance (see the module docstring). Items are indices of ``sessions``."""
    a_parts, b_parts, order_parts = [], [], []
    starts = np.repeat(sessions.offsets[:-1], sessions.lengths)
    position = np.arange(sessions.n_events) - starts
    session = np.repeat(np.arange(sessions.n_sessions), sessions.lengths)
    for k in range(1, width + 1):
        ok = position + k < np.repeat(sessions.lengths, sessions.lengths)
        i = np.flatnonzero(ok)
        a, b = sessions.items[i], sessions.items[i + k]
        # The reference's order: session, then distance k, then position, then (a,b) before (b,a).
        key = (session[i] * (width + 1) + k) * (2 * sessions.n_events) + 2 * position[i]
        a_parts += [a, b]
        b_parts += [b, a]
        order_parts += [key, key + 1]
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    order = np.concatenate(order_parts)
    pair = a * sessions.n_items + b
    sorter = np.lexsort((order, pair))  # by pair, each pair's occurrences in the list's order
    pair_sorted = pair[sorter]
    starts = np.flatnonzero(np.r_[True, pair_sorted[1:] != pair_sorted[:-1]])
    pairs = pair_sorted[starts]
    counts = np.diff(np.r_[starts, len(pair_sorted)])
    first_seen = order[sorter][starts]
    src, dst = pairs // sessions.n_items, pairs % sessions.n_items
    rank = np.lexsort((first_seen, -counts, src))
    out: list[list[tuple[int, int]]] = [[] for _ in range(sessions.n_items)]
    for s, d, c in zip(src[rank].tolist(), dst[rank].tolist(), counts[rank].tolist(),
                       strict=True):  # fmt: skip
        if len(out[s]) < 12:
            out[s].append((d, c))
    return out


def neighbour_table(neighbours: list[list[tuple[int, int]]], n_sample: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(n_items + 1, n_sample) neighbour rows (item index + 1, 0 = none) and their weights,
    drawn once; row 0 is the pad's (no neighbours)."""
    ids = np.zeros((len(neighbours) + 1, n_sample), dtype=np.int64)
    weights = np.zeros((len(neighbours) + 1, n_sample), dtype=np.float32)
    for item, found in enumerate(neighbours):
        if not found:
            continue
        pick = rng.choice(len(found), size=n_sample, replace=len(found) < n_sample)
        ids[item + 1] = [found[p][0] + 1 for p in pick]
        weights[item + 1] = [found[p][1] for p in pick]
    return ids, weights


# -- the network ---------------------------------------------------------------------------------


class ReversedGraph:
    """The batch's reversed sessions as graphs: ``nodes`` (B, n), ``alias`` (B, L) of the
    reversed positions, ``relation`` (B, n, n) codes, ``real`` (B, L) and ``items`` (B, L)
    reversed (item index + 1, 0 = pad)."""

    def __init__(self, items: Tensor, lengths: Tensor) -> None:
        B, L = items.shape
        device = items.device
        column = torch.arange(L, device=device)[None, :]
        real = column < lengths[:, None]
        source = torch.where(real, lengths[:, None] - 1 - column, 0)
        self.items = torch.where(real, torch.gather(items, 1, source), 0)  # reversed
        self.real = real
        self.nodes, self.node_real, self.alias = session_nodes(self.items, lengths)
        n = self.nodes.shape[1]
        rows = torch.arange(B, device=device)[:, None].expand(B, L)
        # D[u][v]: in the reversed row u is at position i and v at i + 1: v was clicked
        # right before u (a repeated click, u = v, is only "self").
        D = torch.zeros((B, n, n), dtype=torch.bool, device=device)
        edge = real[:, 1:]
        u, v = self.alias[:, :-1][edge], self.alias[:, 1:][edge]
        b = rows[:, 1:][edge]
        keep = u != v
        D[b[keep], u[keep], v[keep]] = True
        Dt = D.transpose(1, 2)
        relation = torch.zeros((B, n, n), dtype=torch.int64, device=device)
        relation[D & ~Dt] = PREV
        relation[~D & Dt] = NEXT
        relation[D & Dt] = BOTH
        diagonal = torch.eye(n, dtype=torch.bool, device=device)[None] & self.node_real[:, :, None]
        relation[diagonal] = SELF
        self.relation = relation


class NeighbourTree:
    """The sampled-neighbour tree of a batch's real nodes, ``hops`` deep, as indices only.

    ``rows``/``slots`` (N,): each real node's batch row and node slot; ``ids[t]`` (N, k^t)
    for t < hops: the items at depth t (the deepest items are neighbours only);
    ``weights[t]`` (N, k^t, k) for t < hops - 1: their neighbours' weights, which the later
    hops read. The first hop pools plain embeddings, so its h_N depends on (row, item) alone:
    it runs once per distinct (row, item) pair of depths 0..hops-1 (``pair_at[t]`` (N, k^t):
    each position's pair; ``pair_weights`` (Q, k): each pair's neighbours' weights), over
    the distinct (row, neighbour) pairs ``neighbour_rows``/``neighbour_items`` (V,) of those
    (``neighbour_of`` (Q, k): each pair's neighbours among them; in a diginetica batch at two
    hops, one (row, neighbour) pair in five is distinct).
    """

    def __init__(self, graph: ReversedGraph, ids: Tensor, weights: Tensor, hops: int) -> None:
        self.rows, self.slots = graph.node_real.nonzero(as_tuple=True)
        self.node_at = self.rows * graph.nodes.shape[1] + self.slots  # in the flat node table
        N, width = len(self.rows), ids.shape[0]
        self.ids = [graph.nodes.reshape(-1).index_select(0, self.node_at)[:, None]]
        for _ in range(hops - 1):
            self.ids.append(ids[self.ids[-1]].reshape(N, -1))
        self.weights = [weights[i] for i in self.ids[:-1]]
        keys = torch.cat([(self.rows[:, None] * width + i).reshape(-1) for i in self.ids])
        pairs, inverse = torch.unique(keys, return_inverse=True)
        sizes = [i.numel() for i in self.ids]
        self.pair_at = [at.view(i.shape)
                        for i, at in zip(self.ids, inverse.split(sizes), strict=True)]  # fmt: skip
        pair_rows, pair_items = pairs // width, pairs % width
        self.pair_weights = weights[pair_items]  # (Q, k)
        found, self.neighbour_of = torch.unique(pair_rows[:, None] * width + ids[pair_items],
                                                return_inverse=True)  # fmt: skip
        self.neighbour_rows, self.neighbour_items = found // width, found % width


class SessionAggregator(nn.Module):
    def __init__(self, d: int, alpha: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(4, d))  # one vector per relation
        self.slope = alpha

    def forward(self, h: Tensor, relation: Tensor) -> Tensor:
        # e_r[i, j] = a_r . (h_i * h_j) = (h_i * a_r) . h_j: one (n x n) product per relation.
        e = torch.stack([(h * self.a[r]) @ h.transpose(1, 2) for r in range(4)])  # (4, B, n, n)
        e = nn.functional.leaky_relu(e, self.slope)
        index = (relation - 1).clamp(min=0)[None]
        scores = torch.gather(e, 0, index)[0]
        scores = scores.masked_fill(relation == 0, -9e15)
        return torch.softmax(scores, dim=-1) @ h


class GlobalAggregator(nn.Module):
    def __init__(self, d: int, dropout: float, alpha: float) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(d + 1, d))
        self.w2 = nn.Parameter(torch.empty(d, 1))
        self.w3 = nn.Parameter(torch.empty(2 * d, d))
        self.dropout = nn.Dropout(dropout)
        self.slope = alpha

    def forward(self, own: Tensor, neighbours: Tensor, weights: Tensor, session: Tensor) -> Tensor:
        """``own`` (B, m, d), ``neighbours`` (B, m, k, d), ``weights`` (B, m, k), ``session``
        (B, d)."""
        d = own.shape[-1]
        pi = self.attend((session[:, None, None, :] * neighbours) @ self.w1[:d], weights)
        return self.combine(own, (pi[..., None] * neighbours).sum(dim=2))

    def attend(self, scored: Tensor, weights: Tensor) -> Tensor:
        """pi (..., k) of ``scored`` = (s * h_k) W1[:d] (..., k, d) and ``weights`` w_k."""
        pre = scored + weights[..., None] * self.w1[scored.shape[-1]]
        return torch.softmax((nn.functional.leaky_relu(pre, self.slope) @ self.w2)[..., 0], -1)

    def combine(self, own: Tensor, pooled: Tensor) -> Tensor:
        return torch.relu(self.dropout(torch.cat((own, pooled), dim=-1)) @ self.w3)

    def pool(self, tree: NeighbourTree, h: Tensor, session: Tensor) -> Tensor:
        """h_N (Q, d) of the tree's distinct (row, item) pairs from the embeddings ``h`` (V, d)
        of their distinct (row, neighbour) pairs, with each row's vector of ``session``
        (B, d): (s * h_k) W1 is computed once per distinct pair."""
        scored = (session.index_select(0, tree.neighbour_rows) * h) @ self.w1[: h.shape[-1]]
        Q, k = tree.neighbour_of.shape
        at = tree.neighbour_of.reshape(-1)
        pi = self.attend(scored.index_select(0, at).view(Q, k, -1), tree.pair_weights)
        return (pi[..., None] * h.index_select(0, at).view(Q, k, -1)).sum(dim=1)


class GCEGNNNetwork(Network):
    def __init__(self, n_items: int, cfg: GCEGNNConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.positions = nn.Embedding(200, d)
        self.local = SessionAggregator(d, cfg.alpha)
        self.hops = nn.ModuleList(GlobalAggregator(d, cfg.dropout_gcn, cfg.alpha)
                                  for _ in range(cfg.n_iter))  # fmt: skip
        self.w3 = nn.Parameter(torch.empty(2 * d, d))
        self.w4 = nn.Linear(d, d)
        self.w5 = nn.Linear(d, d, bias=False)
        self.q2 = nn.Parameter(torch.empty(d, 1))
        self.dropout_local = nn.Dropout(cfg.dropout_local)
        self.dropout_global = nn.Dropout(cfg.dropout_global)
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
            self.embedding.weight[0] = 0.0
        # The neighbour table, drawn at fit time and saved with the weights.
        self.register_buffer("neighbour_ids", torch.zeros((n_items + 1, cfg.n_sample),
                                                          dtype=torch.int64))  # fmt: skip
        self.register_buffer("neighbour_weights", torch.zeros((n_items + 1, cfg.n_sample)))

    def embed(self, *indices: Tensor) -> list[Tensor]:
        """The embeddings of several index tensors in one lookup (each lookup's backward
        fills a dense items x d gradient)."""
        flat = self.embedding(torch.cat([i.reshape(-1) for i in indices]))
        parts = flat.split([i.numel() for i in indices])
        return [p.view(*i.shape, -1) for p, i in zip(parts, indices, strict=True)]

    def global_vectors(self, tree: NeighbourTree, h_nodes: Tensor, h_neighbours: Tensor,
                       h_deeper: list[Tensor], session: Tensor) -> Tensor:  # fmt: skip
        """(B, n, d) global representation of the real nodes (0 on pad slots), each real
        node aggregated as a row of its own with its session's vector (a batch's node table
        is padded to its longest session, and every hop multiplies each slot by k).
        ``h_deeper``: the embeddings of ``tree.ids[1:]``, ``h_neighbours`` of
        ``tree.neighbour_items``, ``h_nodes`` of ``graph.nodes``."""
        first, k = self.hops[0], self.neighbour_ids.shape[1]
        pooled = first.pool(tree, h_neighbours, session)
        B, n, d = h_nodes.shape
        own = [h_nodes.view(B * n, d).index_select(0, tree.node_at)[:, None], *h_deeper]
        vectors = [first.combine(h, pooled.index_select(0, at.reshape(-1)).view_as(h))
                   for h, at in zip(own, tree.pair_at, strict=True)]  # fmt: skip
        per_node = session.index_select(0, tree.rows)
        N, depth = len(tree.rows), len(tree.ids)
        for layer, aggregator in enumerate(self.hops[1:], start=1):
            vectors = [aggregator(vectors[t], vectors[t + 1].view(N, -1, k, d),
                                  tree.weights[t], per_node)
                       for t in range(depth - layer)]  # fmt: skip
        flat = vectors[0].new_zeros((B * n, d))
        return flat.index_copy(0, tree.node_at, vectors[0][:, 0]).view(B, n, d)

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        graph = ReversedGraph(items, lengths)
        tree = NeighbourTree(graph, self.neighbour_ids, self.neighbour_weights, len(self.hops))
        h_items, h_nodes, h_neighbours, *h_deeper = self.embed(
            graph.items, graph.nodes, tree.neighbour_items, *tree.ids[1:])
        real = graph.real[..., None].float()  # (B, L, 1)
        session = (h_items * real).sum(dim=1) / lengths[:, None]  # s
        h_local = self.local(h_nodes, graph.relation)
        h_global = self.global_vectors(tree, h_nodes, h_neighbours, h_deeper, session)
        h = self.dropout_local(h_local) + self.dropout_global(h_global)  # (B, n, d)
        hidden = torch.gather(h, 1, graph.alias[:, :, None].expand(-1, -1, h.shape[2]))
        L, d = hidden.shape[1], hidden.shape[2]
        mean = (hidden * real).sum(dim=1) / lengths[:, None]  # s'
        z = torch.tanh(torch.cat((self.positions.weight[:L].expand(len(items), L, d), hidden),
                                 dim=-1) @ self.w3)  # fmt: skip
        beta = torch.sigmoid(self.w4(z) + self.w5(mean)[:, None, :]) @ self.q2  # (B, L, 1)
        return (beta * real * hidden).sum(dim=1)


class GCEGNN(NeuralRecommender):
    """Global context enhanced graph neural network (see the module docstring)."""

    name = "gcegnn"
    Config = GCEGNNConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # CCIIPLab/GCE-GNN main.py, per dataset.
        "diginetica": dict(n_iter=2, dropout_gcn=0.2, dropout_local=0.0),
        "tmall": dict(n_iter=1, dropout_gcn=0.6, dropout_local=0.5),
        "nowplaying": dict(n_iter=1, dropout_gcn=0.0, dropout_local=0.0),
    }

    def __init__(self, config: Any = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch,
             checkpoint: Path | None = None) -> None:  # fmt: skip
        cfg = self.config
        self._table = neighbour_table(neighbour_counts(train), cfg.n_sample,
                                      np.random.default_rng(cfg.graph_seed))  # fmt: skip
        super()._fit(train, progress=progress, on_epoch=on_epoch, checkpoint=checkpoint)

    def _network(self, n_items: int) -> GCEGNNNetwork:
        network = GCEGNNNetwork(n_items, self.config)
        if self._table is not None:
            ids, weights = self._table
            network.neighbour_ids.copy_(torch.as_tensor(ids))
            network.neighbour_weights.copy_(torch.as_tensor(weights))
        return network
