"""The one model interface that every recommender implements and everything else consumes.

A model works with item indices ``0..n_items-1``; its :class:`~nextclick.data.ItemIndex`
translates raw ids at the edges and is saved with it. Scoring is incremental so that the
evaluator and the HTTP service run the same code: a *state* holds what the model knows of
``n`` sessions, ``step`` advances each of them by one click, ``scores`` rates every item
for each of them. Recurrent models keep hidden vectors in the state; the others keep what
their scoring needs (the last item, counts, the item list).
"""

from __future__ import annotations

import dataclasses
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from nextclick import __version__
from nextclick.data.batching import Keep
from nextclick.data.io import atomic_path
from nextclick.data.items import ItemIndex
from nextclick.data.sessions import SessionData
from nextclick.errors import ConfigError, DataError
from nextclick.ranking import top_k
from nextclick.training.loop import EpochStats

State = Any
#: Called after each training epoch (see :meth:`Recommender.fit`).
OnEpoch = Callable[[EpochStats], None] | None
FORMAT_VERSION = 1
_META = "model.json"
_ARRAYS = "arrays.npz"


class Recommender(ABC):
    """Base class of all models.

    Subclasses set ``name`` and ``Config`` (a frozen dataclass whose defaults are the
    published defaults), implement ``_fit``, ``init_state``, ``step``, ``select`` and
    ``scores``, and list their learned arrays in ``_arrays``/``_set_arrays``. What the CLI,
    the tuner, the reports and the service need to know of a model is declared here
    (``trains_in_epochs``, ``trains_distributed``, ``presets``, ``keeps_state``,
    ``no_evidence_score``), never probed.

    Parameters
    ----------
    config
        The model's parameters; ``Config()`` when omitted.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    #: Whether ``fit`` trains in epochs: it then fills ``history_`` and calls ``on_epoch``
    #: after each (the tuner validates and prunes there).
    trains_in_epochs: ClassVar[bool] = False
    #: Whether ``fit`` trains data-parallel when torchrun started several processes
    #: (:mod:`nextclick.training.distributed`); other models train in one process only.
    trains_distributed: ClassVar[bool] = False
    #: Whether ``fit`` can save the training state to a directory after each epoch and
    #: resume from it (``checkpoint``, :mod:`nextclick.training.checkpoint`); ``_fit`` then
    #: takes a ``checkpoint`` keyword.
    checkpoints: ClassVar[bool] = False
    #: Published settings by name (``--preset``): parameter overrides of ``Config``.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}")
        self.item_index_: ItemIndex | None = None
        #: (n_items,) int64 number of training events of each item.
        self.item_support_: np.ndarray | None = None
        #: One entry per training epoch (models that train in epochs).
        self.history_: list[EpochStats] = []

    @classmethod
    def preset(cls, name: str) -> dict[str, Any]:
        """The parameters of published setting ``name`` (see :attr:`presets`)."""
        if name not in cls.presets:
            known = ", ".join(cls.presets) or "none"
            raise ConfigError(f"unknown preset {name!r} for {cls.name}; its presets: {known}")
        return dict(cls.presets[name])

    # -- training -----------------------------------------------------------------------

    def to(self, device: str) -> Self:
        """Move to a device; models without a GPU implementation run on the CPU anyway."""
        return self

    def fit(
        self,
        train: SessionData,
        item_index: ItemIndex,
        *,
        progress: bool = False,
        on_epoch: OnEpoch = None,
        checkpoint: Path | None = None,
    ) -> Self:
        """Learn from training sessions whose items are indices of ``item_index``.

        ``on_epoch`` is called after every epoch of a model that ``trains_in_epochs``, with
        the model usable for scoring; it may raise to stop the training. ``checkpoint``: a
        directory where a model that ``checkpoints`` saves its training state after each
        epoch (after ``on_epoch``), and from which a later fit of the same training resumes.
        """
        if checkpoint is not None and not self.checkpoints:
            raise ConfigError(f"{self.name} does not save its training state between epochs, "
                              "so it cannot train from a checkpoint")  # fmt: skip
        if train.n_events == 0:
            raise DataError("training data has no events")
        if train.n_items != len(item_index):
            raise ValueError("train was encoded with another item index")
        self.item_index_ = item_index
        self.item_support_ = np.bincount(train.items, minlength=train.n_items).astype(np.int64)
        self.history_ = []
        if checkpoint is None:
            self._fit(train, progress=progress, on_epoch=on_epoch)
        else:
            self._fit(train, progress=progress, on_epoch=on_epoch, checkpoint=checkpoint)
        return self

    @abstractmethod
    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch) -> None: ...

    @property
    def n_items(self) -> int:
        return len(self._index())

    # -- incremental scoring --------------------------------------------------------------

    @abstractmethod
    def init_state(self, n: int) -> State:
        """State of ``n`` empty sessions."""

    @abstractmethod
    def step(self, state: State, items: np.ndarray) -> State:
        """Advance session ``r`` of ``state`` by the click on ``items[r]``; ``items``: (n,) int."""

    @abstractmethod
    def select(self, state: State, rows: np.ndarray) -> State:
        """The state of the sessions ``rows`` only, in that order."""

    @abstractmethod
    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Scores of items ``start..stop-1`` for every session: a new (n, stop-start) array.

        Higher is better; the caller may modify the array.
        """

    # -- states kept outside the model (the HTTP service's session store) ---------------------

    #: Whether ``pack_states`` keeps something the session's item list cannot cheaply
    #: rebuild (a recurrent model's hidden vectors).
    keeps_state: ClassVar[bool] = False

    @property
    def kept_clicks(self) -> Keep:
        """Which clicks of a long session the model reads, the ``last`` (the recent ones) or
        the ``first``: what the service keeps when it bounds a session's history."""
        return "last"

    def pack_states(self, state: State) -> list[bytes]:
        """Each session of ``state`` as bytes (models with ``keeps_state``)."""
        raise NotImplementedError(f"{self.name} rebuilds its state from the session's items")

    def unpack_states(self, blobs: Sequence[bytes]) -> State:
        """The state of the sessions that ``pack_states`` turned into ``blobs``."""
        raise NotImplementedError(f"{self.name} rebuilds its state from the session's items")

    # -- conveniences built on the incremental form ----------------------------------------

    def states_after(self, prefixes: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, State]]:
        """The state after each non-empty prefix, in groups as the prefixes end: pairs of
        (positions in ``prefixes``, the state of those rows).

        All prefixes advance together, one step per position, longest first; each group must
        be used before the iteration goes on.
        """
        lengths = np.array([len(p) for p in prefixes], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        lengths = lengths[order]
        padded = np.zeros((len(prefixes), int(lengths.max(initial=0))), dtype=np.int64)
        for row, i in enumerate(order):
            padded[row, : lengths[row]] = prefixes[i]
        if not padded.size:
            return
        state = self.init_state(int((lengths > 0).sum()))
        for t in range(padded.shape[1]):
            running = int((lengths > t).sum())
            state = self.step(state, padded[:running, t])
            going_on = int((lengths > t + 1).sum())
            if going_on < running:
                yield order[going_on:running], self.select(state, np.arange(going_on, running))
                if going_on:
                    state = self.select(state, np.arange(going_on))

    def score_prefixes(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores of all items after each prefix: (len(prefixes), n_items).

        An empty prefix gets the scores of a session with no click yet.
        """
        out: np.ndarray | None = None
        for rows, state in self.states_after(prefixes):
            block = self.scores(state)
            if out is None:
                out = np.empty((len(prefixes), block.shape[1]), dtype=block.dtype)
            out[rows] = block
        empty = [i for i, p in enumerate(prefixes) if len(p) == 0]
        if empty:
            block = self.scores(self.init_state(len(empty)))
            if out is None:
                out = np.empty((len(prefixes), block.shape[1]), dtype=block.dtype)
            out[empty] = block
        return out if out is not None else np.empty((0, self.n_items))

    #: The score of an item the model has no evidence for (kNN models: 0), or None when
    #: every score means something. Such items are never recommended, and as targets they
    #: count as misses (:mod:`nextclick.ranking`).
    no_evidence_score: ClassVar[float | None] = None

    def recommend(
        self, prefix: Sequence[int], k: int = 20, exclude: Sequence[int] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and their scores after ``prefix`` (item indices), best
        first; ties by lower index (:func:`nextclick.ranking.top_k`).

        Items in ``exclude`` and items without evidence are never returned, so the list may
        be shorter than ``k``.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        scores = self.score_prefixes([prefix])
        if len(exclude):
            scores[0, np.asarray(exclude, dtype=np.int64)] = -np.inf
        items, values, length = top_k(scores, k, self.score_floor)
        return items[0, : length[0]], values[0, : length[0]]

    def recommend_ids(
        self, clicks: Sequence[Any], k: int = 20, exclude: Sequence[Any] = ()
    ) -> list[tuple[Any, float]]:
        """:meth:`recommend` for raw item ids: (item id, score) pairs, best first.

        Ids map to items as in the HTTP service (:meth:`ItemIndex.lookup`); clicks and
        exclusions of ids the model does not know are skipped.
        """
        index = self._index()
        prefix = [i for i in map(index.lookup, clicks) if i is not None]
        banned = [i for i in map(index.lookup, exclude) if i is not None]
        items, scores = self.recommend(prefix, k, banned)
        return list(zip(index.decode(items).tolist(), scores.tolist(), strict=True))

    @property
    def score_floor(self) -> float:
        """Items scoring at or below this are never listed (``-inf`` if every score counts)."""
        return -np.inf if self.no_evidence_score is None else self.no_evidence_score

    def _index(self) -> ItemIndex:
        if self.item_index_ is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self.item_index_

    # -- persistence ------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (subclasses extend)."""
        return {}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``_arrays`` returned."""
        if arrays:
            raise ValueError(f"unexpected arrays {sorted(arrays)}")

    def save(
        self, directory: str | os.PathLike[str], provenance: dict[str, Any] | None = None
    ) -> None:
        """Write the model as a directory: ``model.json``, ``items.npy``, ``arrays.npz``.

        The directory appears complete or not at all. ``provenance`` (e.g. the training
        file and time) is stored in ``model.json`` under that key.
        """
        if self.item_index_ is None or self.item_support_ is None:
            raise RuntimeError(f"{self.name} is not fitted")
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            meta = {
                "format_version": FORMAT_VERSION,
                "model": self.name,
                "config": config_to_dict(self.config),
                "nextclick_version": __version__,
                "provenance": provenance or {},
            }
            (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
            self.item_index_.save(tmp)
            self._save_weights(tmp)

    def _save_weights(self, directory: Path) -> None:
        """Write the learned arrays (``arrays.npz``; torch models override)."""
        np.savez(directory / _ARRAYS, item_support=self.item_support_, **self._arrays())

    def _load_weights(self, directory: Path) -> None:
        """Read what ``_save_weights`` wrote."""
        with np.load(directory / _ARRAYS, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        self.item_support_ = arrays.pop("item_support")
        self._set_arrays(arrays)

    @classmethod
    def _from_directory(cls, directory: Path, config: Any) -> Self:
        model = cls(config)
        model.item_index_ = ItemIndex.load(directory)
        model._load_weights(directory)
        return model


class ItemHistory:
    """Mixin for models whose state is the (n, t) matrix of the sessions' items so far.

    All rows of a state advance together, so the clicks of every session fit one matrix.
    """

    def init_state(self, n: int) -> State:
        return np.zeros((n, 0), dtype=np.int64)

    def step(self, state: State, items: np.ndarray) -> State:
        return np.column_stack((state, np.asarray(items, dtype=np.int64)))

    def select(self, state: State, rows: np.ndarray) -> State:
        return state[rows]


def read_model_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``model.json`` of a model directory (checked for format and shape)."""
    path = Path(directory) / _META
    if not Path(directory).is_dir():
        raise DataError(f"{directory}: not a model directory")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; not a nextclick model directory") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read model metadata ({exc})") from None
    if not isinstance(meta, dict) or not {"format_version", "model", "config"} <= meta.keys():
        raise DataError(f"{path}: expected keys format_version, model, config")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {meta['format_version']!r}, this nextclick reads "
            f"{FORMAT_VERSION}"
        )
    return meta


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON/TOML-friendly dict (tuples become lists)."""
    return {
        f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
        for f in dataclasses.fields(config)
    }


def check(condition: bool, field: str, expected: str) -> None:
    """Raise a ConfigError naming ``field`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigError(f"parameter {field!r}: expected {expected}")
