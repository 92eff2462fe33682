"""Models behind one interface (:class:`~nextclick.models.base.Recommender`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nextclick.config import build_config
from nextclick.errors import ConfigError, DataError
from nextclick.models.base import Recommender, read_model_meta
from nextclick.models.bprmf import BPRMF
from nextclick.models.gcegnn import GCEGNN
from nextclick.models.gru4rec import GRU4Rec
from nextclick.models.itemknn import ItemKNN
from nextclick.models.narm import NARM
from nextclick.models.pop import Pop, SPop
from nextclick.models.sasrec import SASRec
from nextclick.models.sknn import SKNN, VSKNN
from nextclick.models.srgnn import SRGNN
from nextclick.models.stamp import STAMP

#: Command-line name -> model class. Listed explicitly: no discovery by module scanning.
MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (Pop, SPop, ItemKNN, BPRMF, SKNN, VSKNN, GRU4Rec, NARM, STAMP, SASRec, SRGNN, GCEGNN)
}


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; models: {', '.join(MODELS)}") from None


def create_model(name: str, *params: dict[str, Any]) -> Recommender:
    """A new model ``name`` whose config is the defaults overridden by each params dict."""
    cls = model_class(name)
    return cls(build_config(cls.Config, *params))


def load_model(directory: str | os.PathLike[str]) -> Recommender:
    """Load a model directory written by :meth:`Recommender.save` (no unpickling)."""
    directory = Path(directory)
    meta = read_model_meta(directory)
    cls = model_class(meta["model"])
    try:
        config = build_config(cls.Config, meta["config"])
    except ConfigError as exc:
        raise DataError(f"{directory / 'model.json'}: {exc}") from None
    try:
        return cls._from_directory(directory, config)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{directory}: cannot load model ({exc})") from None


__all__ = ["MODELS", "Recommender", "create_model", "load_model", "model_class"]
