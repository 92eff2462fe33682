"""STAMP (Liu et al., KDD 2018): attention over the session's clicks with the last click and
the session mean as query, then two tanh layers and a trilinear score.

For a right-padded batch (B, L), with E: (n_items + 1, embedding_dim), row 0 the pad (zero):

- ``x_i = clip(E[s_i])``: each *looked-up* vector scaled down to L2 norm ``emb_max_norm``
  (TensorFlow's ``embedding_lookup(max_norm=...)``); the stored rows stay as they are, and
  the item vectors that score are unclipped;
- ``m_s = sum of the real x_i / length`` (the last click included), ``x_t`` the last click;
- ``alpha_i = w0 . sigmoid(W1 x_i + W2 x_t + W3 m_s)`` (no softmax; 0 on pads);
- ``m_a = sum_i alpha_i x_i + m_s`` (the reference code adds m_s; the paper does not);
- ``h_s = tanh(Ws m_a)``, ``h_t = tanh(Wt x_t)`` (no biases, as the code) and item ``i``
  scores ``(h_s * h_t) . E_i``; softmax cross-entropy.

Training as the reference (``uestcnlp/STAMP``): weights N(0, 0.05^2), embeddings
N(0, 0.002^2); Adam (learning rate 0.003 for RSC15, 0.005 for CIKM16/Diginetica); batch 512;
each gradient tensor clipped to L2 norm ``grad_clip`` (150 RSC15, 110 CIKM16). The reference
sums the loss over the batch, so its clipping acts on summed gradients: nextclick averages
the loss and clips at ``grad_clip / batch``, the same direction and the same Adam step up to
Adam's epsilon. The reference trains on batches of sessions of equal length, one step per
prefix length; nextclick shuffles padded prefixes by default (the masks make each row's
scores equal; the steps differ: the reference's many small batches of one session length
weigh long sessions more), and ``batching="equal_length"`` is the reference's (under
torchrun, where every rank takes as many steps as the one with fewest, a rank may drop the
last steps of a chunk). The reference reads whole sessions; nextclick keeps the last
``max_len`` = 50 clicks (the rule of every model here; longer sessions are rare in the
benchmarks). Presets: ``yoochoose1_64`` (0.003, clip 150), ``yoochoose1_4`` (the 1/4 log:
0.005, clip 10), ``diginetica`` (0.005, input norm 1.5, clip 110).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from nextclick.data.batching import Padded, equal_length_batches
from nextclick.data.sessions import SessionData
from nextclick.models.base import check
from nextclick.models.neural import (
    Network,
    NeuralConfig,
    NeuralRecommender,
    normal_,
    scale_to_norm,
)


@dataclass(frozen=True)
class STAMPConfig(NeuralConfig):
    """STAMP's parameters (the reference's RSC15 setting; see :class:`NeuralConfig`).

    Attributes
    ----------
    embedding_dim
        Item embedding size (also the attention and MLP size).
    emb_max_norm
        Looked-up input vectors are scaled down to this L2 norm (0: no clipping).
    grad_clip
        L2 norm each gradient tensor of the summed loss is clipped to (0: none).
    weight_std, emb_std
        Standard deviations of the initial weights and embeddings.
    batching
        ``prefixes`` (shuffled padded prefixes, nextclick) or ``equal_length`` (the
        reference's batches of sessions of one length, a step per prefix length).
    """

    n_epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.003
    max_len: int = 50
    embedding_dim: int = 100
    emb_max_norm: float = 1.0
    grad_clip: float = 150.0
    weight_std: float = 0.05
    emb_std: float = 0.002
    batching: Literal["prefixes", "equal_length"] = "prefixes"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.embedding_dim >= 1, "embedding_dim", "an integer >= 1")
        check(self.emb_max_norm >= 0, "emb_max_norm", "a number >= 0 (0: no clipping)")
        check(self.grad_clip >= 0, "grad_clip", "a number >= 0 (0: no clipping)")
        check(self.weight_std > 0 and self.emb_std > 0, "weight_std", "positive deviations")
        check(self.batching in ("prefixes", "equal_length"), "batching",
              "'prefixes' or 'equal_length'")  # fmt: skip


class STAMPNetwork(Network):
    def __init__(self, n_items: int, cfg: STAMPConfig) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.w1, self.w2, self.w3 = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.w0 = nn.Linear(d, 1, bias=False)
        self.ws = nn.Linear(d, d, bias=False)
        self.wt = nn.Linear(d, d, bias=False)
        self.max_norm = cfg.emb_max_norm
        normal_(self.embedding.weight, cfg.emb_std)
        with torch.no_grad():
            self.embedding.weight[0] = 0.0
        for layer in (self.w1, self.w2, self.w3, self.w0, self.ws, self.wt):
            normal_(layer.weight, cfg.weight_std)

    def _lookup(self, items: Tensor) -> Tensor:
        x = self.embedding(items)
        return scale_to_norm(x, self.max_norm) if self.max_norm > 0 else x

    def attention(self, x: Tensor, last: Tensor, mean: Tensor, real: Tensor) -> Tensor:
        """(B, L) attention coefficients, 0 on pads (no softmax)."""
        pre = self.w1(x) + self.w2(last)[:, None, :] + self.w3(mean)[:, None, :]
        return self.w0(torch.sigmoid(pre)).squeeze(-1) * real

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        x = self._lookup(items)  # (B, L, d); pads are zero vectors
        real = torch.arange(items.shape[1], device=items.device)[None, :] < lengths[:, None]
        last = x[torch.arange(len(items), device=items.device), lengths - 1]  # x_t (B, d)
        mean = x.sum(dim=1) / lengths[:, None]  # m_s (B, d)
        alpha = self.attention(x, last, mean, real)  # (B, L)
        attended = torch.bmm(alpha[:, None, :], x).squeeze(1) + mean  # m_a (B, d)
        return torch.tanh(self.ws(attended)) * torch.tanh(self.wt(last))


class STAMP(NeuralRecommender):
    """Short-Term Attention/Memory Priority model (see the module docstring)."""

    name = "stamp"
    Config = STAMPConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # uestcnlp/STAMP: rsc15 config and the 1/64 log; the 1/4 log; cikm16 config and its log.
        "yoochoose1_64": dict(learning_rate=0.003, emb_max_norm=1.0, grad_clip=150.0),
        "yoochoose1_4": dict(learning_rate=0.005, emb_max_norm=1.0, grad_clip=10.0),
        "diginetica": dict(learning_rate=0.005, emb_max_norm=1.5, grad_clip=110.0),
    }

    def _network(self, n_items: int) -> STAMPNetwork:
        return STAMPNetwork(n_items, self.config)

    def _batches(self, train: SessionData, rng: np.random.Generator) -> Iterable[Padded]:
        cfg = self.config
        if cfg.batching == "equal_length":
            return equal_length_batches(train, cfg.batch_size, cfg.max_len, rng)
        return super()._batches(train, rng)

    def _clip(self, network: STAMPNetwork, n_targets: float) -> None:
        # The reference clips the gradients of the loss summed over the batch; ours are of
        # the mean, n_targets times smaller.
        if self.config.grad_clip > 0:
            limit = self.config.grad_clip / n_targets
            for p in network.parameters():
                if p.grad is not None:
                    norm = float(p.grad.norm())
                    if norm > limit:
                        p.grad.mul_(limit / norm)
