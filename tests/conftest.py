"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

from nextclick.data import ItemIndex, SessionData, encode_sessions, read_events

RSC15_DIR = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"
# Run records of the commands that tests run go to a scratch folder, not ./runs.
os.environ.setdefault("NEXTCLICK_RUN_DIR", tempfile.mkdtemp(prefix="nextclick-test-runs-"))


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


GRU_PARAMS = {"layers": (32,), "n_epochs": 1, "n_sample": 256, "batch_size": 32}


@pytest.fixture(scope="session")
def model_dirs(rsc15_sample: Rsc15Sample, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Small models of several kinds trained on the bundled sample, saved as directories
    (for the service tests)."""
    from nextclick.models import create_model

    root = tmp_path_factory.mktemp("models")
    specs = {
        "gru4rec": ("gru4rec", GRU_PARAMS),
        "gru4rec-other": ("gru4rec", {**GRU_PARAMS, "seed": 7}),
        "vsknn": ("vsknn", {}),
        "itemknn": ("itemknn", {}),
        "pop": ("pop", {}),
        "sasrec": ("sasrec", {"hidden_size": 16, "n_epochs": 1, "max_len": 10}),
        "srgnn": ("srgnn", {"hidden_size": 8, "n_epochs": 1, "max_len": 10, "batch_size": 512}),
        "gcegnn": ("gcegnn", {"hidden_size": 8, "n_epochs": 1, "max_len": 10,
                              "batch_size": 512}),
        "narm-first": ("narm", {"embedding_dim": 8, "hidden_size": 8, "n_epochs": 1,
                                "max_len": 3, "truncation": "first"}),
    }
    dirs = {}
    for label, (name, params) in specs.items():
        model = create_model(name, params).fit(rsc15_sample.train, rsc15_sample.item_index)
        model.save(root / label)
        dirs[label] = root / label
    return dirs


@pytest.fixture(scope="session")
def popular_ids(model_dirs: dict) -> list:
    """The 20 most clicked item ids of the sample, most clicked first."""
    from nextclick.serving.engine import Engine

    return [item for item, _ in Engine.load(model_dirs["gru4rec"]).popular(20)]
