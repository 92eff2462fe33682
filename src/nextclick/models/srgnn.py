"""SR-GNN (Wu et al., AAAI 2019): a gated graph network over each session's graph, then
attention with the last click as query.

For each session (a right-padded row, 0 = pad):

- **graph**: the nodes are the session's distinct items (sorted); ``M[u][v] = 1`` when some
  click on ``u`` is followed by a click on ``v`` (binary; a repeated click gives a self-loop);
  ``A_in[v][u] = M[u][v] / indeg(v)``, ``A_out[u][v] = M[u][v] / outdeg(u)`` (degree 0 counts
  as 1); ``alias`` maps each position to its node. Built for the whole batch at once with
  tensor operations (the reference builds it row by row in Python, a fifth of its step);
- **gated GNN**, ``step`` times: ``a = [A_in (W_in h + b_in) + b_iah ; A_out (W_out h + b_out)
  + b_oah]`` and a GRU cell with input ``a`` and state ``h``; ``h0 = E[nodes]``;
- **readout**: ``v = h[alias]``, ``alpha_i = q . sigmoid(W1 v_t + W2 v_i + c)`` (no softmax;
  the biases of W1 and W2 are ``c``), ``s_g = sum_i mask_i alpha_i v_i`` (repeats counted),
  ``s_h = W3 [s_g ; v_t] + b`` (``nonhybrid``: ``s_h = s_g``), item ``i`` scores
  ``s_h . E_i``; softmax cross-entropy.

Training as the reference (CRIPAC-DIG/SR-GNN): every parameter U(+-1/sqrt(d)) (the paper
says N(0, 0.1^2)); Adam 1e-3 with weight decay 1e-5 on every parameter; batch 100; d 100;
learning rate x0.1 after every 3 epochs. The reference steps its scheduler before each epoch,
so on current PyTorch its first decay comes after 2 epochs; nextclick follows the paper's
intent (epochs 0-2 at 1e-3, 3-5 at 1e-4). The pad row of E is zero and never scored (the
reference's is trainable and its pad node joins the graph without edges, which changes no
real node). The reference never truncates; nextclick keeps a session's last ``max_len`` = 200
clicks (the same rule as every model here, so long sessions cost bounded memory; 200 is longer
than almost every session of the benchmarks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nextclick.models.base import check
from nextclick.models.neural import Network, NeuralConfig, NeuralRecommender, session_nodes


@dataclass(frozen=True)
class SRGNNConfig(NeuralConfig):
    """SR-GNN's parameters (the reference's names and defaults; see :class:`NeuralConfig`).

    Attributes
    ----------
    hidden_size
        Embedding and node state size d.
    step
        Gated GNN propagation steps.
    nonhybrid
        Use only the attention readout (no last-click term).
    """

    n_epochs: int = 30
    batch_size: int = 100
    learning_rate: float = 1e-3
    l2: float = 1e-5
    lr_dc_step: int = 3
    lr_dc: float = 0.1
    max_len: int = 200
    hidden_size: int = 100
    step: int = 1
    nonhybrid: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden_size >= 1, "hidden_size", "an integer >= 1")
        check(self.step >= 1, "step", "an integer >= 1")


class SessionGraph:
    """The batch's session graphs: ``nodes`` (B, n) item index + 1 (0 = no node),
    ``alias`` (B, L) node of each position, ``A`` (B, n, 2n) = [A_in | A_out]."""

    def __init__(self, items: Tensor, lengths: Tensor) -> None:
        B, L = items.shape
        device = items.device
        self.nodes, _, self.alias = session_nodes(items, lengths)
        n = self.nodes.shape[1]
        real = torch.arange(L, device=device)[None, :] < lengths[:, None]
        rows = torch.arange(B, device=device)[:, None].expand(B, L)
        M = torch.zeros((B, n, n), dtype=torch.float32, device=device)
        edge = real[:, 1:]  # consecutive clicks, both real
        b = rows[:, 1:][edge]
        M[b, self.alias[:, :-1][edge], self.alias[:, 1:][edge]] = 1.0
        indeg = M.sum(dim=1).clamp(min=1.0)  # (B, n) over v
        outdeg = M.sum(dim=2).clamp(min=1.0)  # (B, n) over u
        A_in = M.transpose(1, 2) / indeg[:, :, None]  # A_in[v][u] = M[u][v] / indeg(v)
        A_out = M / outdeg[:, :, None]  # A_out[u][v] = M[u][v] / outdeg(u)
        self.A = torch.cat((A_in, A_out), dim=2)
        self.real = real


class GatedGNN(nn.Module):
    def __init__(self, d: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.edge_in = nn.Linear(d, d)
        self.edge_out = nn.Linear(d, d)
        self.b_iah = nn.Parameter(torch.empty(d))
        self.b_oah = nn.Parameter(torch.empty(d))
        self.w_ih = nn.Parameter(torch.empty(3 * d, 2 * d))
        self.w_hh = nn.Parameter(torch.empty(3 * d, d))
        self.b_ih = nn.Parameter(torch.empty(3 * d))
        self.b_hh = nn.Parameter(torch.empty(3 * d))

    def cell(self, A: Tensor, h: Tensor) -> Tensor:
        n = h.shape[1]
        a_in = A[:, :, :n] @ self.edge_in(h) + self.b_iah
        a_out = A[:, :, n:] @ self.edge_out(h) + self.b_oah
        gi = nn.functional.linear(torch.cat((a_in, a_out), dim=2), self.w_ih, self.b_ih)
        gh = nn.functional.linear(h, self.w_hh, self.b_hh)
        i_r, i_z, i_n = gi.chunk(3, dim=2)
        h_r, h_z, h_n = gh.chunk(3, dim=2)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return new + update * (h - new)

    def forward(self, A: Tensor, h: Tensor) -> Tensor:
        for _ in range(self.steps):
            h = self.cell(A, h)
        return h


class SRGNNNetwork(Network):
    def __init__(self, n_items: int, cfg: SRGNNConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.gnn = GatedGNN(d, cfg.step)
        self.w1 = nn.Linear(d, d)
        self.w2 = nn.Linear(d, d)
        self.q = nn.Linear(d, 1, bias=False)
        self.w3 = nn.Linear(2 * d, d)
        self.nonhybrid = cfg.nonhybrid
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
            self.embedding.weight[0] = 0.0

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        graph = SessionGraph(items, lengths)
        h = self.gnn(graph.A, self.embedding(graph.nodes))  # (B, n, d)
        v = torch.gather(h, 1, graph.alias[:, :, None].expand(-1, -1, h.shape[2]))  # (B, L, d)
        last = v[torch.arange(len(items), device=items.device), lengths - 1]  # v_t (B, d)
        alpha = self.q(torch.sigmoid(self.w1(last)[:, None, :] + self.w2(v)))  # (B, L, 1)
        s_g = (alpha * v * graph.real[..., None]).sum(dim=1)
        if self.nonhybrid:
            return s_g
        return self.w3(torch.cat((s_g, last), dim=1))


class SRGNN(NeuralRecommender):
    """Session-based recommendation with graph neural networks (see the module docstring)."""

    name = "srgnn"
    Config = SRGNNConfig

    def _network(self, n_items: int) -> SRGNNNetwork:
        return SRGNNNetwork(n_items, self.config)
