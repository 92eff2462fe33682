"""`nextclick synth`: the synthetic log's shape, its signal, its label and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextclick.data import synth
from nextclick.data.io import label_path
from nextclick.data.recipes import prepare
from nextclick.data.synth import SynthConfig, synthesize
from nextclick.errors import ConfigError


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("synth") / "log.tsv"
    synthesize(SynthConfig(events=30_000, items=400, seed=7), path)
    return _read(path)


def test_the_log_has_exactly_the_asked_events_in_ordered_sessions(log: pd.DataFrame) -> None:
    assert list(log.columns) == ["SessionId", "ItemId", "Time"]
    assert len(log) == 30_000
    assert log["ItemId"].between(0, 399).all()
    sessions = log["SessionId"].to_numpy()
    assert sessions[0] == 1 and np.all(np.diff(sessions) >= 0)
    assert set(np.diff(np.unique(sessions))) == {1}  # ids 1..n, none skipped
    same = sessions[1:] == sessions[:-1]
    assert np.all(np.diff(log["Time"].to_numpy())[same] > 0)  # times rise within a session
    starts = log.groupby("SessionId")["Time"].first().to_numpy()
    assert np.all(np.diff(starts) >= 0)  # and sessions start in id order


def test_popularity_is_skewed_and_sessions_are_rsc15_like(log: pd.DataFrame) -> None:
    counts = np.sort(log["ItemId"].value_counts().to_numpy())[::-1]
    assert counts[:40].sum() / counts.sum() > 0.3  # the top 10% of items: 3x their share
    lengths = log.groupby("SessionId").size()
    assert 3.0 < lengths.mean() < 4.5 and lengths.median() == 2
    assert lengths.max() <= synth.MAX_LENGTH


def test_the_next_click_is_predictable_from_the_previous_one(log: pd.DataFrame) -> None:
    """Successors learned on the first half of the sessions predict the second half's next
    clicks far better than popularity does: a model has something to learn."""
    sessions, items = log["SessionId"].to_numpy(), log["ItemId"].to_numpy()
    same = sessions[1:] == sessions[:-1]
    pairs = list(zip(items[:-1][same].tolist(), items[1:][same].tolist(), strict=True))
    half = len(pairs) // 2
    follows: dict[int, Counter] = defaultdict(Counter)
    for a, b in pairs[:half]:
        follows[a][b] += 1
    popular = {i for i, _ in Counter(b for _, b in pairs[:half]).most_common(5)}
    by_successor = np.mean(
        [b in {i for i, _ in follows[a].most_common(5)} for a, b in pairs[half:]]
    )
    by_popularity = np.mean([b in popular for _, b in pairs[half:]])
    # p_sequential = 0.5 of the next clicks follow a successor; popularity's top 5 get ~7%.
    assert by_successor > 0.45 and by_successor > 4 * by_popularity


def test_sessions_repeat_their_own_clicks(log: pd.DataFrame) -> None:
    seen = log.groupby("SessionId")["ItemId"].apply(lambda s: len(s) - s.nunique()).sum()
    later = len(log) - log["SessionId"].nunique()
    assert 0.1 < seen / later < 0.4  # p_repeat = 0.15, plus successors that come back


def test_a_seed_gives_the_same_bytes_and_chunks_keep_the_order(tmp_path: Path,
                                                              monkeypatch) -> None:  # fmt: skip
    cfg = SynthConfig(events=5_000, items=100, seed=3)
    synthesize(cfg, tmp_path / "a.tsv")
    synthesize(cfg, tmp_path / "b.tsv")
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    monkeypatch.setattr(synth, "CHUNK_SESSIONS", 97)  # many chunks: ids and times still ordered
    synthesize(cfg, tmp_path / "c.tsv")
    log = _read(tmp_path / "c.tsv")
    assert len(log) == 5_000 and set(np.diff(log["SessionId"].unique())) == {1}
    same = log["SessionId"].to_numpy()[1:] == log["SessionId"].to_numpy()[:-1]
    assert np.all(np.diff(log["Time"].to_numpy())[same] > 0)
    assert np.all(np.diff(log.groupby("SessionId")["Time"].first().to_numpy()) >= 0)


def test_the_raw_layout_prepares_with_the_rsc15_recipe_and_stays_labelled(tmp_path: Path) -> None:
    raw = tmp_path / "clicks.dat"
    synthesize(SynthConfig(events=20_000, items=300, format="yoochoose", seed=1), raw)
    first = raw.read_text().splitlines()[0].split(",")
    assert len(first) == 4 and first[3] == "0"
    assert re.fullmatch(r"2014-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first[1])
    assert json.loads(label_path(raw).read_text())["synthetic"] is True
    report = prepare("rsc15", [raw], tmp_path / "prep")
    assert report.raw_events == 20_000 and report.splits["test"].events > 0
    assert any(note.startswith("SYNTHETIC") for note in report.notes)
    for path in report.files.values():
        label = json.loads(label_path(path).read_text())
        assert label["synthetic"] is True and label["derived_from"] == [str(raw)]
    # Real data prepared into the same folder afterwards loses the stale labels.
    real = Path(__file__).resolve().parent / "data" / "samples" / "sample_yoochoose.dat"
    prepare("rsc15", [real], tmp_path / "prep")
    assert not list((tmp_path / "prep").glob("*.synthetic.json"))


def test_probabilities_that_cannot_add_up_are_refused() -> None:
    with pytest.raises(ConfigError, match="p_sequential must be a probability <= 1 - p_repeat"):
        SynthConfig(events=10, items=5, p_repeat=0.6, p_sequential=0.5)


def test_bad_sizes_are_one_line_errors_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.tsv"
    command = ["synth", "--events", "0", "--items", "10", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "nextclick.cli", *command],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "nextclick: error: synth: events must be an integer >= 1, got 0\n"
    assert not out.exists() and not list(tmp_path.iterdir())
