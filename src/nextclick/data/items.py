"""ItemIndex: the map between raw item ids (ints or strings) and the model's item indices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from nextclick.errors import DataError

_FILE = "items.npy"


class ItemIndex:
    """Raw item id <-> index ``0..n_items-1``; saved with every model.

    Parameters
    ----------
    ids
        Raw ids in index order, unique; int64 or str.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids)
        if self.ids.dtype == object:
            self.ids = self.ids.astype(str)
        self._lookup = pd.Index(self.ids)
        if not self._lookup.is_unique:
            raise ValueError("item ids must be unique")

    @classmethod
    def from_items(cls, items: np.ndarray) -> ItemIndex:
        """Index of the distinct ids in ``items``, in sorted order."""
        return cls(np.unique(np.asarray(items)))

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Indices of ``raw`` ids as int64, ``-1`` for ids not in the index."""
        raw = np.asarray(raw)
        if len(raw) == 0:
            return np.zeros(0, dtype=np.int64)
        if (raw.dtype.kind in "iu") != (self.ids.dtype.kind in "iu"):
            # An int id never equals a str id, but "123" should find 123 and vice versa.
            raw = raw.astype(self.ids.dtype) if self.ids.dtype.kind in "U" else _to_int(raw)
        return self._lookup.get_indexer(raw).astype(np.int64)

    def decode(self, index: np.ndarray) -> np.ndarray:
        """Raw ids of the given indices."""
        return self.ids[np.asarray(index)]

    def save(self, directory: str | os.PathLike[str]) -> None:
        np.save(Path(directory) / _FILE, self.ids, allow_pickle=False)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ItemIndex:
        path = Path(directory) / _FILE
        try:
            return cls(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot load item index ({exc})") from None


def _to_int(raw: np.ndarray) -> np.ndarray:
    out = pd.to_numeric(pd.Series(raw), errors="coerce")
    # Ids that are not integers cannot be known to an int index: map them to a sentinel.
    return out.fillna(np.iinfo(np.int64).min).to_numpy(dtype=np.int64)
