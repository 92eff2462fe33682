"""GRU4Rec (Hidasi et al. 2016; Hidasi & Karatzoglou 2018), as the author's implementations.

Read top to bottom: the config (published names and defaults), the presets (the published
best settings), the network's parameters and their initialisation, one training step, and
the incremental scoring that evaluation and serving use.

Decisions where the published descriptions leave room:

- The GRU cell is PyTorch's form (reset gate applied to the recurrent product) in every
  input mode, as the reference's embedding modes; the reference's one-hot mode applies the
  reset gate to the state before the product (the spec allows either form).
- In one-hot mode the first layer's output takes ``dropout_p_embed`` (as in the reference),
  so a single-layer one-hot model does not use ``dropout_p_hidden``.
- ``constrained_embedding=True`` takes precedence over ``embedding``, as in the reference.
- As in the reference, the hidden state carried to the next step is the layer's output
  after dropout; at inference there is no dropout.
- Feed-forward layers (``ff_layers``) are tanh layers after the last GRU layer, with
  ``dropout_p_hidden`` on their outputs; with a shared embedding the item vectors take the
  size of the last of them.
- The 2016 ``bpr`` and ``top1`` losses average over the row's negatives (the positive
  column is left out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from nextclick.data.batching import Step, n_pairs, session_parallel
from nextclick.data.sessions import SessionData
from nextclick.errors import DataError
from nextclick.models.base import OnEpoch, check
from nextclick.models.neural import TorchRecommender, item_scores
from nextclick.training import distributed, fused, losses
from nextclick.training.checkpoint import Checkpoint, CheckpointError, fingerprint
from nextclick.training.distributed import Combined, StepExchange
from nextclick.training.loop import EpochStats, train_epochs
from nextclick.training.memory import empty_table_like
from nextclick.training.optim import AdagradM
from nextclick.training.sampling import (
    DropoutScales,
    Rng,
    SampleStore,
    generator_state,
    set_generator_state,
)

Loss = Literal["cross-entropy", "bpr-max", "top1-max", "bpr", "top1"]
#: Parameters with one row per item.
_ITEM_ROWS = frozenset({"Wy", "By", "E", "Wx0"})


@dataclass(frozen=True)
class GRU4RecConfig:
    """GRU4Rec's parameters; names and defaults as in the author's implementation.

    Attributes
    ----------
    layers
        Units of each GRU layer.
    loss
        ``cross-entropy``, ``bpr-max``, ``top1-max``, or the 2016 ``bpr`` / ``top1``.
    batch_size
        Session-parallel slots per mini-batch.
    dropout_p_embed, dropout_p_hidden
        Drop probabilities of the input embedding and of every hidden layer's output.
    learning_rate, momentum
        Adagrad with momentum.
    n_sample, sample_alpha
        Extra negatives per step, drawn ∝ support^sample_alpha (0 = uniform).
    bpreg
        Score regularisation of bpr-max.
    elu_param
        ELU alpha applied to scores by the ranking losses (0 = linear); unset, it is the
        reference's 0.5 for bpr-max and 0 for the others.
    final_act
        ``elu`` (the scores through ``elu_param``'s ELU: the author's later versions) or
        ``tanh``, the 2016 code's activation of the scores for its ``top1`` and ``bpr``.
    logq
        Weight of the log-Q sampling correction of cross-entropy (0 = off).
    embedding
        Separate input embedding size; ``"layersize"`` = the first layer's size; 0 = none.
    constrained_embedding
        Share the output item vectors as the input embedding (overrides ``embedding``).
    n_epochs
        Passes over the training data.
    ff_layers
        Optional tanh feed-forward layers between the last GRU layer and the output.
    sample_store_mb
        Memory of the sample store, in MB (10^6 bytes): the extra-sample ids (int64) drawn at
        once, rounded down to whole blocks of ``n_sample`` (at least one). The author's code
        holds 10M ids; 80 MB is the same store.
    seed
        Seed of initialisation, dropout and sampling.
    """

    layers: tuple[int, ...] = (100,)
    loss: Loss = "cross-entropy"
    batch_size: int = 64
    dropout_p_embed: float = 0.0
    dropout_p_hidden: float = 0.0
    learning_rate: float = 0.05
    momentum: float = 0.0
    n_sample: int = 2048
    sample_alpha: float = 0.5
    bpreg: float = 1.0
    elu_param: float | None = None
    final_act: Literal["elu", "tanh"] = "elu"
    logq: float = 0.0
    embedding: int | Literal["layersize"] = 0
    constrained_embedding: bool = True
    n_epochs: int = 10
    ff_layers: tuple[int, ...] = ()
    sample_store_mb: float = 80.0
    seed: int = 42

    def __post_init__(self) -> None:
        check(len(self.layers) > 0 and min(self.layers) > 0, "layers", "positive layer sizes")
        check(all(s > 0 for s in self.ff_layers), "ff_layers", "positive layer sizes")
        check(self.batch_size >= 1, "batch_size", "an integer >= 1")
        check(0 <= self.dropout_p_embed < 1, "dropout_p_embed", "a probability in [0, 1)")
        check(0 <= self.dropout_p_hidden < 1, "dropout_p_hidden", "a probability in [0, 1)")
        check(self.learning_rate > 0, "learning_rate", "a number > 0")
        check(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        check(self.n_sample >= 0, "n_sample", "an integer >= 0")
        check(self.sample_alpha >= 0, "sample_alpha", "a number >= 0")
        check(self.bpreg >= 0, "bpreg", "a number >= 0")
        check(self.loss in losses.LOSSES, "loss", f"one of {', '.join(losses.LOSSES)}")
        check(self.elu_param is None or self.elu_param >= 0, "elu_param", "a number >= 0")
        check(self.final_act == "elu" or (self.final_act == "tanh" and self.loss in ("bpr", "top1")
                                          and not self.elu_param),
              "final_act", "'elu', or 'tanh' with loss bpr or top1 and no elu_param")  # fmt: skip
        check(self.n_sample > 0 or self.batch_size >= 2, "batch_size",
              ">= 2 when n_sample=0 (a lone row has no negatives)")  # fmt: skip
        check(self.logq >= 0, "logq", "a number >= 0")
        check(self.embedding == "layersize" or self.embedding >= 0, "embedding",
              "an integer >= 0 or 'layersize'")  # fmt: skip
        check(self.n_epochs >= 1, "n_epochs", "an integer >= 1")
        check(self.sample_store_mb > 0, "sample_store_mb", "a number > 0 (MB)")

    @property
    def elu(self) -> float:
        """The ELU alpha in force (``elu_param``, or the loss's default)."""
        if self.elu_param is not None:
            return self.elu_param
        return 0.5 if self.loss == "bpr-max" else 0.0

    @property
    def embedding_size(self) -> int:
        """Size of the separate input embedding (0: none)."""
        return self.layers[0] if self.embedding == "layersize" else int(self.embedding)

    @property
    def output_size(self) -> int:
        """Size of the vector that scores items (last feed-forward or GRU layer)."""
        return self.ff_layers[-1] if self.ff_layers else self.layers[-1]


#: The published best settings (shared embedding, 10 epochs), by dataset.
PRESETS: dict[str, dict[str, object]] = {
    "rsc15": dict(loss="cross-entropy", layers=(100,), batch_size=32, dropout_p_embed=0.0,
                  dropout_p_hidden=0.4, learning_rate=0.2, momentum=0.2, n_sample=2048,
                  sample_alpha=0.5, bpreg=0.0, elu_param=0.0, logq=1.0),
    "yoochoose": dict(loss="cross-entropy", layers=(480,), batch_size=48, dropout_p_embed=0.0,
                      dropout_p_hidden=0.2, learning_rate=0.07, momentum=0.0, n_sample=2048,
                      sample_alpha=0.2, bpreg=0.0, elu_param=0.0, logq=1.0),
    "rees46": dict(loss="cross-entropy", layers=(512,), batch_size=240, dropout_p_embed=0.45,
                   dropout_p_hidden=0.0, learning_rate=0.065, momentum=0.0, n_sample=2048,
                   sample_alpha=0.5, bpreg=0.0, elu_param=0.0, logq=1.0),
    "coveo": dict(loss="bpr-max", layers=(512,), batch_size=144, dropout_p_embed=0.35,
                  dropout_p_hidden=0.0, learning_rate=0.05, momentum=0.4, n_sample=2048,
                  sample_alpha=0.2, bpreg=1.85, elu_param=1.0, logq=0.0),
    "retailrocket": dict(loss="bpr-max", layers=(224,), batch_size=80, dropout_p_embed=0.5,
                         dropout_p_hidden=0.05, learning_rate=0.05, momentum=0.4,
                         n_sample=2048, sample_alpha=0.4, bpreg=1.95, elu_param=0.5,
                         logq=0.0),
    "diginetica": dict(loss="bpr-max", layers=(512,), batch_size=128, dropout_p_embed=0.5,
                       dropout_p_hidden=0.3, learning_rate=0.05, momentum=0.15,
                       n_sample=2048, sample_alpha=0.3, bpreg=0.9, elu_param=1.0, logq=0.0),
}  # fmt: skip
for _preset in PRESETS.values():
    _preset.update(constrained_embedding=True, embedding=0, n_epochs=10)


def gru_gate_grads(
    grad: Tensor, h0: Tensor, r: Tensor, z: Tensor, n: Tensor, gh_n: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradients of the GRU's input and recurrent pre-activations (r, z, n blocks) from
    the gradient of its output ``h = (1 - z) n + z h0``, ``n = tanh(gi_n + r gh_n)``."""
    d_n = grad * (1.0 - z)
    d_z = grad * (h0 - n)
    d_an = d_n * (1.0 - n * n)  # through tanh
    d_r = d_an * gh_n
    d_gi = torch.cat((d_r * r * (1.0 - r), d_z * z * (1.0 - z), d_an), dim=1)
    d_gh = torch.cat((d_gi[:, : 2 * r.shape[1]], d_an * r), dim=1)
    return d_gi, d_gh


@dataclass(frozen=True)
class _Work:
    """What every training step of one ``fit`` uses (items in popularity order)."""

    params: dict[str, Tensor]
    grads: dict[str, Tensor]  # views of flat_grad, written by the backward pass
    flat_grad: Tensor
    optimizer: AdagradM
    dropout: DropoutScales
    log_support: Tensor  # (n_items,) for the autograd losses
    column_weights: tuple[np.ndarray, np.ndarray]  # exp(-logq log Q) for targets, samples
    scratch: np.ndarray  # -1 filled, for fused.unique_inverse
    store: SampleStore | None  # extra negative samples
    exchange: StepExchange | None  # several processes: combines their gradients


@dataclass
class _Resumable:
    """A training's checkpoint: the parameters (in training order), the optimizer's sums,
    where the sample store and the dropout blocks are, and the generators' states."""

    checkpoint: Checkpoint
    work: _Work
    rngs: tuple[Rng | None, Rng]

    def resume(self, n_epochs: int) -> list[EpochStats]:
        """Load the saved state if there is one; the finished epochs."""
        state = self.checkpoint.load(n_epochs, {"params", "acc", "mom", "store", "dropout",
                                                "rngs"})  # fmt: skip
        if state is None:
            return []
        work = self.work
        if state["params"].keys() != work.params.keys():
            raise CheckpointError(f"{self.checkpoint.path}: parameters "
                                  f"{', '.join(state['params'])}, expected "
                                  f"{', '.join(work.params)}")  # fmt: skip
        for name, tensor in state["params"].items():
            work.params[name].copy_(tensor)  # in place: the optimizer works on views of them
        for kept, saved in ((work.optimizer.acc, state["acc"]), (work.optimizer.mom, state["mom"])):
            for name, tensor in saved.items():
                kept[name].copy_(tensor)
        # The blocks are drawn again from their generators' earlier states, then every
        # generator goes to where it was when the checkpoint was written.
        if work.store is not None:
            work.store.restore(state["store"])
        work.dropout.restore(state["dropout"])
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            if rng is not None:
                set_generator_state(rng, rng_state)
        return state["history"]

    def save(self, history: list[EpochStats]) -> None:
        work = self.work
        self.checkpoint.save({
            "params": work.params, "acc": work.optimizer.acc, "mom": work.optimizer.mom,
            "store": None if work.store is None else work.store.state(),
            "dropout": work.dropout.state(),
            "rngs": [None if rng is None else generator_state(rng) for rng in self.rngs],
            "history": history,
        })  # fmt: skip


class GRUState(NamedTuple):
    """Incremental state of ``n`` sessions: hidden vectors per layer and the scoring vector."""

    hidden: list[Tensor]  # per layer (n, layers[i])
    output: Tensor  # (n, output_size)


class GRU4Rec(TorchRecommender):
    """GRU4Rec with session-parallel mini-batches, sampled outputs and ranking losses."""

    name = "gru4rec"
    Config = GRU4RecConfig
    trains_in_epochs = True
    trains_distributed = True
    checkpoints = True
    presets = PRESETS

    def __init__(self, config: GRU4RecConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config, device)
        self.params_: dict[str, Tensor] = {}

    # -- parameters ----------------------------------------------------------------------

    def _mode(self) -> str:
        cfg = self.config
        if cfg.constrained_embedding:
            return "shared"
        return "separate" if cfg.embedding_size else "onehot"

    def _init_params(self, n_items: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Uniform in ±sqrt(6 / (fan_in + fan_out)), each gate block separately; biases 0."""
        cfg = self.config

        def uniform(rows: int, cols: int, blocks: int = 1) -> Tensor:
            # `blocks` gate blocks stacked along the rows, each of shape (rows, cols).
            sigma = math.sqrt(6.0 / (rows + cols))
            return (torch.rand(blocks * rows, cols, generator=generator) * 2 - 1) * sigma

        out = cfg.output_size
        params: dict[str, Tensor] = {"Wy": uniform(n_items, out), "By": torch.zeros(n_items)}
        mode = self._mode()
        first = 0
        if mode == "shared":
            n_input = out
        elif mode == "separate":
            n_input = cfg.embedding_size
            params["E"] = uniform(n_items, n_input)
        else:
            h = cfg.layers[0]
            # One-hot input: the first layer's input weights are item rows (x, r, z blocks).
            params["Wx0"] = torch.cat([uniform(n_items, h) for _ in range(3)], dim=1)
            params["Wh0"] = torch.cat([uniform(h, h) for _ in range(3)], dim=1)
            params["Bh0"] = torch.zeros(3 * h)
            n_input, first = h, 1
        for i in range(first, len(cfg.layers)):
            h = cfg.layers[i]
            fan_in = n_input if i == 0 else cfg.layers[i - 1]
            params[f"gru{i}.weight_ih"] = uniform(h, fan_in, blocks=3)
            params[f"gru{i}.weight_hh"] = uniform(h, h, blocks=3)
            params[f"gru{i}.bias_ih"] = torch.zeros(3 * h)
            params[f"gru{i}.bias_hh"] = torch.zeros(3 * h)
        size = cfg.layers[-1]
        for j, units in enumerate(cfg.ff_layers):
            params[f"ff{j}.weight"] = uniform(units, size)
            params[f"ff{j}.bias"] = torch.zeros(units)
            size = units
        return {name: p.to(self.device) for name, p in params.items()}

    # -- the network -----------------------------------------------------------------------
    #
    # Forward and backward are written out (no autograd): a training step is a short,
    # fixed sequence of tensor operations whose gradients the tests check against autograd.
    # The hidden state is detached at every step (no backpropagation through time).

    def _forward(
        self,
        x: Tensor,
        hidden: list[Tensor],
        p: dict[str, Tensor],
        dropout: DropoutScales | None,
        tape: list | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """One step for every row: (scoring vector (n, output_size), new hidden states).

        ``x`` is the (n, ·) input: embedding rows, or in one-hot mode the items' rows of
        ``Wx0``. ``dropout`` draws the training masks (None at inference). When
        ``tape`` is a list, what the backward pass needs is appended to it.
        """
        cfg = self.config
        new_hidden = []
        first = 0
        if self._mode() == "onehot":
            h0 = hidden[0]
            size = h0.shape[1]
            vx = x + p["Bh0"]  # (n, 3h): blocks x, r, z
            vh = h0 @ p["Wh0"]  # (n, 3h)
            rz = torch.sigmoid(vx[:, size:] + vh[:, size:])  # (n, 2h)
            r, z = rz[:, :size], rz[:, size:]
            c = torch.tanh(r * vh[:, :size] + vx[:, :size])
            h = h0 + z * (c - h0)  # (1 - z) h0 + z c
            if tape is not None:
                tape.append(("onehot", h0, vh, r, z, c))
            # As the reference: this layer's output takes the embedding dropout.
            layer_input = self._dropout(h, cfg.dropout_p_embed, dropout, tape)
            new_hidden.append(layer_input)
            first = 1
        else:
            layer_input = self._dropout(x, cfg.dropout_p_embed, dropout, tape)
        for i in range(first, len(cfg.layers)):
            h0 = hidden[i]
            size = h0.shape[1]
            gi = torch.addmm(p[f"gru{i}.bias_ih"], layer_input, p[f"gru{i}.weight_ih"].T)
            gh = torch.addmm(p[f"gru{i}.bias_hh"], h0, p[f"gru{i}.weight_hh"].T)
            rz = torch.sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size])  # (n, 2h): r, z
            r, z = rz[:, :size], rz[:, size:]
            gh_n = gh[:, 2 * size :]
            n = torch.tanh(gi[:, 2 * size :] + r * gh_n)
            h = n + z * (h0 - n)  # PyTorch's GRU: (1 - z) n + z h0
            if tape is not None:
                tape.append(("gru", i, layer_input, h0, r, z, n, gh_n))
            layer_input = self._dropout(h, cfg.dropout_p_hidden, dropout, tape)
            new_hidden.append(layer_input)
        for j in range(len(cfg.ff_layers)):
            out = torch.tanh(torch.addmm(p[f"ff{j}.bias"], layer_input, p[f"ff{j}.weight"].T))
            if tape is not None:
                tape.append(("ff", j, layer_input, out))
            layer_input = self._dropout(out, cfg.dropout_p_hidden, dropout, tape)
        return layer_input, new_hidden

    @staticmethod
    def _dropout(
        x: Tensor, prob: float, dropout: DropoutScales | None, tape: list | None
    ) -> Tensor:
        if dropout is None or prob <= 0:
            return x
        scale = dropout((x.shape[0], x.shape[1]), prob)
        if tape is not None:
            tape.append(("dropout", scale))
        return x * scale

    def _backward(
        self, grad: Tensor, tape: list, p: dict[str, Tensor], grads: dict[str, Tensor]
    ) -> Tensor:
        """Backward through the recorded step; writes the gradients of the dense parameters
        into ``grads`` (one tensor per name, preallocated) and returns the gradient of the
        input rows ``x``."""
        for record in reversed(tape):
            kind = record[0]
            if kind == "dropout":
                grad = grad * record[1]
            elif kind == "ff":
                _, j, inp, out = record
                grad = grad * (1.0 - out * out)
                torch.mm(grad.T, inp, out=grads[f"ff{j}.weight"])
                torch.sum(grad, 0, out=grads[f"ff{j}.bias"])
                grad = grad @ p[f"ff{j}.weight"]
            elif kind == "gru":
                _, i, inp, h0, r, z, n, gh_n = record
                if grad.device.type == "cpu":
                    d_gi, d_gh = fused.gru_gate_grads(grad, h0, r, z, n, gh_n)
                else:
                    d_gi, d_gh = gru_gate_grads(grad, h0, r, z, n, gh_n)
                torch.mm(d_gi.T, inp, out=grads[f"gru{i}.weight_ih"])
                torch.sum(d_gi, 0, out=grads[f"gru{i}.bias_ih"])
                torch.mm(d_gh.T, h0, out=grads[f"gru{i}.weight_hh"])
                torch.sum(d_gh, 0, out=grads[f"gru{i}.bias_hh"])
                grad = d_gi @ p[f"gru{i}.weight_ih"]
            else:  # one-hot first layer
                _, h0, vh, r, z, c = record
                size = h0.shape[1]
                d_c = grad * z
                d_z = grad * (c - h0)
                d_ac = d_c * (1.0 - c * c)
                d_r = d_ac * vh[:, :size]
                d_rz = torch.cat((d_r * r * (1.0 - r), d_z * z * (1.0 - z)), dim=1)
                d_vx = torch.cat((d_ac, d_rz), dim=1)  # blocks x, r, z
                d_vh = torch.cat((d_ac * r, d_rz), dim=1)
                torch.mm(h0.T, d_vh, out=grads["Wh0"])
                torch.sum(d_vx, 0, out=grads["Bh0"])
                grad = d_vx
        return grad

    def _input_name(self) -> str:
        """The item-row matrix the network's input reads."""
        return {"shared": "Wy", "separate": "E", "onehot": "Wx0"}[self._mode()]

    def _input_rows(self, items: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        return (params or self.params_)[self._input_name()].index_select(0, items)

    # -- training ------------------------------------------------------------------------

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch,
             checkpoint: Path | None = None) -> None:  # fmt: skip
        cfg = self.config
        if (self.item_support_ == 0).any():
            raise DataError(
                f"{int((self.item_support_ == 0).sum())} items of the item index have no "
                "training event; build the index from the training data"
            )
        # Initialisation from torch's CPU generator on every device; on the CPU, samples and
        # dropout come from NumPy generators (drawn in blocks), elsewhere from the device's.
        # Under torchrun every rank initialises alike and trains on its own share of the
        # sessions with its own samples and dropout.
        group = distributed.current()
        init = torch.Generator(device="cpu").manual_seed(cfg.seed)
        sample_rng, dropout_rng = self._rngs(cfg.seed, group)
        params, sessions, support, rank_t = self._by_popularity(train, init)
        if group is not None:
            sessions = distributed.shard(sessions, group)
        work = self._work(params, support, dropout_rng, group, sample_rng)
        saved = None if checkpoint is None else _Resumable(
            Checkpoint(checkpoint, fingerprint(self.name, cfg, train, self.device)), work,
            (sample_rng, dropout_rng))  # fmt: skip
        done = [] if saved is None else saved.resume(cfg.n_epochs)
        hidden: list[Tensor] = []

        def publish() -> None:
            self.params_ = {
                name: p.index_select(0, rank_t) if name in _ITEM_ROWS else p.clone()
                for name, p in params.items()
            }

        def step(batch: Step | distributed.Idle) -> Tensor | float:
            nonlocal hidden
            loss, hidden = self._session_step(batch, hidden, work)
            return loss

        def end_of_epoch(stats: EpochStats) -> None:
            if on_epoch is not None:
                publish()
                on_epoch(stats)
            done.append(stats)
            if saved is not None:
                saved.save(done)

        def batches(epoch: int) -> Iterable[Step | distributed.Idle]:
            steps = session_parallel(sessions, cfg.batch_size)
            return steps if work.exchange is None else work.exchange.batches(steps)

        self.history_ = train_epochs(
            batches, n_pairs(sessions), cfg.n_epochs, step, name="gru4rec", progress=progress,
            on_epoch=end_of_epoch, learning_rate=lambda: cfg.learning_rate,
            across_ranks=None if group is None else distributed.summed, done=list(done),
        )  # fmt: skip
        publish()

    def _by_popularity(
        self, train: SessionData, init: torch.Generator
    ) -> tuple[dict[str, Tensor], SessionData, np.ndarray, Tensor]:
        """The initial parameters, the sessions and the item support with items renumbered
        by popularity (most clicked first), and each item's new number.

        Training runs in that order: the rows a step reads and updates then crowd together
        in memory, which keeps them in cache. The model's own item order is restored
        whenever parameters are handed out.
        """
        order = np.argsort(-self.item_support_, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        order_t = torch.as_tensor(order, device=self.device)
        params = {
            name: torch.index_select(p, 0, order_t, out=empty_table_like(p))
            if name in _ITEM_ROWS else p
            for name, p in self._init_params(train.n_items, init).items()
        }  # fmt: skip
        sessions = replace(train, items=rank[train.items])
        support = self.item_support_[order].astype(np.float64)
        return params, sessions, support, torch.as_tensor(rank, device=self.device)

    def _session_step(
        self, batch: Step | distributed.Idle, hidden: list[Tensor], work: _Work
    ) -> tuple[Tensor | float, list[Tensor]]:
        """One session-parallel step: carry or reset each slot's hidden state, add the
        step's negative samples, train; returns (loss, hidden)."""
        if isinstance(batch, distributed.Idle):
            self._idle_step(work)
            return 0.0, hidden
        if batch.keep is not None:
            keep = torch.as_tensor(batch.keep, device=self.device)
            hidden = [h.index_select(0, keep) for h in hidden]
        if batch.reset.all():  # first step of an epoch (or every slot starts anew)
            hidden = [torch.zeros(len(batch.inputs), h, device=self.device)
                      for h in self.config.layers]  # fmt: skip
        elif batch.reset.any():
            alive = torch.as_tensor(~batch.reset, dtype=torch.float32, device=self.device)
            hidden = [h * alive[:, None] for h in hidden]
        if work.store is None and len(batch.inputs) < 2:
            # One row without extra samples has no negatives to rank against; only the
            # last session's tail is left (the reference ends the epoch here).
            self._idle_step(work, active=True)
            return 0.0, hidden
        x = torch.as_tensor(batch.inputs, device=self.device)
        y = torch.as_tensor(batch.targets, device=self.device)
        if work.store is not None:
            y = torch.cat((y, work.store.next()))
        return self._train_step(x, y, hidden, work)

    def _rngs(self, seed: int, group: distributed.Group | None) -> tuple[Rng, Rng]:
        """Sources of negative samples and dropout, a rank's own: NumPy generators on the
        CPU (they draw in blocks), the device's generator elsewhere (initialisation is
        always torch's CPU generator)."""
        sequence = distributed.seed_sequence(seed, group)
        if self.device.type == "cpu":
            samples, dropout = sequence.spawn(2)
            return np.random.default_rng(samples), np.random.default_rng(dropout)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if group is None else int(sequence.generate_state(1)[0]))
        return generator, generator

    def _work(
        self,
        params: dict[str, Tensor],
        support: np.ndarray,
        dropout_rng: Rng,
        group: distributed.Group | None,
        sample_rng: Rng | None = None,
    ) -> _Work:
        """The state of training ``params`` (items in the order of ``support``); negative
        samples come from ``sample_rng`` when the config asks for them."""
        cfg = self.config
        store = (
            SampleStore(support, cfg.sample_alpha, cfg.n_sample,
                        round(cfg.sample_store_mb * 1e6), sample_rng)
            if cfg.n_sample > 0 and sample_rng is not None else None
        )  # fmt: skip
        # Dense parameters and their gradients live in flat tensors, so one optimizer pass
        # updates them all and the backward pass writes the gradients in place.
        dense_names = [name for name in params if name not in _ITEM_ROWS]
        flat = torch.cat([params[name].reshape(-1) for name in dense_names])
        flat_grad = torch.zeros_like(flat)
        grads: dict[str, Tensor] = {}
        offset = 0
        for name in dense_names:
            size = params[name].numel()
            params[name] = flat[offset : offset + size].view(params[name].shape)
            grads[name] = flat_grad[offset : offset + size].view(params[name].shape)
            offset += size
        rows = {name: params[name] for name in _ITEM_ROWS if name in params}
        dtype = torch.empty((), dtype=params["Wy"].dtype).numpy().dtype
        return _Work(
            params=params,
            grads=grads,
            flat_grad=flat_grad,
            optimizer=AdagradM({"dense": flat, **rows}, cfg.learning_rate, cfg.momentum),
            dropout=DropoutScales(dropout_rng),
            log_support=torch.log(
                torch.as_tensor(support, dtype=params["Wy"].dtype, device=self.device)
            ),
            column_weights=(
                (support**-cfg.logq).astype(dtype),
                (support ** (-cfg.logq * cfg.sample_alpha)).astype(dtype),
            ),
            scratch=np.full(len(support), -1, dtype=np.int64),
            store=store,
            exchange=None if group is None else StepExchange(
                group, params["Wy"].shape[1], params[self._input_name()].shape[1]
            ),
        )  # fmt: skip

    def _train_step(
        self, x: Tensor, y: Tensor, hidden: list[Tensor], work: _Work
    ) -> tuple[Tensor | float, list[Tensor]]:
        """Forward, loss, backward and update for one mini-batch; returns (loss, hidden).

        Only the rows of the item-indexed matrices that this step uses are gathered,
        scored and updated: the step never touches (or scores) the whole catalogue. Sampled
        columns repeat popular items, so each distinct output row is scored, differentiated
        and updated once (the loss still sees every column).
        """
        p = work.params
        if self.device.type == "cpu":
            unique, inverse = (
                torch.from_numpy(a) for a in fused.unique_inverse(y.numpy(), work.scratch)
            )
        else:
            unique, inverse = torch.unique(y, return_inverse=True)
        x_rows = self._input_rows(x, p)
        out_rows = p["Wy"].index_select(0, unique)  # (k, d)
        tape: list = []
        vector, hidden = self._forward(x_rows, hidden, p, work.dropout, tape)
        R = torch.addmm(p["By"].index_select(0, unique), vector, out_rows.T)  # (n, k)
        loss, d_R, d_bias = self._loss_and_grad(R, y, inverse, work)
        d_x = self._backward(d_R @ out_rows, tape, p, work.grads)
        grads = Combined(work.flat_grad, unique, d_R.T @ vector, d_bias, x, d_x)
        if work.exchange is not None:
            combined = work.exchange.combine(grads)
            assert combined is not None  # this rank is still running
            grads = combined
        self._apply(work, grads)
        return loss, hidden

    def _idle_step(self, work: _Work, *, active: bool = False) -> None:
        """A step without gradients of this rank's own (several processes only)."""
        if work.exchange is not None:
            grads = work.exchange.idle(work.flat_grad, active=active)
            if grads is not None and grads.n_trained > 0:
                self._apply(work, grads)

    def _apply(self, work: _Work, grads: Combined) -> None:
        """One optimizer step: the dense parameters, then the item rows the step used."""
        work.optimizer.dense("dense", grads.dense)
        in_name = self._input_name()
        bias = ("By", grads.d_bias)
        if in_name == "Wy":
            # Shared embedding: one update of Wy with the input and output gradients summed.
            extra = (grads.inputs, grads.d_inputs)
            work.optimizer.rows("Wy", grads.rows, grads.d_rows, extra=extra, bias=bias)
        else:
            work.optimizer.rows("Wy", grads.rows, grads.d_rows, bias=bias)
            work.optimizer.rows(in_name, None, None, extra=(grads.inputs, grads.d_inputs))

    def _loss_and_grad(
        self, R: Tensor, y: Tensor, inverse: Tensor, work: _Work
    ) -> tuple[Tensor | float, Tensor, Tensor]:
        """The loss of the step (divided by ``batch_size``) and its gradients with respect
        to the distinct items' scores ``R`` (n, k) and biases (k,).

        Column j of the loss's score matrix is ``R[:, inverse[j]]``. Compiled kernels on
        the CPU for the two published losses; otherwise autograd through the formula in
        ``losses``.
        """
        cfg = self.config
        n, k = R.shape
        scale = 1.0 / cfg.batch_size
        d_bias = R.new_empty(k)
        if self.device.type == "cpu" and cfg.loss == "cross-entropy":
            d_R = R.new_empty((n, k))
            loss = fused.cross_entropy_grad(R, y, inverse, *work.column_weights, scale, d_R,
                                            d_bias)  # fmt: skip
            return loss * scale, d_R, d_bias
        d_R = R.new_zeros((n, k))
        R = R.index_select(1, inverse)
        if self.device.type == "cpu" and cfg.loss == "bpr-max":
            loss = fused.bpr_max_grad(R, cfg.bpreg, cfg.elu, inverse, scale, d_R, d_bias)
            return loss * scale, d_R, d_bias
        with torch.enable_grad():
            R.requires_grad_(True)
            loss = self._loss(R, y, n, work.log_support)
            (grad,) = torch.autograd.grad(loss, R)
        d_R.index_add_(1, inverse, grad, alpha=scale)
        return loss.detach() * scale, d_R, torch.sum(d_R, 0, out=d_bias)

    def _log_q(self, y: Tensor, n: int, log_support: Tensor) -> Tensor:
        """log Q of each sampled column: support for in-batch targets, support^alpha after."""
        log_q = log_support.index_select(0, y)
        return torch.cat((log_q[:n], self.config.sample_alpha * log_q[n:]))

    def _loss(self, R: Tensor, y: Tensor, n: int, log_support: Tensor) -> Tensor:
        cfg = self.config
        if cfg.loss == "cross-entropy":
            log_q = self._log_q(y, n, log_support) if cfg.logq > 0 else None
            return losses.cross_entropy(R, log_q, cfg.logq)
        if cfg.loss == "bpr-max":
            return losses.bpr_max(R, cfg.bpreg, cfg.elu)
        if cfg.loss == "top1-max":
            return losses.top1_max(R, cfg.elu)
        if cfg.final_act == "tanh":
            R = torch.tanh(R)
        if cfg.loss == "bpr":
            return losses.bpr(R, cfg.elu)
        return losses.top1(R, cfg.elu)

    # -- incremental scoring ---------------------------------------------------------------

    def init_state(self, n: int) -> GRUState:
        cfg = self.config
        hidden = [torch.zeros(n, h, device=self.device) for h in cfg.layers]
        return GRUState(hidden, torch.zeros(n, cfg.output_size, device=self.device))

    @torch.no_grad()
    def step(self, state: GRUState, items: np.ndarray) -> GRUState:
        x = torch.as_tensor(np.asarray(items, dtype=np.int64), device=self.device)
        x_rows = self._input_rows(x)
        vector, hidden = self._forward(x_rows, state.hidden, self.params_, None)
        return GRUState(hidden, vector)

    def select(self, state: GRUState, rows: np.ndarray) -> GRUState:
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        return GRUState([h[index] for h in state.hidden], state.output[index])

    @torch.no_grad()
    def scores(self, state: GRUState, start: int = 0, stop: int | None = None) -> np.ndarray:
        Wy = self.params_["Wy"][start:stop]
        By = self.params_["By"][start:stop]
        return item_scores(state.output, Wy, By)  # (n, stop - start)

    keeps_state = True

    def pack_states(self, state: GRUState) -> list[bytes]:
        rows = torch.cat([*state.hidden, state.output], dim=1).to("cpu", torch.float32)
        return [row.tobytes() for row in rows.numpy()]

    def unpack_states(self, blobs: Sequence[bytes]) -> GRUState:
        sizes = [*self.config.layers, self.config.output_size]
        flat = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), sum(sizes))
        parts = torch.from_numpy(flat.copy()).to(self.device).split(sizes, dim=1)
        return GRUState([p.contiguous() for p in parts[:-1]], parts[-1].contiguous())

    # -- persistence -----------------------------------------------------------------------

    def _tensors(self) -> dict[str, Tensor]:
        return self.params_

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        params = self._init_params(len(self._index()), torch.Generator())
        return {name: tuple(t.shape) for name, t in params.items()}

    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.params_ = tensors

