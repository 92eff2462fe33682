"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from nextclick.data import ItemIndex, SessionData, encode_sessions, read_events

RSC15_DIR = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"


class Rsc15Sample(NamedTuple):
    """The bundled RSC15 sample, encoded with the item index of its training file."""

    item_index: ItemIndex
    train: SessionData
    test: SessionData


@pytest.fixture(scope="session")
def rsc15_sample() -> Rsc15Sample:
    train = read_events(RSC15_DIR / "yoochoose-clicks-100k_train_full.txt.gz")
    test = read_events(RSC15_DIR / "yoochoose-clicks-100k_test.txt.gz")
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    return Rsc15Sample(
        index, encode_sessions(train, index).sessions, encode_sessions(test, index).sessions
    )
