"""The sinks' smaller promises, one sink at a time, without a model: Parquet's row groups, its
empty file and a name taken during the run; which results the chart keeps; the words for where
an interrupted run stopped; subtitles and their clock; and the console's help and stop signals.
Each test here was written against a mutation of the code that the suite let through."""

import argparse
import os
import shutil

import pytest

from facial_emotion import sinks
from facial_emotion.console import HelpFormatter, StopSignals
from facial_emotion.errors import UserError
from facial_emotion.outputs import Run
from facial_emotion.pipeline import Face, Result

CLASSES = ["happy", "sad"]


def photo(name, emotion="happy"):
    return Result(name, [Face([1, 2, 3, 4], emotion, 0.7, {"happy": 0.7, "sad": 0.3} if emotion == "happy"
                              else {"happy": 0.3, "sad": 0.7})])


def frame(name, index, total=10):
    return Result(name, [], video=True, frame=index, time=index / 5, fps=5, frames_total=total)


# ---- Parquet --------------------------------------------------------------------------------
pq = pytest.importorskip("pyarrow.parquet")


def test_parquet_writes_a_row_group_every_row_group_rows_and_no_empty_one(tmp_path):
    sink = sinks.ParquetSink(tmp_path / "rows.parquet", Run(CLASSES))
    sink.ROW_GROUP = 2
    for index in range(4):
        sink.add(photo(f"{index}.jpg"))
    sink.close()
    sink.close()  # a second close changes nothing
    data = pq.ParquetFile(tmp_path / "rows.parquet")
    assert [data.metadata.row_group(group).num_rows for group in range(data.num_row_groups)] == [2, 2]
    assert data.read().column("file").to_pylist() == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert sorted(os.listdir(tmp_path)) == ["rows.parquet"]


def test_a_run_with_no_result_writes_an_empty_parquet_file_with_its_columns(tmp_path):
    sink = sinks.ParquetSink(tmp_path / "rows.parquet", Run(CLASSES))
    sink.close()
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.num_rows == 0 and table.column_names[:3] == ["file", "frame", "time"]


def test_a_parquet_name_taken_during_the_run_keeps_the_rows_under_a_free_one(tmp_path, capsys):
    sink = sinks.ParquetSink(tmp_path / "rows.parquet", Run(CLASSES))
    sink.add(photo("a.jpg"))
    (tmp_path / "rows.parquet").write_text("another run's")
    sink.close()
    assert (tmp_path / "rows.parquet").read_text() == "another run's"
    assert pq.read_table(tmp_path / "rows_2.parquet").column("file").to_pylist() == ["a.jpg"]
    assert capsys.readouterr().err.strip() == (f"warning: {tmp_path / 'rows.parquet'} appeared during the run "
                                               f"(another run's?); these rows are in {tmp_path / 'rows_2.parquet'}")


def test_a_parquet_folder_removed_during_the_run_is_one_line(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    sink = sinks.ParquetSink(folder / "rows.parquet", Run(CLASSES))
    sink.ROW_GROUP = 1
    sink.add(photo("a.jpg"))  # the partial file is open
    shutil.rmtree(folder)
    with pytest.raises(UserError) as raised:
        sink.add(photo("b.jpg"))
        sink.close()
    assert str(raised.value).startswith(f"{folder / 'rows.parquet'}: cannot write Parquet file (")


def test_parquet_into_a_missing_folder_is_refused_at_once(tmp_path):
    with pytest.raises(UserError) as raised:
        sinks.ParquetSink(tmp_path / "no" / "rows.parquet", Run(CLASSES))
    assert str(raised.value) == f"{tmp_path / 'no' / 'rows.parquet'}: cannot be written (No such file or directory)"


def test_parquet_without_pyarrow_names_its_extra(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else find_spec(name, *a))
    with pytest.raises(UserError) as raised:
        sinks.ParquetSink("rows.parquet", Run(CLASSES))
    assert str(raised.value) == '--parquet needs pyarrow, which is not installed: pip install "facial-emotion[parquet]"'


def test_the_table_of_rows_keeps_its_types_when_a_column_is_all_empty_and_escapes_odd_names():
    schema = sinks.parquet_schema(CLASSES)
    rows = sinks.face_rows(Result(os.fsdecode(b"b\xff.jpg")), CLASSES, faceless=True)
    table = sinks.rows_table(rows, schema)
    assert table.schema == schema and table.column("file").to_pylist() == ["b\\xff.jpg"]
    assert sinks.rows_table([], schema).schema == schema


# ---- the chart, progress words, subtitles ---------------------------------------------------
def test_the_chart_keeps_the_photos_until_a_video_comes_then_that_video_alone(tmp_path):
    sink = sinks.PlotSink(tmp_path / "chart.png", Run(CLASSES))
    first, broken_video = photo("a.jpg"), Result("broken.mp4", video=True, error="unreadable")
    clip = [frame("one.mp4", index) for index in range(3)]
    for result in [first, broken_video, *clip, frame("two.mp4", 0), photo("b.jpg")]:
        sink.add(result)
    assert sink.kept == clip
    photos_only = sinks.PlotSink(tmp_path / "other.png", Run(CLASSES))
    for result in (first, photo("b.jpg")):
        photos_only.add(result)
    assert [result.file for result in photos_only.kept] == ["a.jpg", "b.jpg"]


def progress(total_files, results):
    sink = sinks.ProgressSink(None, Run(CLASSES, total_files=total_files))
    for result in results:
        sink.add(result)
    return sink.describe()


def test_an_interrupted_run_says_where_it_stopped():
    assert progress(3, [photo("a.jpg")]) == "1 of 3 files"
    assert progress(2, [photo("a.jpg"), frame("v.mp4", 0), frame("v.mp4", 1)]) == "2 of 10 frames of v.mp4 (file 2 of 2)"
    assert progress(1, [frame("v.mp4", 4, total=0)]) == "5 frames of v.mp4"


def test_subtitles_of_two_people_starting_together_are_in_person_order():
    frames = [(0.0, 0.5, {2: "sad", 1: "happy"}), (0.5, 0.5, {1: "happy"}), (1.0, 0.5, {})]
    assert sinks.subtitles(frames) == [(0.0, 1.0, "person 1: happy"), (0.0, 0.5, "person 2: sad")]


@pytest.mark.parametrize("seconds, text", [(0, "00:00:00,000"), (1.0, "00:00:01,000"),
                                           (3723.4567, "01:02:03,457"), (59.9996, "00:01:00,000")])
def test_the_subtitle_clock(seconds, text):
    assert sinks.srt_time(seconds) == text


def test_an_srt_name_taken_during_the_run_is_not_written_over(tmp_path):
    sink = sinks.SrtSink(tmp_path / "faces.srt", Run(CLASSES))
    sink.add(Result("v.mp4", [Face([1, 2, 3, 4], "happy", 0.7, {}, person=1)], video=True, frame=0, time=0, fps=5))
    (tmp_path / "faces.srt").write_text("mine")
    with pytest.raises(UserError) as raised:
        sink.close()
    assert str(raised.value) == f"{tmp_path / 'faces.srt'}: already exists; choose another --srt file"
    assert (tmp_path / "faces.srt").read_text() == "mine"


# ---- the console ----------------------------------------------------------------------------
def test_help_shows_a_default_only_where_there_is_one():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--count", type=int, default=3, help="how many")
    parser.add_argument("--name", help="a name")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--no-color", dest="color", action="store_false", help="plain text")
    text = " ".join(parser.format_help().split())
    assert "how many (default: 3)" in text and "a name --fast" in text and "go fast --no-color" in text
    assert "plain text (default: True)" in text


def test_a_second_stop_signal_stops_at_once_except_when_shielded():
    signals = StopSignals()
    signals._handle(2, None)
    assert signals.requested
    with signals.shielded():  # writing files that must agree: not interrupted
        try:
            signals._handle(2, None)
        except KeyboardInterrupt:
            pytest.fail("interrupted inside shielded()")  # a KeyboardInterrupt would stop pytest itself
    with pytest.raises(KeyboardInterrupt):
        signals._handle(2, None)
