"""Dataset recipes: exact splits on handmade raw files, counts on real samples, errors.

The handmade files in ``tests/data/raw`` all encode one scenario (written out below) in each
raw format, with the format's own extras (non-view events, streams to cut at 1-hour gaps, a
second file). The expected rows were worked out by hand from the scenario; the counts of the
real samples in ``tests/data/samples`` were computed with a separate pandas script that
follows GRU4Rec's ``preprocess.py`` and the 2023 reference scripts, not with this code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextclick.data.io import read_events, read_table
from nextclick.data.recipes import RECIPES, SPLITS, PrepareReport, Removal, SplitCounts, prepare
from nextclick.data.recipes.common import (
    drop_consecutive_repeats,
    order_events,
    sessionise,
    views_of_streams,
)
from nextclick.errors import DataError

DATA = Path(__file__).parent / "data"
RAW = DATA / "raw"
SAMPLES = DATA / "samples"
MIN = 60.0
DAY = 86_400.0

# Item ids of the handmade files: A, B, C are frequent, E occurs only in test sessions,
# F has exactly 5 events (one in a session that the filters remove), R is rare.
ITEMS = {1001: "A", 1002: "B", 1003: "C", 1005: "E", 1006: "F", 1009: "R"}
COVEO_ITEMS = {
    "eedf4238fc0131dfc9c1d01df4a23bef736cf3c2ce65936317065f1baa476a63": "A",
    "03506ecdc3f6dae155223fe99dbc6bdc5241f497ef01fe41b0173718c97883c5": "B",
    "0be7c8f1f7f226c8e0b66cba77f372ad8c72b0f5de85ccf4bf24d1f863fbac17": "C",
    "3c64b1aa17fd6efe04ac0ae3152904ecab11d604cdd93b68b83c4304a9990fbe": "E",
}

# The scenario: (session, item, anchor, minutes after the anchor), with T the last event,
# t1 = T - D (test boundary) and t2 = T - 2D (validation boundary):
#   S1  A t2-1800, B t2-1799, A t2-1739   (B -> A exactly 60 min apart: no cut)
#   S2  A t2-1620, A t2-1619, B, C        (119 min after S1, same user: cut; one repeat)
#   S3  C t2-1560                         (length 1)
#   S4  F t2-1500, R t2-1499              (R rare -> S4 length 1 -> F down to 4 -> F rare)
#   S5  B t2-20, C t2-10, F t2+10, A t2+20   (straddles t2 with 2 events before it)
#   S6  A t2-5, B t2+5, C t2+15           (straddles t2 with 1 event before it)
#   S7  C t2, F t2+5                      (loses F in round 2 -> length 1 in round 3)
#   S14 B t2, A t2+30                     (starts exactly at t2)
#   S8  F t1-30, B t1-20, A t1-10, C t1+10   (straddles t1 with 2 events before it)
#   S9  B t1-5, C t1                      (straddles t1 with 1 event before it; ends at t1)
#   S10 A t1, B t1+1, E t1+2              (starts exactly at t1)
#   S11 E t1+120, F t1+121, C t1+122
#   S13 E t1+180, B t1+181
#   S12 E T-2, A T-1, E T
# 2023 protocol: repeats -1 (S2); round 1 drops S3 and R, round 2 drops S4 and F (5 -> 4),
# round 3 drops S7 (now [C]), round 4 changes nothing. Test = S10-S13 (E, unknown to train,
# stays); train = events before t1: S8 keeps B A, S9 keeps B only and goes. train_valid =
# train sessions starting at/after t2: S14, S8; train_tr = events before t2: S5 keeps B C,
# S6 keeps A only and goes.
EXPECTED_2023 = {
    "train_full": [
        (1, "A", "t2", -1800), (1, "B", "t2", -1799), (1, "A", "t2", -1739),
        (2, "A", "t2", -1620), (2, "B", "t2", -1618), (2, "C", "t2", -1617),
        (5, "B", "t2", -20), (5, "C", "t2", -10), (5, "A", "t2", 20),
        (6, "A", "t2", -5), (6, "B", "t2", 5), (6, "C", "t2", 15),
        (8, "B", "t1", -20), (8, "A", "t1", -10),
        (14, "B", "t2", 0), (14, "A", "t2", 30),
    ],
    "test": [
        (10, "A", "t1", 0), (10, "B", "t1", 1), (10, "E", "t1", 2),
        (11, "E", "t1", 120), (11, "C", "t1", 122),
        (12, "E", "T", -2), (12, "A", "T", -1), (12, "E", "T", 0),
        (13, "E", "t1", 180), (13, "B", "t1", 181),
    ],
    "train_tr": [
        (1, "A", "t2", -1800), (1, "B", "t2", -1799), (1, "A", "t2", -1739),
        (2, "A", "t2", -1620), (2, "B", "t2", -1618), (2, "C", "t2", -1617),
        (5, "B", "t2", -20), (5, "C", "t2", -10),
    ],
    "train_valid": [
        (8, "B", "t1", -20), (8, "A", "t1", -10),
        (14, "B", "t2", 0), (14, "A", "t2", 30),
    ],
}  # fmt: skip
COUNTS_2023 = {
    "train_full": SplitCounts(16, 6, 3),
    "test": SplitCounts(10, 4, 4),
    "train_tr": SplitCounts(8, 3, 3),
    "train_valid": SplitCounts(4, 2, 2),
}
REMOVED_2023 = [
    Removal("consecutive repeats", 1, 0),
    Removal("sessions shorter than 2", 3, 3),
    Removal("items with fewer than 5 events", 5, 0),
    Removal("test boundary: later events of train_full sessions started before it", 2, 0),
    Removal("test boundary: train_full sessions cut below 2 events", 1, 1),
    Removal("validation boundary: later events of train_tr sessions started before it", 3, 0),
    Removal("validation boundary: train_tr sessions cut below 2 events", 1, 1),
]

# The same scenario under the 2016 rules (no repeat removal, one filter pass, test = sessions
# *ending* within the last day, S9 exactly at t1): S3, R, then S4 go, F keeps 4 events.
# Test = S8-S13; E is unknown to train, so S12 and S13 fall below 2. Inside train_full (last
# event S14's A at t2+30) train_valid = S5, S6, S7, S14; F is unknown to train_tr, so S7
# falls below 2.
EXPECTED_RSC15 = {
    "train_full": [
        (1, "A", "t2", -1800), (1, "B", "t2", -1799), (1, "A", "t2", -1739),
        (2, "A", "t2", -1620), (2, "A", "t2", -1619), (2, "B", "t2", -1618), (2, "C", "t2", -1617),
        (5, "B", "t2", -20), (5, "C", "t2", -10), (5, "F", "t2", 10), (5, "A", "t2", 20),
        (6, "A", "t2", -5), (6, "B", "t2", 5), (6, "C", "t2", 15),
        (7, "C", "t2", 0), (7, "F", "t2", 5),
        (14, "B", "t2", 0), (14, "A", "t2", 30),
    ],
    "test": [
        (8, "F", "t1", -30), (8, "B", "t1", -20), (8, "A", "t1", -10), (8, "C", "t1", 10),
        (9, "B", "t1", -5), (9, "C", "t1", 0),
        (10, "A", "t1", 0), (10, "B", "t1", 1),
        (11, "F", "t1", 121), (11, "C", "t1", 122),
    ],
    "train_tr": [
        (1, "A", "t2", -1800), (1, "B", "t2", -1799), (1, "A", "t2", -1739),
        (2, "A", "t2", -1620), (2, "A", "t2", -1619), (2, "B", "t2", -1618), (2, "C", "t2", -1617),
    ],
    "train_valid": [
        (5, "B", "t2", -20), (5, "C", "t2", -10), (5, "A", "t2", 20),
        (6, "A", "t2", -5), (6, "B", "t2", 5), (6, "C", "t2", 15),
        (14, "B", "t2", 0), (14, "A", "t2", 30),
    ],
}  # fmt: skip
REMOVED_RSC15 = [
    Removal("length-1 sessions", 1, 1),
    Removal("items with fewer than 5 events", 1, 0),
    Removal("sessions shorter than 2 after the item filter", 1, 1),
    Removal("test events of items not in train_full", 5, 0),
    Removal("test sessions shorter than 2 after that", 2, 2),
    Removal("train_valid events of items not in train_tr", 2, 0),
    Removal("train_valid sessions shorter than 2 after that", 1, 1),
]


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def resolve(rows: list, last: float, period: float, shift: float = 0.0) -> list:
    anchors = {"T": last, "t1": last - period, "t2": last - 2 * period}
    return [(s, item, anchors[a] + m * MIN + shift) for s, item, a, m in rows]


def written(out: Path, split: str, items: dict) -> list:
    events = read_events(out / f"{split}.tsv.gz")
    return [(int(s), items[i], t) for s, i, t in events.itertuples(index=False)]


def assert_rows(actual: list, expected: list) -> None:
    assert [(s, i) for s, i, _ in actual] == [(s, i) for s, i, _ in expected]
    assert [t for *_, t in actual] == pytest.approx([t for *_, t in expected], abs=1e-3)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == []


def otto_in_seconds(tmp_path: Path) -> Path:
    """The OTTO fixture with ts in whole seconds (as in re-packed copies of the dataset)."""
    lines = (RAW / "otto-train.jsonl").read_text().splitlines()
    sessions = [json.loads(line) for line in lines]
    for session in sessions:
        for event in session["events"]:
            event["ts"] //= 1000
    path = tmp_path / "otto-seconds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions))
    return path


def otto_gzipped(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress((RAW / "otto-train.jsonl").read_bytes()))
    return path


# recipe, raw files, T, D, item ids, time shift of every event, raw rows, format's removal
CASES_2023 = [
    pytest.param(
        "yoochoose", ["yoochoose-clicks.dat", "yoochoose-test.dat"],
        utc(2014, 4, 7, 12), DAY, ITEMS, 0.0, 38, [], id="yoochoose",
    ),
    pytest.param(
        "diginetica", ["train-item-views.csv"],
        utc(2016, 6, 1, 12), 7 * DAY, ITEMS, 0.0, 38, [], id="diginetica",
    ),
    pytest.param(
        "retailrocket", ["retailrocket-events.csv"],
        utc(2015, 9, 18, 2), 7 * DAY, ITEMS, 0.0, 41, [Removal("non-view events", 3, 0)],
        id="retailrocket",
    ),
    pytest.param(
        "rees46", ["rees46-2019-Oct.csv", "rees46-2019-Nov.csv"],
        utc(2019, 11, 1, 12), DAY, ITEMS, 0.0, 41, [Removal("non-view events", 3, None)],
        id="rees46",
    ),
    pytest.param(
        "coveo", ["coveo-browsing_train.csv"],
        utc(2019, 1, 15, 12), DAY, COVEO_ITEMS, 0.0, 43, [Removal("non-view events", 5, 0)],
        id="coveo",
    ),
    pytest.param(
        "otto", ["otto-train.jsonl"],
        utc(2022, 8, 28, 12), DAY, ITEMS, 0.017, 42, [Removal("non-view events", 4, 1)],
        id="otto-ms",
    ),
    pytest.param(
        "otto", [otto_in_seconds],
        utc(2022, 8, 28, 12), DAY, ITEMS, 0.0, 42, [Removal("non-view events", 4, 1)],
        id="otto-seconds",
    ),
    pytest.param(
        "otto", [otto_gzipped],
        utc(2022, 8, 28, 12), DAY, ITEMS, 0.017, 42, [Removal("non-view events", 4, 1)],
        id="otto-gzip",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "files", "last", "period", "items", "shift", "n_raw", "format_removed"),
    CASES_2023,
)
def test_2023_recipe_gives_the_hand_computed_splits(
    tmp_path, recipe, files, last, period, items, shift, n_raw, format_removed
):
    # Format extras the expected rows pin down: yoochoose reads two files (S10-S13 are in
    # the second) and S2's rows are reversed in the first; diginetica's S11 has a row dated
    # the next day (time = the session's first date + timeframe); retailrocket's and coveo's
    # S1 and S2 are one stream cut at a 119-minute gap; rees46 has a cart inside that gap,
    # which must not bridge it (rees46 cuts the view stream); otto's session 15 has only
    # carts and orders.
    raw = [f(tmp_path) if callable(f) else RAW / f for f in files]
    out = tmp_path / "out"
    report = prepare(recipe, raw, out)
    for split in SPLITS:
        expected = resolve(EXPECTED_2023[split], last, period, shift)
        assert_rows(written(out, split, items), expected)
    assert report.splits == COUNTS_2023
    assert report.raw_events == n_raw
    assert list(report.removed) == format_removed + REMOVED_2023
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.tsv.gz" for s in SPLITS)
    assert "filter rounds until stable: 4" in report.notes


def test_rsc15_gives_the_hand_computed_splits(tmp_path):
    # rsc15 reads one file: the two yoochoose fixtures together.
    raw = tmp_path / "yoochoose-clicks.dat"
    raw.write_text(
        (RAW / "yoochoose-clicks.dat").read_text() + (RAW / "yoochoose-test.dat").read_text()
    )
    report = prepare("rsc15", [raw], tmp_path / "out")
    for split in SPLITS:
        expected = resolve(EXPECTED_RSC15[split], utc(2014, 4, 7, 12), DAY)
        assert_rows(written(tmp_path / "out", split, ITEMS), expected)
    assert report.raw_events == 38
    assert list(report.removed) == REMOVED_RSC15
    assert report.splits == {
        "train_full": SplitCounts(18, 6, 4),
        "test": SplitCounts(10, 4, 4),
        "train_tr": SplitCounts(7, 2, 3),
        "train_valid": SplitCounts(8, 3, 3),
    }


def test_srgnn_benchmark_keeps_the_published_split(tmp_path):
    raw = [RAW / "srgnn" / "train_sessions.tsv", RAW / "srgnn" / "test_sessions.tsv"]
    report = prepare("srgnn-benchmark", raw, tmp_path)
    # Longest session: test session 8 with Pos 0..4, so Time = SessionId * 5 + Pos.
    # 5 train and 5 test sessions: share 0.5, 2.5 training sessions round up to 3.
    train_tr = [(1, 11, 5), (1, 12, 6), (2, 13, 10), (2, 11, 11), (2, 14, 12)]
    train_valid = [
        (3, 15, 15), (3, 12, 16), (4, 11, 20), (4, 13, 21),
        (5, 14, 25), (5, 12, 26), (5, 11, 27), (5, 15, 28),
    ]  # fmt: skip
    test = [
        (6, 11, 30), (6, 12, 31), (7, 13, 35), (7, 16, 36),
        (8, 14, 40), (8, 11, 41), (8, 12, 42), (8, 13, 43), (8, 15, 44),
        (9, 12, 45), (9, 12, 46), (10, 15, 50), (10, 11, 51),
    ]  # fmt: skip
    expected = {
        "train_full": train_tr + train_valid,
        "test": test,
        "train_tr": train_tr,
        "train_valid": train_valid,
    }
    for split in SPLITS:
        events = read_events(tmp_path / f"{split}.tsv.gz")
        assert [(s, i, t) for s, i, t in events.itertuples(index=False)] == expected[split]
    assert report.removed == ()
    assert report.splits["train_valid"] == SplitCounts(8, 3, 5)


# Counts checked with an independent pandas script (see the module docstring).
SAMPLE_COUNTS = [
    pytest.param(
        "rsc15", "sample_yoochoose.dat", 1913,
        [(515, 158, 90), (76, 25, 30), (378, 116, 80), (92, 32, 37)], id="rsc15",
    ),
    pytest.param(
        "yoochoose", "sample_yoochoose.dat", 1913,
        [(78, 31, 18), (22, 9, 9), (75, 30, 16), (3, 1, 2)], id="yoochoose",
    ),
    pytest.param(
        "diginetica", "sample_train-item-views.csv.gz", 12391,
        [(707, 214, 120), (69, 20, 35), (644, 200, 116), (63, 14, 25)], id="diginetica",
    ),
    pytest.param(
        "otto", "otto-train.jsonl", 862,
        [(108, 3, 14), (13, 6, 7), (104, 3, 14), (0, 0, 0)], id="otto",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("recipe", "sample", "n_raw", "counts"), SAMPLE_COUNTS)
def test_real_sample_counts(tmp_path, recipe, sample, n_raw, counts):
    report = prepare(recipe, [SAMPLES / sample], tmp_path)
    assert report.raw_events == n_raw
    assert report.splits == {s: SplitCounts(*c) for s, c in zip(SPLITS, counts, strict=True)}
    for split in ("train_full", "test"):
        events = read_events(tmp_path / f"{split}.tsv.gz")
        assert (len(events), events["SessionId"].nunique()) == counts[SPLITS.index(split)][:2]
        assert events.groupby("SessionId").size().min() >= 2


def test_otto_sample_reports_its_empty_validation_split(tmp_path):
    # The 20 sample sessions: 10 from the first days, 10 from the last one, none in between.
    report = prepare("otto", [SAMPLES / "otto-train.jsonl"], tmp_path)
    assert any(note.startswith("WARNING: train_valid is empty") for note in report.notes)
    assert (tmp_path / "train_valid.tsv.gz").exists()
    assert "ts read as milliseconds (all values >= 1e11)" in report.notes


def test_report_lines_summarise_counts_and_removals(tmp_path):
    report = prepare(
        "yoochoose", [RAW / "yoochoose-clicks.dat", RAW / "yoochoose-test.dat"], tmp_path
    )
    lines = report.lines()
    assert lines[0] == "recipe yoochoose: 38 raw events"
    assert any(
        re.fullmatch(r"\s+consecutive repeats\s+1 events \(0 sessions\)", li) for li in lines
    )
    row = next(li for li in lines if li.strip().startswith("train_valid "))
    assert row.split()[:4] == ["train_valid", "4", "2", "2"]
    assert isinstance(report, PrepareReport)


def test_sessionise_cuts_only_gaps_over_the_limit():
    users = np.array(["u2", "u1", "u1", "u1", "u2", "u1"], dtype=object)
    times = np.array([0.0, 0.0, 3600.0, 7201.0, 3601.0, 7202.0])
    ids, cuts = sessionise(users, times, 3600.0)
    # u1: 0, 3600 (exactly 1 h: same session), 7201 (cut), 7202; u2: 0, 3601 (cut).
    assert ids.tolist() == [3, 1, 1, 2, 4, 2]
    assert cuts == 2


def test_stream_of_all_events_is_cut_before_non_views_are_dropped(tmp_path):
    # Retailrocket and Coveo measure gaps over every event: an add-to-cart between two views
    # 100 minutes apart keeps them in one session.
    path = tmp_path / "events.csv"
    path.write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "0,7,view,1,\n3000000,7,addtocart,1,\n6000000,7,view,2,\n99000000,7,view,3,\n"
    )
    table = read_table(path, required=["timestamp", "visitorid", "event", "itemid"])
    view = table.equals("event", "view")
    items = table.subset(view).ids("itemid")
    events, removal, _ = views_of_streams(
        table.ids("visitorid"), table.numbers("timestamp"), view, items, 1000.0
    )
    assert events.values.tolist() == [[1, 1, 0.0], [1, 2, 6000.0], [2, 3, 99000.0]]
    assert removal == Removal("non-view events", 1, 0)


@pytest.mark.parametrize("sessions", [[4, 4, 4, 3], [3, 4, 4, 4]], ids=["unsorted", "sorted"])
def test_equal_times_are_ordered_by_item_before_repeats_are_removed(sessions):
    # Items B A B at one instant: sorted A B B, so one B is a consecutive repeat, whatever
    # the file order (the reference scripts sort by session, time, item). "sorted": the file
    # is in session and time order already, and only the tie needs sorting.
    items = [12, 11, 12, 11] if sessions[0] == 4 else [11, 12, 11, 12]
    times = [9.0, 9.0, 9.0, 1.0] if sessions[0] == 4 else [1.0, 9.0, 9.0, 9.0]
    events = pd.DataFrame({"SessionId": sessions, "ItemId": items, "Time": times})
    ordered = order_events(events)
    assert ordered.values.tolist() == [[3, 11, 1.0], [4, 11, 9.0], [4, 12, 9.0], [4, 12, 9.0]]
    kept, removal = drop_consecutive_repeats(ordered)
    assert kept.values.tolist() == [[3, 11, 1.0], [4, 11, 9.0], [4, 12, 9.0]]
    assert removal == Removal("consecutive repeats", 1, 0)


def test_recipes_are_the_documented_ones():
    assert list(RECIPES) == [
        "rsc15", "yoochoose", "diginetica", "retailrocket", "rees46", "coveo", "otto",
        "srgnn-benchmark",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Errors: one line naming the file (and line), and nothing written.

YOO_OK = "1,2014-04-07T10:00:00.000Z,5,0\n"
BAD_FILES = [
    pytest.param(
        "rsc15", {"clicks.dat": YOO_OK + "1,yesterday,6,0\n"},
        r"clicks\.dat:2: column 'Timestamp': 'yesterday' is not a number or an ISO-8601",
        id="rsc15-bad-time",
    ),
    pytest.param(
        "rsc15", {"clicks.dat": YOO_OK + "1,2014-04-07T10:00:01.000Z,6,1.5,3\n"},
        r"clicks\.dat:2: column 'Category': more than 4 comma-separated fields",
        id="rsc15-buys-file",
    ),
    pytest.param(
        "yoochoose", {"clicks.dat": YOO_OK + YOO_OK + "2,2014-04-07T10:00:01.000Z,6\n"},
        r"clicks\.dat:3: column 'Category': missing value", id="yoochoose-short-row",
    ),
    pytest.param("rsc15", {"clicks.dat": ""}, r"clicks\.dat: file is empty", id="empty"),
    pytest.param(
        "diginetica", {"views.csv": "session;item;timeframe;eventdate\n1;2;3;2016-01-01\n"},
        r"views\.csv: expected the columns sessionId;userId;itemId;timeframe;eventdate",
        id="diginetica-header",
    ),
    pytest.param(
        "diginetica",
        {"views.csv": "sessionId;userId;itemId;timeframe;eventdate\n"
         "1;NA;2;3;2016-01-01\n1;NA;3;abc;2016-01-01\n"},
        r"views\.csv:3: column 'timeframe': 'abc' is not a number", id="diginetica-number",
    ),
    pytest.param(
        "retailrocket",
        {"events.csv": "timestamp,visitorid,event,itemid,transactionid\n"
         "1000,1,addtocart,,\n2000,1,view,5,\n3000,1,view,,\n"},
        r"events\.csv:4: column 'itemid': missing value", id="retailrocket-view-without-item",
    ),
    pytest.param(
        "rees46",
        {"2019-Oct.csv": "event_time,event_type,product_id,user_id\n"
         "2019-10-01 00:00:00 UTC,cart,5,1\n2019-10-01 00:00:01 UTC,view,5,1\n"
         "2019-13-01 00:00:02 UTC,view,6,1\n"},
        r"2019-Oct\.csv:4: column 'event_time'", id="rees46-bad-date",
    ),
    pytest.param(
        "coveo",
        {"browsing.csv": "session_id_hash,event_type,product_action,product_sku_hash,"
         "server_timestamp_epoch_ms,hashed_url\n"
         "s1,pageview,,,1000,u\ns1,event,detail,,2000,u\n"},
        r"browsing\.csv:3: column 'product_sku_hash': missing value",
        id="coveo-detail-without-product",
    ),
    pytest.param(
        "coveo", {"browsing.csv": "session_id_hash,product_action,ts\ns1,detail,1\n"},
        r"browsing\.csv: missing column\(s\) server_timestamp_epoch_ms, product_sku_hash",
        id="coveo-columns",
    ),
    pytest.param(
        "otto",
        {"train.jsonl": '{"session": 1, "events": []}\n{"session": 2, "events": [}\n'},
        r"train\.jsonl:2: not valid JSON", id="otto-json",
    ),
    pytest.param(
        "otto",
        {"train.jsonl": '{"session": 1, "events": []}\n\n'
         '{"session": 2, "events": [{"aid": 1, "ts": 5, "type": "clicks"}, '
         '{"aid": 2, "type": "clicks"}]}\n'},
        r"train\.jsonl:3: event 1: 'ts' must be a number, got None", id="otto-missing-ts",
    ),
    pytest.param(
        "otto",
        {"train.jsonl": '{"session": 1, "events": [{"aid": 1, "ts": 1659304800000, '
         '"type": "clicks"}]}\n{"session": 2, "events": [{"aid": 1, "ts": 1659304800, '
         '"type": "clicks"}]}\n'},
        r"train\.jsonl:2: 'ts' in seconds \(threshold 1e11\)", id="otto-mixed-units",
    ),
    pytest.param("otto", {"train.jsonl": ""}, r"train\.jsonl: file is empty", id="otto-empty"),
    pytest.param(
        "srgnn-benchmark",
        {"train.tsv": "SessionId\tItemId\tPos\n1\t5\t0\n1\t6\t1\n",
         "test.tsv": "SessionId\tItemId\tPos\n2\t5\t0\n2\t6\t-1\n"},
        r"test\.tsv:3: column 'Pos': -1 is not a position", id="srgnn-position",
    ),
    pytest.param(
        "srgnn-benchmark",
        {"train.tsv": "SessionId\tItemId\tPos\n1\t5\t0\n1\t6\t1\n",
         "test.tsv": "SessionId\tItemId\tPos\n1\t5\t0\n1\t6\t1\n"},
        r"test\.tsv: session 1 is also in .*train\.tsv", id="srgnn-overlap",
    ),
    pytest.param(
        "srgnn-benchmark",
        {"train.tsv": "SessionId\tItemId\tPos\n1\t5\t0\nx\t6\t1\n",
         "test.tsv": "SessionId\tItemId\tPos\n2\t5\t0\n"},
        r"train\.tsv:3: column 'SessionId': 'x' is not an integer", id="srgnn-session-id",
    ),
    pytest.param(
        # 19 digits do not fit int64: ids() reads the column as text, and this names the line.
        "srgnn-benchmark",
        {"train.tsv": "SessionId\tItemId\tPos\n1\t5\t0\n1234567890123456789\t6\t1\n",
         "test.tsv": "SessionId\tItemId\tPos\n2\t5\t0\n"},
        r"train\.tsv:3: column 'SessionId': '1234567890123456789' is not an integer",
        id="srgnn-session-id-too-long",
    ),
    pytest.param(
        # Every session ends within the last day: train_full would be empty.
        "rsc15", {"clicks.dat": "".join(
            f"{s},2014-04-07T10:00:0{k}.000Z,{item},0\n"
            for s in range(1, 6) for k, item in enumerate((7, 8)))},
        r"no events left in train_full: all sessions end within the last day", id="rsc15-no-train",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("recipe", "files", "message"), BAD_FILES)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, recipe, files, message):
    raw = []
    for name, content in files.items():
        (tmp_path / name).write_text(content)
        raw.append(tmp_path / name)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare(recipe, raw, out)
    assert re.search(message, str(info.value)), str(info.value)
    assert "\n" not in str(info.value)
    assert_nothing_written(out)


def test_failure_leaves_earlier_outputs_untouched(tmp_path):
    out = tmp_path / "out"
    prepare("diginetica", [RAW / "train-item-views.csv"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "views.csv"
    bad.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;2;3;someday\n")
    with pytest.raises(DataError, match=r"views\.csv:2: column 'eventdate'"):
        prepare("diginetica", [bad], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("recipe", "n_files", "message"),
    [
        ("nosuch", 1, r"unknown recipe 'nosuch'; known recipes: rsc15, yoochoose, "),
        ("rsc15", 2, r"recipe rsc15 takes 1 raw file\(s\) .*, got 2"),
        ("yoochoose", 3, r"recipe yoochoose takes 1 to 2 raw file\(s\)"),
        ("rees46", 0, r"recipe rees46 takes 1 or more raw file\(s\)"),
        ("srgnn-benchmark", 1, r"recipe srgnn-benchmark takes 2 raw file\(s\)"),
    ],
)
def test_recipe_name_and_file_count_are_checked(tmp_path, recipe, n_files, message):
    with pytest.raises(DataError, match=message):
        prepare(recipe, [RAW / "yoochoose-clicks.dat"] * n_files, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_missing_raw_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.jsonl: no such file"):
        prepare("otto", [tmp_path / "nothere.jsonl"], tmp_path / "out")


def test_output_path_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    with pytest.raises(DataError, match="exists and is not a directory"):
        prepare("diginetica", [RAW / "train-item-views.csv"], out)


def test_written_files_have_the_standard_columns(tmp_path):
    prepare("otto", [RAW / "otto-train.jsonl"], tmp_path)
    frame = pd.read_csv(tmp_path / "test.tsv.gz", sep="\t")
    assert list(frame.columns) == ["SessionId", "ItemId", "Time"]
    assert frame["Time"].dtype == np.float64


@pytest.mark.parametrize(
    ("recipe", "files"),
    [
        ("rsc15", [SAMPLES / "sample_yoochoose.dat"]),
        ("yoochoose", [RAW / "yoochoose-clicks.dat", RAW / "yoochoose-test.dat"]),
        ("diginetica", [SAMPLES / "sample_train-item-views.csv.gz"]),
        ("retailrocket", [RAW / "retailrocket-events.csv"]),
        ("rees46", [RAW / "rees46-2019-Oct.csv", RAW / "rees46-2019-Nov.csv"]),
        ("coveo", [RAW / "coveo-browsing_train.csv"]),
        ("srgnn-benchmark", [RAW / "srgnn" / f"{part}_sessions.tsv" for part in ("train", "test")]),
    ],
)
def test_reading_in_small_blocks_gives_the_same_splits(tmp_path, monkeypatch, recipe, files):
    # Every file of these spans several 200-byte blocks, each converted on its own.
    from nextclick.data import table

    whole = prepare(recipe, files, tmp_path / "whole")
    monkeypatch.setattr(table, "BLOCK_BYTES", 200)
    blocks = prepare(recipe, files, tmp_path / "blocks")
    assert dataclasses.replace(blocks, files=whole.files) == whole  # the same counts and notes
    for split in SPLITS:
        name = f"{split}.tsv.gz"
        assert gzip.decompress((tmp_path / "blocks" / name).read_bytes()) == gzip.decompress(
            (tmp_path / "whole" / name).read_bytes()
        )
