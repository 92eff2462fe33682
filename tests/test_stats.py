"""describe / format_stats on a handmade event file with hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from nextclick.data.io import read_events
from nextclick.data.stats import describe, format_stats
from nextclick.errors import DataError

# Sessions (rows shuffled in the file): 7 = a a b (3 events, one repeat), 8 = c (1),
# 9 = a b c d e f g h i j a a (12 events, one repeat at the end), 5 = b c (2, a day later).
# Repeat clicks (item seen earlier in its session): 7's second a, 9's last two a's = 3, out of
# 18 - 4 = 14 next clicks. Items: a 5 events, b 3, c 3, d..j 1 each (10 items, 18 events).
EVENTS = Path(__file__).parent / "data" / "raw" / "stats-events.tsv"

EXPECTED = {
    "n_events": 18,
    "n_sessions": 4,
    "n_items": 10,
    "session_length": {
        "min": 1,
        "median": 2.5,
        "mean": 4.5,
        "max": 12,
        "histogram": {
            "1": 1, "2": 1, "3": 1, "4": 0, "5": 0, "6": 0, "7": 0, "8": 0, "9": 0, "10+": 1,
        },
    },
    "item_support": {"min": 1, "median": 1.0, "mean": 1.8, "max": 5},
    "consecutive_repeats": 2,
    "repeat_clicks": 3,
    "time_first": 1_400_000_000.0,
    "time_last": 1_400_086_500.0,
    "time_span_seconds": 86_500.0,
    "time_span_days": 86_500 / 86_400,
}  # fmt: skip


def test_describe_gives_the_hand_computed_values():
    assert describe(read_events(EVENTS)) == EXPECTED


def test_describe_does_not_depend_on_row_order():
    events = read_events(EVENTS).sample(frac=1.0, random_state=3)
    assert describe(events) == EXPECTED


def test_describe_is_json_ready():
    assert json.loads(json.dumps(describe(read_events(EVENTS)))) == EXPECTED


def test_format_stats_lays_out_every_figure():
    assert format_stats(EXPECTED) == "\n".join(
        [
            "events               18",
            "sessions             4",
            "items                10",
            "session length       1 / 2.5 / 4.50 / 12  (min / median / mean / max)",
            "sessions by length   1: 1  2: 1  3: 1  4: 0  5: 0  6: 0  7: 0  8: 0  9: 0  10+: 1",
            "events per item      1 / 1 / 1.80 / 5  (min / median / mean / max)",
            "consecutive repeats  2",
            "repeat clicks        3 of 14 next clicks (21.4 %)",
            "time                 2014-05-13 16:53:20 UTC .. 2014-05-14 16:55:00 UTC  (1.00 days)",
        ]
    )


def test_format_stats_shows_surrogate_times_as_numbers():
    events = pd.DataFrame({"SessionId": [1, 1], "ItemId": [5, 6], "Time": [5000.0, 5001.0]})
    assert format_stats(describe(events)).splitlines()[-2:] == [
        "repeat clicks        0 of 1 next clicks (0.0 %)",
        "time                 5000 .. 5001  (not Unix seconds)",
    ]


def test_describe_refuses_an_empty_frame():
    with pytest.raises(DataError, match="no events"):
        describe(pd.DataFrame({"SessionId": [], "ItemId": [], "Time": []}))
