"""Reading event files: formats, sorting, and a one-line error for every kind of bad input."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextclick.cli import main
from nextclick.data import EventColumns, ItemIndex, read_events, write_events
from nextclick.errors import DataError

GOOD = "SessionId\tItemId\tTime\n1\t10\t1.5\n1\t11\t2.5\n2\t10\t0.5\n"


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_reads_tsv_csv_semicolon_and_gzip(tmp_path):
    expected = read_events(_write(tmp_path / "a.tsv", GOOD))
    assert expected["SessionId"].tolist() == [1, 1, 2]
    assert expected["ItemId"].tolist() == [10, 11, 10]
    assert expected["Time"].tolist() == [1.5, 2.5, 0.5]
    for name, text in (("b.csv", GOOD.replace("\t", ",")), ("c.txt", GOOD.replace("\t", ";"))):
        pd.testing.assert_frame_equal(read_events(_write(tmp_path / name, text)), expected)
    gz = tmp_path / "d.tsv.gz"
    gz.write_bytes(gzip.compress(GOOD.encode()))
    pd.testing.assert_frame_equal(read_events(gz), expected)
    # Gzip is recognised by content, not by name.
    hidden = tmp_path / "e.tsv"
    hidden.write_bytes(gzip.compress(GOOD.encode()))
    pd.testing.assert_frame_equal(read_events(hidden), expected)


def test_reads_parquet(tmp_path):
    frame = pd.DataFrame({"SessionId": [2, 1], "ItemId": ["a", "b"], "Time": [5.0, 7.0]})
    frame.to_parquet(tmp_path / "x.parquet")
    events = read_events(tmp_path / "x.parquet")
    assert events["SessionId"].tolist() == [1, 2]
    assert events["ItemId"].tolist() == ["b", "a"]


def test_string_ids_positions_and_custom_columns(tmp_path):
    text = "sess,item,Pos\nb,x,1\nb,y,0\na,z,0\n"
    events = read_events(_write(tmp_path / "p.csv", text), EventColumns("sess", "item"))
    assert events["SessionId"].tolist() == ["a", "b", "b"]
    assert events["ItemId"].tolist() == ["z", "y", "x"]
    assert events["Time"].tolist() == [0.0, 0.0, 1.0]


def test_unsorted_file_is_sorted_stably(tmp_path):
    text = "SessionId\tItemId\tTime\n2\t5\t9\n1\t3\t7\n1\t1\t7\n1\t2\t6\n2\t4\t8\n"
    events = read_events(_write(tmp_path / "u.tsv", text))
    assert events["SessionId"].tolist() == [1, 1, 1, 2, 2]
    # Items 3 and 1 share time 7 and keep their order in the file.
    assert events["ItemId"].tolist() == [2, 3, 1, 4, 5]


def test_iso_timestamps_become_seconds(tmp_path):
    text = "SessionId,ItemId,Time\n1,5,2014-04-07T10:51:09.277Z\n1,6,2014-04-07T10:51:10.277Z\n"
    events = read_events(_write(tmp_path / "t.csv", text))
    assert events["Time"].tolist() == pytest.approx([1396867869.277, 1396867870.277])


def test_write_events_round_trip_and_no_partial_file(tmp_path):
    events = read_events(_write(tmp_path / "a.tsv", GOOD))
    write_events(events, tmp_path / "out.tsv.gz")
    pd.testing.assert_frame_equal(read_events(tmp_path / "out.tsv.gz"), events)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "out.tsv.gz"]


def test_item_index_maps_both_ways_and_unknowns():
    index = ItemIndex.from_items(np.array([30, 10, 20, 10]))
    np.testing.assert_array_equal(index.ids, [10, 20, 30])
    np.testing.assert_array_equal(index.encode(np.array([20, 99, 10])), [1, -1, 0])
    np.testing.assert_array_equal(index.encode(np.array(["30", "abc"])), [2, -1])
    np.testing.assert_array_equal(index.decode(np.array([2, 0])), [30, 10])


BAD_INPUTS = [
    # (file name, content, expected message fragment)
    ("missing.tsv", "SessionId\tTime\n1\t1\n", "missing.tsv: missing column 'ItemId'"),
    ("word.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\t2\tsoon\n",
     "word.tsv:3: column 'Time': 'soon' is not a number"),
    ("empty.tsv", "", "empty.tsv: file is empty"),
    ("header.tsv", "SessionId\tItemId\tTime\n", "header.tsv: has a header but no events"),
    ("nan.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\tNaN\t4\n",
     "nan.tsv:3: column 'ItemId': missing value"),
    ("blank.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\t\t4\n",
     "blank.tsv:3: column 'ItemId': missing value"),
    ("inf.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\t2\tinf\n",
     "inf.tsv:3: column 'Time': 'inf' is not a number"),
    ("binary.tsv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary.tsv: looks like a binary file"),
    ("latin1.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\tcaf\xe9\t4\n".encode("latin-1"),
     "latin1.tsv:3: not valid UTF-8 text"),
    ("ragged.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\t2\t3\t4\n",
     "ragged.tsv:3: expected 3 fields separated by '\\t', saw 4"),
    ("short.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\t2\n",
     "short.tsv:3: column 'Time': missing value"),
    ("nofile.tsv", None, "nofile.tsv: no such file"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS)
def test_bad_input_gets_one_line_error_and_exit_2(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        _write(path, content)
    with pytest.raises(DataError) as info:
        read_events(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    out = tmp_path / "model"
    code = main(["train", "--model", "pop", "--train", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nextclick: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_bad_gzip_and_bad_parquet(tmp_path):
    (tmp_path / "broken.gz").write_bytes(gzip.compress(GOOD.encode())[:20])
    with pytest.raises(DataError, match=r"broken\.gz"):
        read_events(tmp_path / "broken.gz")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad.parquet: not a valid Parquet file"):
        read_events(tmp_path / "bad.parquet")
    pd.DataFrame({"SessionId": [1], "ItemId": [None], "Time": [1.0]}).to_parquet(
        tmp_path / "gap.parquet"
    )
    with pytest.raises(DataError, match=r"gap.parquet: row 1: column 'ItemId': missing value"):
        read_events(tmp_path / "gap.parquet")


def test_console_script_exits_2_without_traceback(tmp_path):
    path = _write(tmp_path / "word.tsv", "SessionId\tItemId\tTime\n1\t2\tx\n")
    done = subprocess.run(
        [sys.executable, "-m", "nextclick.cli", "train", "--model", "pop", "--train", str(path),
         "--out", str(tmp_path / "m")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr == f"nextclick: error: {path}:2: column 'Time': 'x' is not a number "
        "or an ISO-8601 timestamp\n"
    )
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------
# Large files: Arrow reads them in chunks; a value's line and its parsing must not depend on
# which chunk it falls in.

N_BIG = 200_000  # about 3 MB of text: many chunks of Arrow's 1 MB blocks


def _big(tmp_path: Path, times: list[str], name: str = "big.tsv") -> Path:
    rows = [f"{i // 3}\t{i % 97}\t{t}" for i, t in enumerate(times)]
    return _write(tmp_path / name, "SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n")


def test_bad_value_deep_in_a_big_file_names_its_line(tmp_path):
    times = [str(i) for i in range(N_BIG)]
    times[150_000] = "soon"
    with pytest.raises(DataError, match=r"big\.tsv:150002: column 'Time': 'soon' is not a number"):
        read_events(_big(tmp_path, times))
    times[150_000], times[180_000] = "150000", ""
    with pytest.raises(DataError, match=r"big\.tsv:180002: column 'Time': missing value"):
        read_events(_big(tmp_path, times))


def test_iso_times_of_every_layout_match_pandas_in_every_chunk(tmp_path):
    # Mostly Arrow's layout, with layouts only pandas' ISO-8601 reader takes scattered over
    # the chunks; the seconds must equal an independent pandas parse of each value.
    rng = np.random.default_rng(7)
    base = pd.Timestamp("2014-04-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 180 * 86400 * 1000, N_BIG), unit="ms"
    )
    times = [t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for t in base]
    for i in range(7, N_BIG, 9973):
        times[i] = times[i][:-1].replace("T", " ")  # no zone, space: pandas only
    events = read_events(_big(tmp_path, times))
    expected = pd.to_datetime(pd.Series(times), utc=True, format="ISO8601")
    seconds = (expected - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    keys = ["SessionId", "ItemId", "Time"]
    frame = pd.DataFrame({"SessionId": np.arange(N_BIG) // 3, "ItemId": np.arange(N_BIG) % 97,
                          "Time": seconds.to_numpy()})  # fmt: skip
    np.testing.assert_array_equal(
        events.sort_values(keys)["Time"].to_numpy(), frame.sort_values(keys)["Time"].to_numpy()
    )


def test_a_number_among_timestamps_is_named(tmp_path):
    times = ["2014-04-07T10:51:09.277Z"] * N_BIG
    times[120_000] = "1396867869"
    with pytest.raises(
        DataError, match=r"big\.tsv:120002: column 'Time': '1396867869' is not a number or an ISO"
    ):
        read_events(_big(tmp_path, times))


@pytest.mark.parametrize(
    ("content", "names", "message"),
    [
        ("SessionId\tItemId\tTime\n1\t2\t3\n\n1\t2\t4\n", None,
         r"e\.tsv:3: column 'Time': missing value"),  # an empty line is a row of blanks
        ("1,2,3\n1,2,3,4\n", ["SessionId", "ItemId", "Time"],
         r"e\.tsv:2: column 'Time': more than 3 comma-separated fields "
         r"\(expected SessionId,ItemId,Time\)"),
        ("1,2,3\n1,2\n", ["SessionId", "ItemId", "Time"],
         r"e\.tsv:2: column 'Time': missing value"),
    ],
)  # fmt: skip
def test_ragged_lines_name_line_and_layout(tmp_path, content, names, message):
    from nextclick.data.io import read_table

    path = _write(tmp_path / "e.tsv", content)
    with pytest.raises(DataError, match=message):
        table = read_table(path, required=["SessionId", "Time"], sep="," if names else None,
                           names=names)  # fmt: skip
        table.times("Time")


def test_written_times_read_back_bit_for_bit(tmp_path):
    times = [0.0, 1.0, 1e-7, 1396310544.1939998, 1396310544.194, 2.5e15, 123456.0000001]
    events = pd.DataFrame({"SessionId": np.arange(len(times)), "ItemId": ["a\tb", "x"] * 3 + ["y"],
                           "Time": times})  # fmt: skip
    write_events(events, tmp_path / "w.tsv.gz")
    with gzip.open(tmp_path / "w.tsv.gz", "rt") as fh:
        assert fh.readline() == "SessionId\tItemId\tTime\n"
    back = read_events(tmp_path / "w.tsv.gz")
    pd.testing.assert_frame_equal(back, events, check_exact=True)


def test_parquet_categorical_times_and_times_out_of_range(tmp_path):
    stamps = ["2014-04-07T10:51:09.277Z", "2014-04-07T10:51:10.277Z"]
    frame = pd.DataFrame({"SessionId": [1, 1], "ItemId": [5, 6],
                          "Time": pd.Categorical(stamps)})  # fmt: skip
    frame.to_parquet(tmp_path / "c.parquet")
    assert read_events(tmp_path / "c.parquet")["Time"].tolist() == pytest.approx(
        [1396867869.277, 1396867870.277]
    )
    text = "SessionId,ItemId,Time\n1,5,2014-04-07T10:51:09Z\n1,6,3000-01-01T00:00:00Z\n"
    with pytest.raises(DataError, match=r"far\.csv:3: column 'Time': '3000-01-01T00:00:00Z': "
                                        r"a time outside the years 1678-2261"):  # fmt: skip
        read_events(_write(tmp_path / "far.csv", text))


# Reading a block at a time (read_blocks): 40-byte blocks make each block a line or two.
BLOCKS = (
    "SessionId\tItemId\tTime\r\n"
    "7\tp1\t2014-04-07T10:00:01.5Z\r\n"
    "7\tx\t2014-04-07T10:00:00Z\r\n"
    "3\tp1\t2014-04-07T12:00:00+02:00\r\n"
    "3\tp2\t2014-04-07 10:00:02\r\n"  # pandas' layout, not Arrow's: that block goes by pandas
    "5\tp3\t2014-04-07T09:00:00Z"  # no end of line
)


def _block_columns(table):
    return table.ids("SessionId"), table.ids("ItemId"), table.times("Time")


def test_read_blocks_converts_block_by_block_to_the_whole_files_values(tmp_path, monkeypatch):
    from nextclick.data import table as tables

    monkeypatch.setattr(tables, "BLOCK_BYTES", 40)
    gz = tmp_path / "b.tsv.gz"
    gz.write_bytes(gzip.compress(BLOCKS.encode()))
    blocks = list(tables._line_blocks(tables._source(gz, gzipped=True)))
    # Whole lines only; the header alone is a block of no rows.
    assert [block.count(b"\n") for block in blocks] == [1, 2, 1, 1, 0]
    assert b"".join(blocks) == BLOCKS.encode()
    # The block path itself gives the result (no fall-back to the whole file).
    (sessions, items, times), rows = tables._converted_blocks(
        gz, True, _block_columns, ["SessionId", "ItemId", "Time"], None, None
    )
    t0 = 1396864800.0  # 2014-04-07T10:00:00Z
    assert rows == 5 and sessions.tolist() == [7, 7, 3, 3, 5]
    assert items.tolist() == ["p1", "x", "p1", "p2", "p3"]
    assert times.tolist() == [t0 + 1.5, t0, t0, t0 + 2, t0 - 3600]
    events = read_events(gz)
    assert events["SessionId"].tolist() == [3, 3, 5, 7, 7]
    assert events["ItemId"].tolist() == ["p1", "p2", "p3", "x", "p1"]
    assert events["Time"].tolist() == [t0, t0 + 2, t0 - 3600, t0, t0 + 1.5]


def test_read_blocks_ids_text_only_in_a_later_block_read_the_whole_file(tmp_path, monkeypatch):
    from nextclick.data import table as tables

    monkeypatch.setattr(tables, "BLOCK_BYTES", 20)
    path = _write(tmp_path / "b.tsv", "SessionId\tItemId\tTime\n1\t007\t1\n1\t8\t2\n2\tab\t3\n")
    wanted = ["SessionId", "ItemId", "Time"]
    with pytest.raises(tables._WholeFile):  # integers in the first blocks, text in the last
        tables._converted_blocks(path, False, _block_columns, wanted, None, None)
    columns, rows = tables.read_blocks(path, _block_columns,
                                       required=["SessionId", "ItemId", "Time"])  # fmt: skip
    # As the whole file reads: "007" stays text once an id is not an integer.
    assert rows == 3 and columns[1].tolist() == ["007", "8", "ab"]
    assert columns[0].tolist() == [1, 1, 2] and columns[2].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "content, message",
    [
        # The first value decides that times are ISO-8601: a number in a later block is wrong.
        ("1\t1\t2014-04-07T10:00:00Z\n1\t2\t2014-04-07T10:00:01Z\n1\t3\t1396864802\n",
         r"b\.tsv:4: column 'Time': '1396864802' is not a number or an ISO-8601 timestamp"),
        ("1\t1\t5\n1\t2\t6\n1\t3\t2014-04-07T10:00:00Z\n",
         r"b\.tsv:4: column 'Time': '2014-04-07T10:00:00Z' is not a number or an ISO-8601"),
        ("1\t1\t5\n1\t2\t6\n1\t3\t7\n2\t\t8\n", r"b\.tsv:5: column 'ItemId': missing value"),
        ("1\t1\t5\n1\t2\t6\n1\t3\t7\n2\t4\n", r"b\.tsv:5: column 'Time': missing value"),
    ],
)  # fmt: skip
def test_read_blocks_errors_name_the_line_in_the_whole_file(tmp_path, monkeypatch, content,
                                                            message):  # fmt: skip
    from nextclick.data import table as tables

    monkeypatch.setattr(tables, "BLOCK_BYTES", 16)
    path = _write(tmp_path / "b.tsv", "SessionId\tItemId\tTime\n" + content)
    with pytest.raises(DataError, match=message):
        read_events(path)


def test_read_blocks_quoted_line_break_at_a_block_end_reads_the_whole_file(tmp_path, monkeypatch):
    from nextclick.data import table as tables

    monkeypatch.setattr(tables, "BLOCK_BYTES", 13)
    path = _write(tmp_path / "q.csv", 's,t,i\n1,2,"a\n4,5,b"\n7,8,x\n')
    convert = lambda t: (t.ids("s"), t.ids("i"))  # noqa: E731
    with pytest.raises(tables._WholeFile):
        tables._converted_blocks(path, False, convert, ["s", "i", "t"], None, None)
    (sessions, items), rows = tables.read_blocks(path, convert, required=["s", "i", "t"])
    assert rows == 2 and sessions.tolist() == [1, 7] and items.tolist() == ["a\n4,5,b", "x"]


def test_subsets_of_a_whole_file_decide_their_time_kind_each(tmp_path):
    from nextclick.data.io import read_table

    table = read_table(_write(tmp_path / "k.csv", "s,t\n1,5\n2,2020-01-01T00:00:00Z\n"),
                       required=["s", "t"])  # fmt: skip
    assert table.subset(np.array([True, False])).times("t").tolist() == [5.0]
    assert table.subset(np.array([False, True])).times("t").tolist() == [1577836800.0]
