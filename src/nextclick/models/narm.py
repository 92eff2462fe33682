"""NARM (Li et al., CIKM 2017): a GRU over the session, attention over its states, and a
bilinear decoder.

Read top to bottom: the config (the reference's defaults), the network, the model. For a
right-padded batch of sessions (B, L):

- ``x = dropout_0.25(E[s])``, E: (n_items + 1, embedding_dim), row 0 the pad (zero, never
  scored);
- a GRU of ``hidden_size`` units gives the states ``h_j``; ``c_g`` is the state at the last
  real click;
- ``e_j = v . gate(A1 h_j + A2 c_g)`` (no biases), ``alpha`` = softmax of ``e`` over the
  real positions, ``c_l = sum_j alpha_j h_j``;
- ``c = dropout_0.5([c_l ; c_g])`` (B, 2 hidden_size) and item ``i`` scores
  ``c . (E_i B)`` with B: (embedding_dim, 2 hidden_size), no bias; softmax cross-entropy.

Where nextclick differs from the Theano reference (``lijingsdu/sessionRec_NARM``), and why:

- The GRU is ``torch.nn.GRU`` (sigmoid gates, the reset gate applied after the recurrent
  product); the reference's cell uses hard-sigmoid gates and resets the state before the
  product. The spec allows this.
- The attention gate is the paper's sigmoid by default; ``attention_gate="hard_sigmoid"``
  (clip(0.2 x + 0.5, 0, 1)) is the reference code's.
- Sessions are cut to their **last** ``max_len`` = 19 clicks (the reference keeps the first
  19 of longer prefixes, train and test): the recent clicks are the ones that matter when
  predicting the next. ``truncation="first"`` is the reference's rule.
- Dropout is inverted (scaled at training), the reference's is not (scaled at inference):
  the same function up to a rescaling that the next layer absorbs.
- Row 0 of E (the pad) is zero and never scored; the reference scores it.

Initialisation as the reference: N(0, sigma^2) with sigma = sqrt(2 / fan) for E, A1, A2, v,
B and the GRU's input weights (fan: the first dimension of the reference's Theano matrix:
n_items for E, embedding_dim for the input weights and B, hidden_size for A1 and A2, 1 for
v); orthogonal recurrent weights (one block per gate); zero biases. Training: Adam 1e-3,
batch 512, no L2, no clipping, no schedule (30 epochs in the reference; nextclick chooses the
number of epochs on a validation split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nextclick.data.batching import Keep
from nextclick.models.base import check
from nextclick.models.neural import Network, NeuralConfig, NeuralRecommender, normal_


@dataclass(frozen=True)
class NARMConfig(NeuralConfig):
    """NARM's parameters (the reference code's names and defaults; see :class:`NeuralConfig`
    for the training ones).

    Attributes
    ----------
    embedding_dim, hidden_size
        Item embedding size and GRU units.
    emb_dropout, ct_dropout
        Dropout of the embedded clicks and of the session representation [c_l ; c_g].
    attention_gate
        ``sigmoid`` (the paper) or ``hard_sigmoid`` (the reference code).
    truncation
        Which ``max_len`` clicks of a longer session are read: ``last`` (nextclick) or
        ``first`` (the reference code).
    """

    n_epochs: int = 30
    batch_size: int = 512
    max_len: int = 19
    embedding_dim: int = 50
    hidden_size: int = 100
    emb_dropout: float = 0.25
    ct_dropout: float = 0.5
    attention_gate: Literal["sigmoid", "hard_sigmoid"] = "sigmoid"
    truncation: Keep = "last"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.embedding_dim >= 1, "embedding_dim", "an integer >= 1")
        check(self.hidden_size >= 1, "hidden_size", "an integer >= 1")
        check(0 <= self.emb_dropout < 1, "emb_dropout", "a probability in [0, 1)")
        check(0 <= self.ct_dropout < 1, "ct_dropout", "a probability in [0, 1)")
        check(self.attention_gate in ("sigmoid", "hard_sigmoid"), "attention_gate",
              "'sigmoid' or 'hard_sigmoid'")  # fmt: skip
        check(self.truncation in ("last", "first"), "truncation", "'last' or 'first'")


class NARMNetwork(Network):
    def __init__(self, n_items: int, cfg: NARMConfig) -> None:
        super().__init__()
        d, h = cfg.embedding_dim, cfg.hidden_size
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.gru = nn.GRU(d, h, batch_first=True)
        self.a1 = nn.Linear(h, h, bias=False)
        self.a2 = nn.Linear(h, h, bias=False)
        self.v = nn.Linear(h, 1, bias=False)
        self.b = nn.Linear(d, 2 * h, bias=False)  # weight (2h, d) = B^T
        self.emb_dropout = nn.Dropout(cfg.emb_dropout)
        self.ct_dropout = nn.Dropout(cfg.ct_dropout)
        self.hard_gate = cfg.attention_gate == "hard_sigmoid"
        self._init(n_items, d, h)

    def _init(self, n_items: int, d: int, h: int) -> None:
        normal_(self.embedding.weight, math.sqrt(2.0 / n_items))
        with torch.no_grad():
            self.embedding.weight[0] = 0.0
        normal_(self.gru.weight_ih_l0, math.sqrt(2.0 / d))
        for block in self.gru.weight_hh_l0.split(h):  # r, z, n: one orthogonal matrix each
            nn.init.orthogonal_(block)
        nn.init.zeros_(self.gru.bias_ih_l0)
        nn.init.zeros_(self.gru.bias_hh_l0)
        normal_(self.a1.weight, math.sqrt(2.0 / h))
        normal_(self.a2.weight, math.sqrt(2.0 / h))
        normal_(self.v.weight, math.sqrt(2.0))
        normal_(self.b.weight, math.sqrt(2.0 / d))

    def attention(self, states: Tensor, last: Tensor, real: Tensor) -> Tensor:
        """(B, L) attention weights over the real positions."""
        pre = self.a1(states) + self.a2(last)[:, None, :]  # (B, L, h)
        gate = torch.clamp(0.2 * pre + 0.5, 0.0, 1.0) if self.hard_gate else torch.sigmoid(pre)
        e = self.v(gate).squeeze(-1)  # (B, L)
        return torch.softmax(e.masked_fill(~real, -math.inf), dim=1)

    def recur(self, x: Tensor, lengths: Tensor) -> Tensor:
        """GRU states of the right-padded batch ``x``; zero at the pads."""
        longest, cpu_lengths = x.shape[1], lengths.cpu()
        if int(cpu_lengths.min()) == longest:
            return self.gru(x)[0]
        # Packed, the GRU steps only the rows still running: a yoochoose1_64 batch of prefixes
        # is padded to 19 clicks for a mean of 4.5, and the GRU's forward and backward took
        # 46 ms instead of 81 (one thread, batch 512).
        packed = pack_padded_sequence(x, cpu_lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.gru(packed)[0], batch_first=True,
                                   total_length=longest)[0]  # fmt: skip

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        x = self.emb_dropout(self.embedding(items))  # (B, L, d)
        states = self.recur(x, lengths)  # (B, L, h)
        rows = torch.arange(len(items), device=items.device)
        last = states[rows, lengths - 1]  # c_g (B, h)
        real = torch.arange(items.shape[1], device=items.device)[None, :] < lengths[:, None]
        alpha = self.attention(states, last, real)
        local = torch.bmm(alpha[:, None, :], states).squeeze(1)  # c_l (B, h)
        return self.ct_dropout(torch.cat((local, last), dim=1))  # (B, 2h)

    def item_table(self) -> tuple[Tensor, int]:
        return self.b(self.embedding.weight[1:]), 0  # (n_items, 2h)


class NARM(NeuralRecommender):
    """Neural Attentive Recommendation Machine (see the module docstring)."""

    name = "narm"
    Config = NARMConfig

    def _network(self, n_items: int) -> NARMNetwork:
        return NARMNetwork(n_items, self.config)

    @property
    def kept_clicks(self) -> Keep:
        return self.config.truncation
