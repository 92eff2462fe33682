"""Steps shared by the dataset recipes: cleaning, filtering and the two time-split protocols.

The format modules only parse raw files into a frame of ``SessionId, ItemId, Time`` (Time in
seconds, float64); everything that decides which events end up in which split lives here, so
that every recipe of a protocol applies exactly the same rules.

Two protocols (see ``docs/evaluation.md``, "Datasets and splits"):

* :func:`protocol_2016` — the GRU4Rec paper's RSC15 rules: drop length-1 sessions, then
  items with fewer than 5 events, then sessions shorter than 2 again (one pass); the sessions
  whose *last* event lies within one day of the last timestamp form the test set; test events
  of items unknown to train are dropped, then test sessions shorter than 2. ``train_tr`` /
  ``train_valid`` apply the same split to ``train_full`` (its own last timestamp), as
  GRU4Rec's ``preprocess.py`` does.
* :func:`protocol_2023` — Hidasi & Czapp (2023): sort, remove consecutive repeats, then
  alternate "sessions >= 2" / "items >= 5" until nothing changes; ``t_split`` is the last
  timestamp after filtering; test = the sessions whose *first* event is at or after
  ``t_split - D``; train = the events before ``t_split - D`` (so a session that straddles the
  boundary keeps only its earlier part, and is dropped if that part is a single event);
  ``train_tr`` / ``train_valid`` = the same with ``t_split - 2D`` inside train. Test items
  unknown to train are kept: the evaluator drops them and reports how many.

Both follow the reference scripts (GRU4Rec ``preprocess.py``; the ``*_preproc.py`` scripts of
``hidasib/gru4rec_third_party_comparison``) in the details the spec leaves open: the
boundaries are inclusive on the test side (``>=``), events with equal times are ordered by
item id, and repeats that only become consecutive after a rare item is dropped stay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nextclick.data.io import ITEM, SESSION, TIME
from nextclick.data.table import release_unused
from nextclick.errors import DataError

#: The four output files, in the order they are written and reported.
SPLITS = ("train_full", "test", "train_tr", "train_valid")
DAY = 86_400.0
HOUR = 3_600.0
MIN_SESSION_LENGTH = 2
MIN_ITEM_SUPPORT = 5


@dataclass(frozen=True)
class Removal:
    """What one rule of a recipe removed.

    Attributes
    ----------
    rule
        Short description of the rule, e.g. ``"consecutive repeats"``.
    events
        Events it removed (summed over the rounds of an iterated filter).
    sessions
        Sessions that lost all their events to it; ``None`` where the rule runs before
        sessions exist (e.g. dropping non-view events before sessionising a user stream).
    """

    rule: str
    events: int
    sessions: int | None = None


@dataclass(frozen=True)
class Prepared:
    """Output of a recipe before anything is written: the four splits and what was removed."""

    #: ``SPLITS`` -> frame of ``SessionId, ItemId, Time`` sorted by session, then time.
    splits: dict[str, pd.DataFrame]
    #: Rows read from the raw files (all event types).
    raw_events: int
    removed: tuple[Removal, ...]
    #: Facts worth reporting that are not removals (t_split, filter rounds, units...).
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """A named way of turning raw dataset files into the four splits.

    Attributes
    ----------
    name
        The name the CLI takes (``nextclick prepare NAME ...``).
    summary
        One line for help texts: the raw files it expects and the protocol.
    min_files, max_files
        How many raw files it takes (``max_files=None``: any number from ``min_files``).
    run
        ``run(raw_paths) -> Prepared``; raises :class:`DataError` for bad input.
    """

    name: str
    summary: str
    min_files: int
    max_files: int | None
    run: Callable[[list[Path]], Prepared]


# ---------------------------------------------------------------------------------------
# Raw-file helpers used by the format modules


def events_frame(sessions: np.ndarray, items: np.ndarray, times: np.ndarray) -> pd.DataFrame:
    """The standard ``SessionId, ItemId, Time`` frame (Time as float64 seconds)."""
    return pd.DataFrame({SESSION: sessions, ITEM: items, TIME: np.asarray(times, dtype=np.float64)})


def concat_events(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Events of several files as one frame; ids become str if the files disagree on type."""
    if len(frames) == 1:
        return frames[0]
    for column in (SESSION, ITEM):
        kinds = {frame[column].to_numpy().dtype.kind for frame in frames}
        if len(kinds) > 1:
            # 123 in one file and "abc" in another: compare them all as text, as "123".
            frames = [frame.assign(**{column: frame[column].astype(str)}) for frame in frames]
    return pd.concat(frames, ignore_index=True)


def sessionise(users: np.ndarray, times: np.ndarray, gap: float) -> tuple[np.ndarray, int]:
    """Cut each user's stream into sessions where consecutive events are more than ``gap`` apart.

    Parameters
    ----------
    users : (n,)
        User (or given session) id of each event, int64 or str, in any order.
    times : (n,) float64
        Event times, in the unit of ``gap``. Pass integer milliseconds as they are rather
        than seconds ``/ 1000``, so that a gap of exactly one hour compares exactly.
    gap
        A session ends where the next event of the user is more than ``gap`` later
        (a gap of exactly ``gap`` does not cut).

    Returns
    -------
    session_ids : (n,) int64
        New session ids aligned with the input, numbered from 1 in (user, time) order.
    n_cuts : int
        Sessions created by time gaps (beyond one per user).
    """
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64), 0
    keys = sort_key(users)
    order = np.lexsort((times, keys))
    sorted_users, sorted_times = keys[order], times[order]
    new_user = np.r_[True, sorted_users[1:] != sorted_users[:-1]]
    cut = np.r_[False, np.diff(sorted_times) > gap] & ~new_user
    ids = np.empty(len(users), dtype=np.int64)
    ids[order] = np.cumsum(new_user | cut)
    return ids, int(cut.sum())


def views_of_streams(
    users: np.ndarray,
    times: np.ndarray,
    view: np.ndarray,
    items: np.ndarray,
    per_second: float,
) -> tuple[pd.DataFrame, Removal, str]:
    """Sessionise every event of each user's stream by 1-hour gaps, then keep the views.

    Parameters
    ----------
    users, times : (n,)
        Stream id and time of every row, ``per_second`` time units a second (1000 for ms).
    view : (n,) bool
        The rows to keep.
    items : (view.sum(),)
        The items of those rows (parsed on the view rows only).

    Returns
    -------
    events, removal, note
        The view events with new session ids (seconds), the "non-view events" removal and
        a note on how many sessions the cut made.
    """
    sessions, n_cuts = sessionise(users, times, HOUR * per_second)
    n_sessions = int(sessions.max()) if len(sessions) else 0
    with_views = len(pd.unique(sessions[view]))
    removal = Removal("non-view events", int((~view).sum()), n_sessions - with_views)
    note = f"streams cut into {n_sessions} sessions ({n_cuts} cuts at gaps over 1 hour)"
    return events_frame(sessions[view], items, times[view] / per_second), removal, note


def sort_key(ids: np.ndarray) -> np.ndarray:
    """Integer codes that sort like ``ids`` (str ids are compared as text)."""
    ids = np.asarray(ids)
    return ids if ids.dtype.kind in "iu" else pd.factorize(ids, sort=True)[0]


def utc(seconds: float) -> str:
    """``2014-04-07 00:43:00 UTC`` for a Unix time in seconds."""
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return (
        moment.strftime("%Y-%m-%d %H:%M:%S")
        + (f".{moment.microsecond // 1000:03d}" if moment.microsecond else "")
        + " UTC"
    )


# ---------------------------------------------------------------------------------------
# Cleaning and filtering


def order_events(events: pd.DataFrame) -> pd.DataFrame:
    """Sort by session, then time, then item id.

    The item id breaks ties between events with equal times as the reference scripts do,
    so the result (and which repeats are consecutive) does not depend on the file's order.
    Files already in session and time order (the common case) skip the full sort.
    """
    sessions = sort_key(events[SESSION].to_numpy())
    times = events[TIME].to_numpy()
    items = pd.factorize(events[ITEM].to_numpy(), sort=True)[0]
    same_session = sessions[1:] == sessions[:-1]
    in_order = (sessions[1:] > sessions[:-1]) | (same_session & (times[1:] >= times[:-1]))
    if not in_order.all():
        order = np.lexsort((items, times, sessions))
    else:
        tie = same_session & (times[1:] == times[:-1])
        if not (tie & (items[1:] < items[:-1])).any():
            return events.reset_index(drop=True)
        # Only runs of equal (session, time) need sorting, by item: one nearly sorted key.
        run = np.cumsum(np.r_[True, ~tie])
        order = np.argsort(run * (int(items.max()) + 1) + items, kind="stable")
    return events.iloc[order].reset_index(drop=True)


def _first_rows(sessions: np.ndarray) -> np.ndarray:
    """True on the first event of each session of a frame sorted by session."""
    if len(sessions) == 0:
        return np.zeros(0, dtype=bool)
    return np.r_[True, sessions[1:] != sessions[:-1]]


def drop_consecutive_repeats(events: pd.DataFrame) -> tuple[pd.DataFrame, Removal]:
    """Remove events whose item equals the previous event's item in the same session."""
    sessions, items = events[SESSION].to_numpy(), events[ITEM].to_numpy()
    repeat = ~_first_rows(sessions)
    repeat[1:] &= items[1:] == items[:-1]
    # A repeat always follows a kept event of its session, so no session disappears.
    removal = Removal("consecutive repeats", int(repeat.sum()), 0)
    return events[~repeat].reset_index(drop=True), removal


class _Filter:
    """Session-length and item-support filters over one sorted frame, as boolean masks.

    The frame is never copied between rounds: each rule clears bits of ``keep``, and counts
    come from ``np.bincount`` over integer codes, so a round is a few passes over arrays.
    """

    def __init__(self, events: pd.DataFrame) -> None:
        self.events = events
        self.session = np.cumsum(_first_rows(events[SESSION].to_numpy())) - 1
        self.n_sessions = int(self.session[-1]) + 1 if len(events) else 0
        self.item, uniques = pd.factorize(events[ITEM].to_numpy())
        self.n_items = len(uniques)
        self.keep = np.ones(len(events), dtype=bool)

    def _alive(self) -> int:
        return int(np.count_nonzero(np.bincount(self.session[self.keep], minlength=1)))

    def drop(self, mask: np.ndarray, rule: str) -> Removal:
        """Clear ``mask`` from ``keep`` and report it as ``rule``."""
        before = self._alive()
        self.keep &= ~mask
        return Removal(rule, int(mask.sum()), before - self._alive())

    def short_sessions(self, rule: str) -> Removal:
        lengths = np.bincount(self.session[self.keep], minlength=self.n_sessions)
        return self.drop(self.keep & (lengths[self.session] < MIN_SESSION_LENGTH), rule)

    def rare_items(self, rule: str) -> Removal:
        support = np.bincount(self.item[self.keep], minlength=self.n_items)
        return self.drop(self.keep & (support[self.item] < MIN_ITEM_SUPPORT), rule)

    def result(self) -> pd.DataFrame:
        return self.events[self.keep].reset_index(drop=True)


def filter_until_stable(events: pd.DataFrame) -> tuple[pd.DataFrame, list[Removal], int]:
    """Alternate "sessions >= 2" and "items >= 5" until a round removes nothing (2023).

    Returns the filtered frame, the removals per rule summed over rounds, and the number of
    rounds (the last one removes nothing).
    """
    state = _Filter(events)
    removals: list[Removal] = []
    rounds = 0
    while True:
        rounds += 1
        step = [
            state.short_sessions("sessions shorter than 2"),
            state.rare_items("items with fewer than 5 events"),
        ]
        removals += step
        if all(r.events == 0 for r in step):
            return state.result(), merge_removals(removals), rounds


def filter_one_pass(events: pd.DataFrame) -> tuple[pd.DataFrame, list[Removal]]:
    """Sessions of length 1, then items with < 5 events, then sessions < 2 again (2016)."""
    state = _Filter(events)
    removals = [
        state.short_sessions("length-1 sessions"),
        state.rare_items("items with fewer than 5 events"),
        state.short_sessions("sessions shorter than 2 after the item filter"),
    ]
    return state.result(), removals


def merge_removals(removals: Iterable[Removal]) -> list[Removal]:
    """Sum removals of the same rule, keeping the order in which rules first appear."""
    merged: dict[str, Removal] = {}
    for r in removals:
        old = merged.get(r.rule)
        if old is None:
            merged[r.rule] = r
        else:
            sessions = None if old.sessions is None else old.sessions + (r.sessions or 0)
            merged[r.rule] = Removal(r.rule, old.events + r.events, sessions)
    return list(merged.values())


def _drop_short_sessions(events: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, Removal]:
    state = _Filter(events)
    removal = state.short_sessions(rule)
    return state.result(), removal


def _broadcast_first_last(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Start and end time of each event's session (the frame is sorted by session, time)."""
    times = events[TIME].to_numpy(dtype=np.float64)
    first = _first_rows(events[SESSION].to_numpy())
    session = np.cumsum(first) - 1
    starts = times[first]
    last_index = np.r_[np.flatnonzero(first)[1:], len(times)] - 1
    ends = times[last_index]
    return starts[session], ends[session]


# ---------------------------------------------------------------------------------------
# Splits


def _require_events(events: pd.DataFrame, what: str) -> None:
    if events.empty:
        raise DataError(f"no events left {what}; the raw data is too small for this recipe")


def split_by_start(
    events: pd.DataFrame, boundary: float, part: str, rest: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[Removal]]:
    """2023 split: sessions starting at/after ``boundary`` vs. the events before it.

    Returns ``(before, after, removals)``: ``after`` holds whole sessions; ``before`` holds
    the events with time < ``boundary``, minus sessions that this cut left shorter than 2.
    """
    times = events[TIME].to_numpy(dtype=np.float64)
    starts, _ = _broadcast_first_last(events)
    later = starts >= boundary
    earlier = times < boundary
    tail = ~later & ~earlier
    before, short = _drop_short_sessions(
        events[earlier].reset_index(drop=True),
        f"{part} boundary: {rest} sessions cut below 2 events",
    )
    removals = [
        Removal(
            f"{part} boundary: later events of {rest} sessions started before it",
            int(tail.sum()),
            0,
        ),
        short,
    ]
    return before, events[later].reset_index(drop=True), removals


def split_by_end(
    events: pd.DataFrame, period: float, part: str, rest: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[Removal], float]:
    """2016 split: sessions whose last event is within ``period`` of the last timestamp.

    Returns ``(before, after, removals, t_max)``; ``after`` loses events of items that do not
    occur in ``before``, then sessions shorter than 2.
    """
    t_max = float(events[TIME].max())
    _, ends = _broadcast_first_last(events)
    later = ends >= t_max - period
    before = events[~later].reset_index(drop=True)
    after = events[later].reset_index(drop=True)
    unknown = ~after[ITEM].isin(pd.unique(before[ITEM].to_numpy())).to_numpy()
    state = _Filter(after)
    removals = [state.drop(unknown, f"{part} events of items not in {rest}")]
    removals.append(state.short_sessions(f"{part} sessions shorter than 2 after that"))
    return before, state.result(), removals, t_max


def _prepared(
    splits: dict[str, pd.DataFrame],
    raw_events: int,
    removed: list[Removal],
    notes: list[str],
) -> Prepared:
    return Prepared(
        {name: splits[name] for name in SPLITS}, raw_events, tuple(removed), tuple(notes)
    )


def protocol_2016(events: pd.DataFrame, raw_events: int | None, notes: list[str]) -> Prepared:
    """RSC15 as in the 2016 paper (see the module docstring); ``events`` in any order.

    ``raw_events`` None: ``len(events)``. A caller that passes ``events`` without keeping a
    reference lets each step's input go as soon as the next step has its output (a 33M-click
    frame is 0.8 GB).
    """
    raw_events = len(events) if raw_events is None else raw_events
    release_unused()  # the raw file's columns are gone: their memory, before the sorts
    events = order_events(events)
    events, removed = filter_one_pass(events)
    _require_events(events, "after the session and item filters")
    train, test, more, t_max = split_by_end(events, DAY, "test", "train_full")
    del events  # train and test hold its rows
    removed += more
    _require_events(train, "in train_full: all sessions end within the last day")
    train_tr, valid, more, t_max_train = split_by_end(train, DAY, "train_valid", "train_tr")
    removed += more
    notes = [
        *notes,
        f"test: sessions ending at or after {utc(t_max - DAY)} (last event {utc(t_max)} "
        "minus 1 day); train_valid: the same inside train_full, from "
        f"{utc(t_max_train - DAY)}",
    ]
    splits = {"train_full": train, "test": test, "train_tr": train_tr, "train_valid": valid}
    return _prepared(splits, raw_events, removed, notes)


def protocol_2023(
    events: pd.DataFrame,
    period: float,
    raw_events: int | None,
    removed: list[Removal],
    notes: list[str],
) -> Prepared:
    """Hidasi & Czapp (2023) cleaning and split (see the module docstring).

    Parameters
    ----------
    events
        ``SessionId, ItemId, Time`` of view events only, Time in seconds, any order.
    period
        ``D`` in seconds: the length of the test period and of the validation period.
    raw_events, removed, notes
        What the format module read (None: ``len(events)``) and removed already; passed on
        to the report. As for :func:`protocol_2016`, a caller that keeps no reference to
        ``events`` lets each step's input go.
    """
    raw_events = len(events) if raw_events is None else raw_events
    release_unused()  # the raw files' columns are gone: their memory, before the sorts
    events = order_events(events)
    events, repeats = drop_consecutive_repeats(events)
    events, filtered, rounds = filter_until_stable(events)
    _require_events(events, "after the session and item filters")
    t_split = float(events[TIME].max())
    train, test, cut = split_by_start(events, t_split - period, "test", "train_full")
    del events  # train and test hold its rows
    train_tr, valid, cut_valid = split_by_start(
        train, t_split - 2 * period, "validation", "train_tr"
    )
    days = f"{period / DAY:g} day" + ("s" if period != DAY else "")
    notes = [
        *notes,
        f"filter rounds until stable: {rounds}",
        f"t_split = {utc(t_split)} (last event), D = {days}; test: sessions starting at or "
        f"after {utc(t_split - period)}; train_valid: from {utc(t_split - 2 * period)}",
    ]
    splits = {"train_full": train, "test": test, "train_tr": train_tr, "train_valid": valid}
    return _prepared(splits, raw_events, [*removed, repeats, *filtered, *cut, *cut_valid], notes)
