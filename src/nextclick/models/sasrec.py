"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the session, the last
position's output scores the next item.

For a left-padded batch of sessions (B, L), E: (n_items + 1, hidden_size), row 0 the pad,
and P: (max_len, hidden_size) positions counted from the right (the last click always gets
the last row, whatever the padding):

- ``x = dropout(E[s] * sqrt(d) + P[pos])``, pad rows zeroed;
- ``n_layers`` blocks in the original (TensorFlow) order: ``Q = LN(x)``,
  ``x = Q + MHA(Q, x, x)``, ``x = LN(x)``, ``x = x + drop(W2 drop(ReLU(W1 x)))``, pad rows
  zeroed; the attention has Q, K and V projections with biases, no output projection,
  dropout on its weights, and a causal **and** key-padding mask (a pad query, which would
  have no key left, attends to itself);
- a final LayerNorm gives F, and item ``i`` scores ``F_t . E_i`` (shared embedding, no bias).

The session setting (FOLLOWUPS.md): sequences are sessions, not prefix-augmented; every real
position is a training target. Losses: ``cross-entropy`` (softmax over the catalogue at
every real position, in item blocks when large), ``sampled`` (the batch's targets and uniform
extras, log-Q corrected; a session's own other targets are never its negatives), ``bce``
(the paper: one uniform negative per position, outside the session's items) and ``gbce``
(gSASRec: ``n_negatives`` uniform negatives, calibration ``gbce_t``). Xavier-normal
initialisation of every matrix, Adam with beta2 = 0.98.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from nextclick.data.batching import Padded, sequence_batches
from nextclick.data.sessions import SessionData
from nextclick.models.base import check
from nextclick.models.neural import Network, NeuralConfig, NeuralRecommender
from nextclick.training import losses


@dataclass(frozen=True)
class SASRecConfig(NeuralConfig):
    """SASRec's parameters (the paper's names and its defaults for short sequences; see
    :class:`NeuralConfig`).

    Attributes
    ----------
    hidden_size, n_layers, n_heads
        Model width, attention blocks, heads per block.
    dropout
        Dropout of the input, the attention weights and the feed-forward layers.
    loss
        ``cross-entropy``, ``sampled``, ``bce`` or ``gbce`` (see the module docstring).
    n_negatives, gbce_t
        Negatives per position and calibration t of ``gbce`` (t = 0 is ``bce`` with
        ``n_negatives`` negatives).
    """

    n_epochs: int = 20
    batch_size: int = 128
    max_len: int = 50
    hidden_size: int = 50
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.5
    loss: Literal["cross-entropy", "sampled", "bce", "gbce"] = "cross-entropy"
    n_negatives: int = 256
    gbce_t: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden_size >= 1, "hidden_size", "an integer >= 1")
        check(self.n_layers >= 1, "n_layers", "an integer >= 1")
        check(self.n_heads >= 1 and self.hidden_size % self.n_heads == 0, "n_heads",
              "an integer >= 1 dividing hidden_size")  # fmt: skip
        check(0 <= self.dropout < 1, "dropout", "a probability in [0, 1)")
        check(self.n_negatives >= 1, "n_negatives", "an integer >= 1")
        check(0 <= self.gbce_t <= 1, "gbce_t", "a number in [0, 1]")

    @classmethod
    def losses(cls) -> tuple[str, ...]:
        return ("cross-entropy", "sampled", "bce", "gbce")


class Attention(nn.Module):
    """Multi-head attention as the original SASRec: projections with biases, no output
    projection, dropout on the attention weights."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        self.heads = heads
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, allowed: Tensor) -> Tensor:
        """``allowed`` (B, L, L): query t may attend to key j."""
        B, L, d = queries.shape
        h = self.heads

        def split(x: Tensor) -> Tensor:
            return x.view(B, L, h, d // h).transpose(1, 2)  # (B, h, L, d/h)

        q, k, v = split(self.q(queries)), split(self.k(keys)), split(self.v(keys))
        weights = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)  # (B, h, L, L)
        weights = weights.masked_fill(~allowed[:, None], -math.inf).softmax(dim=-1)
        out = self.dropout(weights) @ v  # (B, h, L, d/h)
        return out.transpose(1, 2).reshape(B, L, d)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d, eps=1e-8)
        self.attention = Attention(d, heads, dropout)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d),
                                 nn.Dropout(dropout))  # fmt: skip

    def forward(self, x: Tensor, allowed: Tensor, real: Tensor) -> Tensor:
        q = self.attention_norm(x)
        x = q + self.attention(q, x, allowed)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * real[..., None]


class SASRecNetwork(Network):
    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d, eps=1e-8)
        self.max_len = cfg.max_len
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.embedding.weight[0] = 0.0

    def sequence(self, items: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, d) outputs of every position of left-padded rows (pad rows 0)."""
        L = items.shape[1]
        column = torch.arange(L, device=items.device)
        real = column[None, :] >= (L - lengths)[:, None]  # (B, L)
        position = self.positions.weight[self.max_len - L :]  # right-aligned (L, d)
        x = self.embedding(items) * math.sqrt(self.embedding.embedding_dim) + position
        x = self.dropout(x) * real[..., None]
        causal = column[None, :] <= column[:, None]  # key j <= query t
        allowed = causal[None] & real[:, None, :]
        allowed = allowed | torch.eye(L, dtype=torch.bool, device=items.device)[None]
        for block in self.blocks:
            x = block(x, allowed, real)
        return self.norm(x) * real[..., None]

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        return self.sequence(items, lengths)[:, -1]  # the last click (left padding)


class SASRec(NeuralRecommender):
    """Self-attentive sequential recommendation (see the module docstring)."""

    name = "sasrec"
    Config = SASRecConfig
    padding_side = "left"

    def _network(self, n_items: int) -> SASRecNetwork:
        return SASRecNetwork(n_items, self.config)

    def _optimizer(self, network: SASRecNetwork) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.Adam(network.parameters(), lr=cfg.learning_rate,
                                betas=(0.9, 0.98), weight_decay=cfg.l2, fused=True)  # fmt: skip

    def _batches(self, train: SessionData, rng: np.random.Generator) -> Iterable[Padded]:
        return sequence_batches(train, self.config.batch_size, self.config.max_len, rng)

    def _loss(self, network: SASRecNetwork, batch: Padded, rng: np.random.Generator) -> Tensor:
        items, lengths, targets = self._tensors_of(batch)
        outputs = network.sequence(items, lengths)  # (B, L, d)
        real = targets > 0
        queries, positive = outputs[real], targets[real] - 1  # (n, d), (n,)
        cfg = self.config
        if cfg.loss in ("cross-entropy", "sampled"):
            rows = torch.arange(len(items), device=self.device)[:, None].expand_as(targets)
            return self._softmax(queries, network, positive, rng, groups=rows[real])
        weights = network.item_vectors()
        k = 1 if cfg.loss == "bce" else cfg.n_negatives
        negatives = rng.integers(len(weights), size=(len(positive), k))
        if cfg.loss == "bce":
            negatives = _outside_session(negatives, batch, rng, len(weights))
        negatives_t = torch.as_tensor(negatives, device=self.device)
        pos_logits = (queries * weights[positive]).sum(dim=1)
        neg_logits = torch.einsum("nd,nkd->nk", queries, weights[negatives_t])
        if cfg.loss == "bce":
            return losses.bce_negatives(pos_logits, neg_logits)
        return losses.gbce(pos_logits, neg_logits, len(weights), cfg.gbce_t)


def _outside_session(negatives: np.ndarray, batch: Padded, rng: np.random.Generator,
                     n_items: int) -> np.ndarray:  # fmt: skip
    """Redraw the negatives that are items of their position's session (the paper samples
    outside the sequence); a few rounds, then a clash is left (a session of almost every
    item)."""
    real = batch.targets > 0
    session_of = np.broadcast_to(np.arange(len(batch.items))[:, None], real.shape)[real]
    members = np.concatenate((batch.items, batch.targets[:, -1:]), axis=1)[session_of] - 1
    for _ in range(10):
        clash = (members[:, :, None] == negatives[:, None, :]).any(axis=1)
        if not clash.any():
            break
        negatives = np.where(clash, rng.integers(n_items, size=negatives.shape), negatives)
    return negatives
