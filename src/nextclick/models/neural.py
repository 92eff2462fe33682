"""What the torch models share: a device, state-dict persistence, and — for the models that
read a session as its list of items (NARM, STAMP, SASRec, SR-GNN, GCE-GNN) — training on
padded batches and scoring over the whole catalogue.

:class:`TorchRecommender` holds parameters as tensors on a device and saves them as a state
dict (``weights.pt``, loaded with ``weights_only=True``); GRU4Rec and the item-list models
build on it. :class:`NeuralRecommender` adds the rest for the item-list models: each defines
a :class:`Network`, an ``nn.Module`` that encodes padded sessions into query vectors
(B, d) and gives the item vectors (n_items, d), so that item ``i`` scores ``q . W[i]``;
the base trains it (seeded shuffles, Adam by default, a step learning-rate schedule, the
loss of ``config.loss``), and scores by running it on the last ``max_len`` items of each
session. Item indices enter the network shifted by one: row 0 of an embedding is the pad,
never scored.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from torch import Tensor, nn

from nextclick.data.batching import Padded, Side, n_pairs, prefix_batches
from nextclick.data.sessions import SessionData
from nextclick.errors import ConfigError, DataError
from nextclick.models.base import ItemHistory, OnEpoch, Recommender, State, check
from nextclick.training import distributed, losses
from nextclick.training.checkpoint import Checkpoint, fingerprint, restore_rngs, rng_states
from nextclick.training.loop import EpochStats, train_epochs

_WEIGHTS = "weights.pt"


def resolve_device(name: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when there is one)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: no CUDA device is available here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto")
    return device


class TorchRecommender(Recommender):
    """A model whose learned parameters are named tensors on ``device``."""

    def __init__(self, config: Any = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config)
        self.device = resolve_device(device)

    def to(self, device: str) -> Self:
        self.device = resolve_device(device)
        if self.item_index_ is not None:
            self._load_tensors({name: t.to(self.device) for name, t in self._tensors().items()})
        return self

    @abstractmethod
    def _tensors(self) -> dict[str, Tensor]:
        """The learned tensors by name (what ``weights.pt`` holds)."""

    @abstractmethod
    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor of a model of this config and catalogue."""

    @abstractmethod
    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Take ``tensors`` (already checked against ``_expected_shapes``) as the model's."""

    def _save_weights(self, directory: Path) -> None:
        state = {name: t.detach().cpu() for name, t in self._tensors().items()}
        state["item_support"] = torch.as_tensor(self.item_support_)
        torch.save(state, directory / _WEIGHTS)

    def _load_weights(self, directory: Path) -> None:
        path = directory / _WEIGHTS
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises OSError, RuntimeError, UnpicklingError, ...
            raise DataError(f"{path}: cannot load weights ({type(exc).__name__})") from None
        support = state.pop("item_support", None) if isinstance(state, dict) else None
        if support is None:
            raise DataError(f"{path}: expected a state dict with item_support")
        shapes = {name: tuple(t.shape) for name, t in state.items()}
        if shapes != self._expected_shapes():
            raise DataError(f"{path}: weights do not match model.json and items.npy")
        self.item_support_ = support.numpy()
        self._load_tensors({name: t.to(self.device) for name, t in state.items()})


# -- the item-list models -------------------------------------------------------------------

Loss = Literal["cross-entropy", "sampled"]


@dataclass(frozen=True)
class NeuralConfig:
    """Training parameters shared by the item-list models (each model's config extends it
    with its architecture and may change these defaults to its paper's).

    Attributes
    ----------
    n_epochs, batch_size, learning_rate
        Passes over the training prefixes, prefixes (or sessions) per step, Adam's rate.
    l2
        Adam's weight decay (L2 on every parameter).
    lr_dc_step, lr_dc
        The learning rate is multiplied by ``lr_dc`` after every ``lr_dc_step`` epochs
        (0: constant).
    loss
        ``cross-entropy``: softmax over the whole catalogue (computed in item blocks when
        the logits would not fit ``max_logits``); ``sampled``: softmax over the batch's
        targets plus ``n_sample`` uniform extra items, with the log-Q correction.
    n_sample
        Extra uniform candidates of the sampled loss.
    max_len
        Items of a session the network reads: the last ``max_len`` (the first, in training
        and scoring alike, for a model whose ``kept_clicks`` is ``first``).
    seed
        Seed of initialisation, shuffling, dropout and samples.
    """

    n_epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 1e-3
    l2: float = 0.0
    lr_dc_step: int = 0
    lr_dc: float = 0.1
    loss: Loss = "cross-entropy"
    n_sample: int = 2048
    max_len: int = 50
    seed: int = 42

    def __post_init__(self) -> None:
        check(self.n_epochs >= 1, "n_epochs", "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", "an integer >= 1")
        check(self.learning_rate > 0, "learning_rate", "a number > 0")
        check(self.l2 >= 0, "l2", "a number >= 0")
        check(self.lr_dc_step >= 0, "lr_dc_step", "an integer >= 0 (0: no decay)")
        check(0 < self.lr_dc <= 1, "lr_dc", "a number in (0, 1]")
        check(self.loss in self.losses(), "loss", f"one of {', '.join(self.losses())}")
        check(self.n_sample >= 0, "n_sample", "an integer >= 0")
        check(self.max_len >= 1, "max_len", "an integer >= 1")

    @classmethod
    def losses(cls) -> tuple[str, ...]:
        return ("cross-entropy", "sampled")


class Network(nn.Module):
    """The part of an item-list model that differs: sessions in, query vectors out.

    ``items`` (B, L) hold item indices + 1 (0 = pad) on the model's padding side and
    ``lengths`` (B,) the real items of each row; a row's output never depends on other rows
    or on its pads.
    """

    @abstractmethod
    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        """(B, d) query vector of each session."""

    def item_table(self) -> tuple[Tensor, int]:
        """``(T, first)``: item ``i`` scores ``q . T[first + i]``. By default the network's
        input embedding (``self.embedding``, row 0 the pad) scores too. The full softmax
        writes its gradient into ``T``'s shape at once (a table-sized copy less a step)."""
        return self.embedding.weight, 1

    def item_vectors(self) -> Tensor:
        """(n_items, d): item ``i`` scores ``q . W[i]``."""
        table, first = self.item_table()
        return table[first:]


class NeuralRecommender(ItemHistory, TorchRecommender):
    """An item-list model trained with torch (see the module docstring).

    Subclasses set ``Config`` (a :class:`NeuralConfig`), build their network in
    ``_network`` and may change the optimizer, the batches, the loss and the gradient
    clipping.
    """

    trains_in_epochs = True
    trains_distributed = True
    checkpoints = True
    #: Where padded rows put their pads.
    padding_side: ClassVar[Side] = "right"
    #: Float32 logits a full-softmax step may hold at once (256 MB).
    max_logits: ClassVar[int] = 1 << 26
    #: Sessions encoded at once when scoring.
    score_rows: ClassVar[int] = 4096

    def __init__(self, config: Any = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        self.network_: Network | None = None

    # -- what a model defines -----------------------------------------------------------------

    @abstractmethod
    def _network(self, n_items: int) -> Network:
        """A freshly initialised network for ``n_items`` items (the torch RNG is seeded)."""

    def _optimizer(self, network: Network) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.Adam(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.l2,
                                fused=True)  # fmt: skip

    def _batches(self, train: SessionData, rng: np.random.Generator) -> Iterable[Padded]:
        cfg = self.config
        return prefix_batches(train, cfg.batch_size, cfg.max_len, rng, self.padding_side,
                              self.kept_clicks)  # fmt: skip

    def _loss(self, network: Network, batch: Padded, rng: np.random.Generator) -> Tensor:
        """Mean loss over the batch's targets (``rng``: for sampled candidates)."""
        items, lengths, targets = self._tensors_of(batch)
        return self._softmax(network.encode(items, lengths), network, targets - 1, rng)

    def _clip(self, network: Network, n_targets: float) -> None:
        """Change the gradients before the optimizer step (no clipping by default)."""

    # -- training ------------------------------------------------------------------------------

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch,
             checkpoint: Path | None = None) -> None:  # fmt: skip
        cfg = self.config
        # Under torchrun every rank initialises alike, trains on its own share of the
        # sessions with its own shuffles, samples and dropout, and DistributedDataParallel
        # averages the gradients, so every rank takes the same optimizer step.
        group = distributed.current()
        saved = None if checkpoint is None else Checkpoint(
            checkpoint, fingerprint(self.name, cfg, train, self.device))  # fmt: skip
        rng = np.random.default_rng(distributed.seed_sequence(cfg.seed, group))
        shard = train if group is None else distributed.shard(train, group)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)  # initialisation and dropout; the caller's RNG is kept
            network = self._network(train.n_items).to(self.device)
            self.network_ = network
            objective: nn.Module = _Objective(self, network)
            lockstep = None
            if group is not None:
                torch.manual_seed(int(rng.integers(2**63)))  # the rank's own dropout
                objective = distributed.data_parallel(objective, self.device)
                lockstep = distributed.Lockstep(group)
            optimizer = self._optimizer(network)
            schedule = (
                torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_dc_step, gamma=cfg.lr_dc)
                if cfg.lr_dc_step > 0 else None
            )  # fmt: skip
            parts = _Parts(network, optimizer, schedule, rng, self.device)
            done = [] if saved is None else parts.resume(saved, cfg.n_epochs)

            def step(batch: Padded) -> Tensor:
                network.train()
                loss = objective(batch, rng)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Clip with what every rank agrees on: their gradients are averaged.
                self._clip(network, len(batch) if lockstep is None else lockstep.mean_targets)
                optimizer.step()
                return loss.detach()

            def end_of_epoch(stats: EpochStats) -> None:
                if schedule is not None:
                    schedule.step()
                network.eval()
                if on_epoch is not None:
                    on_epoch(stats)
                done.append(stats)
                if saved is not None:
                    parts.save(saved, done)

            def batches(epoch: int) -> Iterable[Padded]:
                steps = self._batches(shard, rng)
                return steps if lockstep is None else lockstep(steps)

            self.history_ = train_epochs(
                batches, n_pairs(shard), cfg.n_epochs, step,
                name=self.name, progress=progress, on_epoch=end_of_epoch,
                learning_rate=lambda: optimizer.param_groups[0]["lr"],
                across_ranks=None if group is None else distributed.summed, done=list(done),
            )  # fmt: skip
        network.eval()

    def _tensors_of(self, batch: Padded) -> tuple[Tensor, Tensor, Tensor]:
        def move(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, device=self.device)

        return move(batch.items), move(batch.lengths), move(batch.targets)

    def _softmax(self, queries: Tensor, network: Network, targets: Tensor,
                 rng: np.random.Generator, groups: Tensor | None = None) -> Tensor:  # fmt: skip
        """The config's softmax loss of ``queries`` (n, d) for ``targets`` (n,) (0-based);
        ``groups`` (n,): the session of each query, for the sampled loss's negatives."""
        table, first = network.item_table()
        weights = table[first:]
        cfg = self.config
        if cfg.loss == "cross-entropy":
            return losses.softmax_cross_entropy(queries, table, targets, self.max_logits, first)
        samples = (torch.as_tensor(rng.integers(len(weights), size=cfg.n_sample),
                                   device=self.device) if cfg.n_sample else None)  # fmt: skip
        return losses.sampled_softmax(queries, weights, targets, samples, self._log_share(),
                                      len(weights), groups)  # fmt: skip

    def _log_share(self) -> Tensor:
        """log of each item's share of the training events (the in-batch sampling Q)."""
        support = torch.as_tensor(self.item_support_, dtype=torch.float32, device=self.device)
        return torch.log(support / support.sum())

    # -- scoring -------------------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        network = self._trained()
        stop = self.n_items if stop is None else stop
        weights = network.item_vectors()[start:stop]
        n, length = state.shape
        out = np.empty((n, stop - start), dtype=np.float32)
        if length == 0:  # no click yet: nothing to read, every item alike
            out[:] = 0.0
            return out
        max_len = self.config.max_len
        window = state[:, -max_len:] if self.kept_clicks == "last" else state[:, :max_len]
        items = torch.as_tensor(window + 1, device=self.device)
        lengths = torch.full((n,), items.shape[1], dtype=torch.int64, device=self.device)
        rows = self.score_rows
        for r in range(0, n, rows):
            queries = network.encode(items[r : r + rows], lengths[r : r + rows])
            out[r : r + rows] = item_scores(queries, weights)
        return out

    def _trained(self) -> Network:
        if self.network_ is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self.network_

    # -- persistence ---------------------------------------------------------------------------

    def _tensors(self) -> dict[str, Tensor]:
        return dict(self._trained().state_dict())

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        network = self._network(len(self._index()))
        return {name: tuple(t.shape) for name, t in network.state_dict().items()}

    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:
        network = self._network(len(self._index())).to(self.device)
        network.load_state_dict(tensors)
        network.eval()
        self.network_ = network


@dataclass
class _Parts:
    """What a training's state is made of, for its checkpoint."""

    network: Network
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None
    rng: np.random.Generator
    device: torch.device

    def resume(self, checkpoint: Checkpoint, n_epochs: int) -> list[EpochStats]:
        """Load the saved state if there is one; the finished epochs."""
        state = checkpoint.load(n_epochs, {"network", "optimizer", "schedule", "rngs"})
        if state is None:
            return []
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        restore_rngs(state["rngs"], self.rng, self.device)
        return state["history"]

    def save(self, checkpoint: Checkpoint, history: list[EpochStats]) -> None:
        checkpoint.save({
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "rngs": rng_states(self.rng, self.device),
            "history": history,
        })  # fmt: skip


class _Objective(nn.Module):
    """A model's training loss as a module call: DistributedDataParallel averages the
    gradients of what its forward pass computed."""

    def __init__(self, model: NeuralRecommender, network: Network) -> None:
        super().__init__()
        self.network = network
        self.loss = model._loss

    def forward(self, batch: Padded, rng: np.random.Generator) -> Tensor:
        return self.loss(self.network, batch, rng)


def item_scores(queries: Tensor, weights: Tensor, bias: Tensor | None = None) -> np.ndarray:
    """``queries @ weights.T (+ bias)`` as a new (n, n_items) float32 NumPy array, computed in
    blocks of items (:data:`~nextclick.training.losses.ITEM_BLOCK`), as the full softmax is."""
    out = torch.empty((len(queries), len(weights)), dtype=torch.float32)
    block_size = losses.ITEM_BLOCK
    for c in range(0, len(weights), block_size):
        part = weights[c : c + block_size]
        block = queries @ part.T if bias is None else torch.addmm(
            bias[c : c + block_size], queries, part.T
        )  # fmt: skip
        out[:, c : c + len(part)] = block
    return out.numpy()


def session_nodes(items: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The graph models' nodes of right-padded rows (item index + 1, 0 = pad): ``nodes``
    (B, n) each row's distinct items in item order, padded with 0; ``node_real`` (B, n);
    ``alias`` (B, L) the node of each position (0 on pads). For the whole batch at once."""
    B, L = items.shape
    device = items.device
    real = torch.arange(L, device=device)[None, :] < lengths[:, None]
    base = int(items.max()) + 1
    rows = torch.arange(B, device=device)[:, None].expand(B, L)
    unique, inverse = torch.unique((rows * base + items)[real], return_inverse=True)
    node_row = torch.div(unique, base, rounding_mode="floor")
    first = torch.searchsorted(node_row, torch.arange(B, device=device))
    slot = torch.arange(len(unique), device=device) - first[node_row]
    n = int(slot.max()) + 1
    nodes = torch.zeros((B, n), dtype=torch.int64, device=device)
    nodes[node_row, slot] = unique - node_row * base
    node_real = torch.zeros((B, n), dtype=torch.bool, device=device)
    node_real[node_row, slot] = True
    alias = torch.zeros((B, L), dtype=torch.int64, device=device)
    alias[real] = slot[inverse]
    return nodes, node_real, alias


def normal_(tensor: Tensor, std: float) -> Tensor:
    """In-place N(0, std^2) (with the torch RNG the training seeded)."""
    with torch.no_grad():
        return tensor.normal_(0.0, std)


def scale_to_norm(x: Tensor, max_norm: float) -> Tensor:
    """Each vector of ``x`` (last axis) scaled down to L2 norm ``max_norm`` if longer, as
    TensorFlow's ``clip_by_norm`` (the gradient flows through the norm); zero vectors stay 0."""
    norm = x.norm(dim=-1, keepdim=True)
    return x * (max_norm / torch.clamp(norm, min=max_norm))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the entries where ``mask`` is True (0 elsewhere)."""
    scores = scores.masked_fill(~mask, -math.inf)
    return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)
