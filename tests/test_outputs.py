"""facial_emotion.outputs: one table of outputs, from which predict.py takes its flags, its webcam
conflicts and its output checks; the SRT and Parquet sinks; and a new format as one row."""

import csv
import dataclasses

import pytest

import predict
from facial_emotion import outputs
from facial_emotion.errors import UserError
from facial_emotion.outputs import OUTPUTS, Output, check_outputs
from facial_emotion.sinks import SrtSink, srt_time, subtitles

from conftest import PROJECT_DIR
from test_predict_robustness import make_video, sample_faces

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"


def test_every_flagged_output_is_a_flag_with_its_help_and_a_webcam_conflict(capsys):
    with pytest.raises(SystemExit):
        predict.parse_args(["--help"])
    text = capsys.readouterr().out
    flagged = [output for output in OUTPUTS if output.flag]
    assert {"--json", "--csv", "--parquet", "--srt", "--plot", "--annotate"} == {output.flag for output in flagged}
    for output in flagged:
        assert output.flag in text and output.help.split()[0] in text
    with pytest.raises(SystemExit):
        predict.parse_args(["--webcam", "--srt", "x.srt"])
    assert "--webcam shows its results in a window" in capsys.readouterr().err


@pytest.mark.parametrize("name, path, words", [
    ("srt", "subtitles.txt", "name the --srt file .srt"),
    ("parquet", "rows.csv", "name the --parquet file .parquet"),
    ("plot", "chart.gif", "name the --plot file .png"),
])
def test_a_file_output_takes_only_its_own_suffixes(tmp_path, name, path, words):
    with pytest.raises(UserError, match=words):
        check_outputs({name: tmp_path / path})


def test_two_outputs_naming_one_file_and_a_file_inside_the_annotate_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="--csv and --plot name the same file|--plot and --csv"):
        check_outputs({"csv": tmp_path / "a.png", "plot": tmp_path / "a.png"})
    with pytest.raises(UserError, match="inside the --annotate folder"):
        check_outputs({"annotate": tmp_path / "out", "srt": tmp_path / "out" / "a.srt"})


def test_subtitles_follow_each_person_s_emotion_until_it_changes_or_they_leave():
    step = 0.5
    frames = [(0.0, step, {1: "happy"}), (0.5, step, {1: "happy", 2: "sad"}), (1.0, step, {1: "sad", 2: "sad"}),
              (1.5, step, {2: "sad"}), (2.0, step, {1: "sad"})]
    assert subtitles(frames) == [(0.0, 1.0, "person 1: happy"), (0.5, 2.0, "person 2: sad"),
                                 (1.0, 1.5, "person 1: sad"), (2.0, 2.5, "person 1: sad")]


def test_srt_times_are_hours_minutes_seconds_and_milliseconds():
    assert srt_time(0) == "00:00:00,000"
    assert srt_time(3723.4567) == "01:02:03,457"


def test_srt_from_a_video_through_the_command_line(tmp_path):
    video, srt = make_video(tmp_path / "clip.avi", 6), tmp_path / "clip.srt"
    assert predict.main([str(video), "--srt", str(srt)]) == 0
    blocks = srt.read_text(encoding="utf-8").strip().split("\n\n")
    numbers, spans, labels = zip(*(block.split("\n") for block in blocks))
    assert list(numbers) == [str(index) for index in range(1, len(blocks) + 1)]
    assert spans[0].startswith("00:00:00,000 --> ") and all(label.startswith("person 1: ") for label in labels)
    assert spans[-1].endswith("--> 00:00:00,600")  # the 6th frame at 10 fps ends at 0.6 s


def test_an_srt_without_any_video_is_one_error_line(tmp_path, capsys):
    assert predict.main([str(PHOTO), "--srt", str(tmp_path / "x.srt")]) == 1
    assert capsys.readouterr().err.strip().endswith("nothing to subtitle: no video frame was analysed")
    assert not (tmp_path / "x.srt").exists()


def test_parquet_has_a_row_per_face_and_one_per_faceless_or_broken_image(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (200, 200), "white").save(blank)
    table, rows = tmp_path / "rows.parquet", tmp_path / "rows.csv"
    assert predict.main([str(PHOTO), str(blank), str(broken), "--parquet", str(table), "--csv", str(rows)]) == 1
    parquet = pq.read_table(table)
    class_names = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert parquet.column_names == ["file", "frame", "time", "person", "x", "y", "w", "h", "emotion",
                                    "confidence", *class_names, "error"]
    assert str(parquet.schema.field("x").type) == "int64" and str(parquet.schema.field("happy").type) == "double"
    records = parquet.to_pylist()
    assert [record["file"] for record in records] == [str(PHOTO), str(blank), str(broken)]
    face, faceless, error = records
    with open(rows, newline="", encoding="utf-8") as handle:
        [csv_row] = list(csv.DictReader(handle))
    assert face["emotion"] == csv_row["emotion"] == "happy" and face["error"] is None
    assert [face[key] for key in "xywh"] == [int(csv_row[key]) for key in "xywh"]
    assert face["happy"] == float(csv_row["happy"])
    assert faceless["emotion"] is None and faceless["error"] is None
    assert error["emotion"] is None and "not an image" in error["error"]


class CountingSink:
    """A format added as one class and one row: counts faces."""

    def __init__(self, path, run):
        self.path, self.faces = path, 0

    def add(self, result):
        self.faces += len(result.faces)

    def close(self):
        self.path.write_text(f"{self.faces} faces\n")


def test_a_new_format_is_one_class_and_one_row(tmp_path, monkeypatch):
    row = Output("count", "--count", "file", CountingSink, "write how many faces were found", (".txt",))
    monkeypatch.setattr(outputs, "OUTPUTS", (*OUTPUTS, row))
    monkeypatch.setattr(outputs, "BY_NAME", {**outputs.BY_NAME, "count": row})
    target = tmp_path / "count.txt"
    assert predict.main([str(PHOTO), *map(str, sample_faces("happy", 2)), "--count", str(target)]) == 0
    assert target.read_text() == "3 faces\n"
    assert predict.main([str(PHOTO), "--count", str(target)]) == 1  # and it is checked as a new file


def test_outputs_come_in_the_table_s_order_with_the_pixel_sinks_first():
    assert [output.name for output in OUTPUTS if output.pixels] == ["annotate"]
    assert dataclasses.fields(Output)[0].name == "name" and SrtSink in {output.sink for output in OUTPUTS}
