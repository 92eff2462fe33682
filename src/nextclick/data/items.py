"""ItemIndex: the map between raw item ids (ints or strings) and the model's item indices.

One rule maps a raw id to an index, whether the id comes from a file, the Python API or the
HTTP service; it is the rule by which :func:`~nextclick.data.io.read_events` decides that an
id column is integer:

- an index of integer ids knows an int, a float with an integral value, and a string of
  decimal digits with an optional minus sign (surrounding spaces ignored); nothing else
  (not ``"1.0"``, ``"1e3"``, ``"+5"`` or a bool);
- an index of string ids knows a string (surrounding spaces ignored), an int as its decimal
  digits and a float as Python writes it (``1.5`` is ``"1.5"``), as a file's mixed column
  reads.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextclick.data.io import INT_RE
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
        self._numeric = self.ids.dtype.kind in "iu"
        self._positions: dict[Any, int] | None = None  # built at the first lookup

    @classmethod
    def from_items(cls, items: np.ndarray) -> ItemIndex:
        """Index of the distinct ids in ``items``, in sorted order."""
        return cls(np.unique(np.asarray(items)))

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, raw: Any) -> int | None:
        """The index of one raw id, or None if the index does not know it (module rule)."""
        key = self._canonical(raw)
        if key is None:
            return None
        if self._positions is None:
            self._positions = {item: i for i, item in enumerate(self.ids.tolist())}
        return self._positions.get(key)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Indices of ``raw`` ids as int64, ``-1`` for ids not in the index (module rule)."""
        raw = np.asarray(raw)
        if len(raw) == 0:
            return np.zeros(0, dtype=np.int64)
        if raw.dtype.kind in "iu":
            keys = raw if self._numeric else raw.astype(str)
        elif raw.dtype.kind == "U" and self._numeric:
            text = pd.Series(raw).str.strip()
            valid = text.str.fullmatch(INT_RE).to_numpy(dtype=bool)
            keys = np.full(len(raw), _NO_INT, dtype=np.int64)
            keys[valid] = text[valid].to_numpy().astype(np.int64)
        elif raw.dtype.kind == "U":
            keys = np.char.strip(raw)
        else:  # floats, bools, mixed objects: one by one, as lookup does
            found = [self.lookup(x) for x in raw.tolist()]
            return np.array([-1 if i is None else i for i in found], dtype=np.int64)
        return self._lookup.get_indexer(keys).astype(np.int64)

    def _canonical(self, raw: Any) -> int | str | None:
        if isinstance(raw, bool | np.bool_):
            return None
        if self._numeric:
            if isinstance(raw, numbers.Integral):
                return int(raw)
            if isinstance(raw, numbers.Real):
                return int(raw) if float(raw).is_integer() else None
            if isinstance(raw, str) and INT_RE.fullmatch(raw := raw.strip()):
                return int(raw)
            return None
        if isinstance(raw, str):
            return raw.strip()
        if isinstance(raw, numbers.Integral):
            return str(int(raw))
        if isinstance(raw, numbers.Real):
            return str(float(raw))
        return None

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


#: Stands for ids that are no integer when an integer index encodes strings; no real id
#: can be it (INT_RE allows 18 digits).
_NO_INT = np.iinfo(np.int64).min
