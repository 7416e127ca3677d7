"""facial_emotion.sinks: text lines, JSON, CSV that spreadsheets cannot run, a stdout that fails.
End to end through predict.main with the shipped model's ONNX export (no TensorFlow)."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import predict
from facial_emotion.pipeline import Face, Result
from facial_emotion.outputs import Run
from facial_emotion.sinks import CsvSink, format_result, spreadsheet_safe

PROJECT_DIR = Path(__file__).resolve().parent.parent
MODEL_DIR = PROJECT_DIR / "models"
HAPPY_FACE = PROJECT_DIR / "dataset" / "validation" / "happy" / "PublicTest_10130075.jpg"


@pytest.fixture
def hostile_model(tmp_path):
    """The shipped model (linked, so its ONNX export still matches) under a JSON that calls its
    happy class "+cmd", a name a spreadsheet would run as a formula."""
    folder = tmp_path / "model"
    folder.mkdir()
    for suffix in (".h5", ".onnx"):
        (folder / f"emotion_model{suffix}").symlink_to(MODEL_DIR / f"emotion_model{suffix}")
    metadata = json.loads((MODEL_DIR / "emotion_model.json").read_text())
    metadata["class_names"] = ["+cmd" if name == "happy" else name for name in metadata["class_names"]]
    (folder / "emotion_model.json").write_text(json.dumps(metadata))
    return folder / "emotion_model.h5"


def test_top_k_is_listed_highest_first():
    result = Result("x.jpg", [Face([1, 2, 3, 4], "b", 0.6, {"a": 0.1, "b": 0.6, "c": 0.25, "d": 0.05})])
    assert format_result(result, 3) == "x.jpg: b (60.0%), c (25.0%), a (10.0%)"
    assert format_result(result, 1) == "x.jpg: b (60.0%)"
    two = Result("y.jpg", [result.faces[0], Face([5, 6, 7, 8], "a", 0.7, {"a": 0.7, "b": 0.3})])
    assert format_result(two, 2) == "y.jpg: b (60.0%), c (25.0%) at [1, 2, 3, 4]; a (70.0%), b (30.0%) at [5, 6, 7, 8]"
    assert format_result(Result("z.jpg"), 3) == "z.jpg: no face found"


def test_spreadsheet_safe():
    for text in ("=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(text) == "'" + text
    assert spreadsheet_safe("happy") == "happy" and spreadsheet_safe("a=b") == "a=b"


def test_formulas_get_an_apostrophe_in_csv_and_stay_exact_in_json(hostile_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    name = "=HYPERLINK(A1).jpg"
    shutil.copy(HAPPY_FACE, tmp_path / name)
    assert predict.main([name, "--model", str(hostile_model), "--csv", "out.csv", "--json"]) == 0
    record, = json.loads(capsys.readouterr().out)
    assert record["file"] == name
    assert record["faces"][0]["emotion"] == "+cmd" and "+cmd" in record["faces"][0]["scores"]
    with open("out.csv", newline="", encoding="utf-8") as handle:
        header, row = list(csv.reader(handle))
    assert "'+cmd" in header and "+cmd" not in header
    assert row[0] == "'" + name
    assert row[header.index("emotion")] == "'+cmd"
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in header + row)


def test_a_file_name_that_is_not_utf8_survives_csv_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.mkdir(b"faces")
    raw = b"faces/caf\xe9.jpg"
    shutil.copy(HAPPY_FACE, raw)
    assert predict.main(["faces", "--csv", "out.csv", "--json"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err == ""
    record, = json.loads(captured.out)
    assert os.fsencode(record["file"]) == raw
    assert record["faces"][0]["emotion"] == "happy"
    content = Path("out.csv").read_bytes()
    assert b"\nfaces/caf\xe9.jpg," in content
    assert predict.main(["faces"]) == 0
    assert capsys.readouterr().out == "faces/caf\\xe9.jpg: happy (95.4%)\n"


def test_csv_writer_keeps_the_real_name_and_every_score(tmp_path):
    path = tmp_path / "rows.csv"
    writer = CsvSink(path, Run(["-x", "y"]))
    writer.add(Result("@a.jpg", [Face([1, 2, 3, 4], "-x", 0.9, {"-x": 0.9, "y": 0.1})]))
    writer.add(Result("clip.mp4", [Face([0, 0, 5, 5], "y", 0.8, {"-x": 0.2, "y": 0.8}, person=3)], video=True,
                      frame=12, time=0.48))
    writer.close()
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows == [["file", "frame", "time", "person", "x", "y", "w", "h", "emotion", "confidence", "'-x", "y"],
                    ["'@a.jpg", "", "", "", "1", "2", "3", "4", "'-x", "0.9", "0.9", "0.1"],
                    ["clip.mp4", "12", "0.48", "3", "0", "0", "5", "5", "y", "0.8", "0.2", "0.8"]]


def test_a_full_stdout_is_one_error_line_and_exit_1():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "predict.py", str(HAPPY_FACE)], cwd=PROJECT_DIR, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: stdout: cannot write (No space left on device)"]
