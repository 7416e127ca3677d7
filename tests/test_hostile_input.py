"""The third round of hostile input, through the real command lines: nothing hangs, nothing
mixes, nothing is left half-written, and every problem is one line and a non-zero status."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

import emotion_recognition as er
import predict
from conftest import PROJECT_DIR, SAMPLE_DIR, copy_sample
from facial_emotion.saved_model import metadata_path, onnx_path

ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"


def face_file():
    return sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]


def run_script(script, *args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, str(PROJECT_DIR / script), *map(str, args)], capture_output=True,
                          timeout=timeout, cwd=PROJECT_DIR, **kwargs)


def one_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def copy_model(source, folder, edit=None):
    """The trained model's .h5 and JSON (no ONNX) in a folder, the JSON edited by `edit` (text)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "emotion_model.h5"
    shutil.copy(source, target)
    text = metadata_path(source).read_text()
    metadata_path(target).write_text(edit(text) if edit else text)
    return target


# ---------------------------------------------------------------------------------------------
# Data lost or mixed
# ---------------------------------------------------------------------------------------------
def test_a_second_training_into_a_folder_in_use_is_refused_and_a_killed_run_leaves_no_stale_lock(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(PROJECT_DIR / "emotion_recognition.py"), "--data-dir", str(data),
                              "--output-dir", str(run), "--epochs", "500", "--batch-size", "8"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "history.csv").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        second = run_script("emotion_recognition.py", "--data-dir", data, "--output-dir", run, "--epochs", "1",
                            "--overwrite", text=True)
        line = one_error_line(second.stderr)
        assert second.returncode == 1 and f"in use by another run (process {first.pid})" in line
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()  # SIGKILL: no handler runs, the lock file stays behind
        first.wait()
    assert (run / ".run.lock").exists()
    third = run_script("emotion_recognition.py", "--data-dir", data, "--output-dir", run, "--dry-run", "--overwrite",
                       text=True)
    assert third.returncode == 0, third.stderr


def test_a_chart_that_could_not_be_drawn_leaves_nothing_that_blocks_the_retry(trained_run, tmp_path, monkeypatch,
                                                                             capsys):
    from matplotlib.figure import Figure

    chart = tmp_path / "counts.png"
    original = Figure.savefig

    def draw_half_then_fail(self, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise ValueError("cannot draw this")

    monkeypatch.setattr(Figure, "savefig", draw_half_then_fail)
    assert predict.main([str(face_file()), "--model", str(trained_run["model"]), "--plot", str(chart)]) == 1
    assert "cannot be drawn" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == [], "no empty or partial chart left"
    monkeypatch.setattr(Figure, "savefig", original)
    assert predict.main([str(face_file()), "--model", str(trained_run["model"]), "--plot", str(chart)]) == 0
    assert Image.open(chart).size[0] > 100


def test_a_link_out_of_a_class_folder_is_skipped_with_a_warning_not_trained_as_that_class(tmp_path, capsys):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    (data / "train" / "happy" / "up").symlink_to("..")  # would hold sad/ and happy/ again
    (data / "train" / "happy" / "sad_face.jpg").symlink_to(next((data / "train" / "sad").iterdir()))
    images, labels, _ = er.load_split(data / "train", ["happy", "sad"], log=print)
    err = capsys.readouterr().err
    assert np.bincount(labels).tolist() == [8, 8], "only the class folder's own files"
    assert "up: a link that leads out of" in err and "sad_face.jpg: a link that leads out of" in err
    assert "2 file(s)" in err
    assert er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "16 training and 8 validation images" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Hangs
# ---------------------------------------------------------------------------------------------
def test_a_fifo_never_hangs_prediction_or_training(trained_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(face_file(), folder / "a.jpg")
    os.mkfifo(folder / "b.jpg")
    os.mkfifo(folder / "c.mp4")
    walked = run_script("predict.py", folder, "--model", trained_run["model"], timeout=60, text=True)
    assert walked.returncode == 0 and walked.stdout.count("\n") == 1 and "a.jpg: " in walked.stdout
    assert walked.stderr.count("warning: skipping") == 2 and "not a regular file" in walked.stderr
    named = run_script("predict.py", folder / "b.jpg", folder / "a.jpg", "--model", trained_run["model"],
                       timeout=60, text=True)
    assert named.returncode == 1 and "b.jpg: not a regular file" in one_error_line(named.stderr)
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    os.mkfifo(data / "train" / "happy" / "pipe.png")
    trained = run_script("emotion_recognition.py", "--data-dir", data, "--output-dir", tmp_path / "run",
                         "--dry-run", timeout=240, text=True)
    assert trained.returncode == 0 and "pipe.png: not a regular file" in trained.stderr


# ---------------------------------------------------------------------------------------------
# Tracebacks instead of one line
# ---------------------------------------------------------------------------------------------
def test_extreme_shapes_and_names_at_the_limits_are_one_line_each_and_the_batch_goes_on(trained_run, tmp_path,
                                                                                       capsys):
    sliver = tmp_path / "sliver.png"
    Image.new("L", (40000, 16), 128).save(sliver)
    long_name = tmp_path / ("x" * 300 + ".jpg")
    long_path = tmp_path / "/".join(["d" * 200] * 22) / "face.jpg"
    status = predict.main([str(sliver), str(long_name), str(long_path), str(face_file()), "--model",
                           str(trained_run["model"]), "--json"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert status == 1 and len(results) == 4
    assert results[0]["error"] is None and results[0]["faces"] == []
    assert "File name too long" in results[1]["error"] and "File name too long" in results[2]["error"]
    assert results[3]["faces"], "the good face after them is still predicted"
    assert "Traceback" not in captured.err and captured.err.count("error: ") == 2


def test_non_utf8_names_in_csv_and_json_on_a_strict_ascii_stdout(trained_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9 \xff.jpg"
    with open(raw, "wb") as handle:
        handle.write(face_file().read_bytes())
    table = tmp_path / "out.csv"
    env = dict(os.environ, PYTHONIOENCODING="ascii:strict")
    result = run_script("predict.py", folder, "--model", trained_run["model"], "--json", "--csv", table, env=env)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert os.fsencode(record["file"]) == raw, "the JSON keeps the exact name"
    with open(table, "rb") as handle:
        assert raw in handle.read(), "the CSV keeps the exact bytes"
    text = run_script("predict.py", folder, "--model", trained_run["model"], env=env)
    assert text.returncode == 0 and b"caf\\xe9 \\xff.jpg: " in text.stdout


def make_video(path, frames=6, side=64):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (side, side))
    face = np.asarray(Image.open(face_file()).convert("RGB").resize((side, side)))
    for _ in range(frames):
        writer.write(cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_dollar_signs_are_drawn_as_text_not_mathtext(trained_run, tmp_path):
    video = make_video(tmp_path / "cost $5 and $.avi")
    chart = tmp_path / "chart.png"
    result = run_script("predict.py", video, "--model", trained_run["model"], "--plot", chart, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert Image.open(chart).size[0] > 100


def test_output_places_that_cannot_be_written_are_one_line_before_any_work(trained_run, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    under_file = run_script("predict.py", face_file(), "--model", tmp_path / "absent.h5", "--annotate",
                            a_file / "out", text=True)
    assert under_file.returncode == 1 and "notes.txt/out: cannot create" in one_error_line(under_file.stderr)
    with open("/dev/full", "w") as full:
        to_full = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(face_file()), "--model",
                                  str(trained_run["model"])], stdout=full, stderr=subprocess.PIPE, text=True,
                                 timeout=120)
    assert to_full.returncode == 1 and "stdout: cannot write (No space left on device)" in one_error_line(
        to_full.stderr)
    closed = subprocess.run(f"'{sys.executable}' predict.py '{face_file()}' --model '{trained_run['model']}' >&-",
                            shell=True, stderr=subprocess.PIPE, text=True, timeout=120, cwd=PROJECT_DIR)
    assert closed.returncode == 1 and "stdout" in one_error_line(closed.stderr)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace('"temperature": ', '"temperature": 1' + "0" * 400 + ', "was": ', 1), "not 1000"),
    (lambda text: text.replace('"temperature": ', '"temperature": 5e-324, "was": ', 1), "not 5e-324"),
    (lambda text: text[:-2] + ', "deep": ' + "[" * 50000 + "]" * 50000 + "}\n", "nested 50001 levels"),
])
def test_hostile_numbers_in_a_models_json(trained_run, tmp_path, edit, message):
    model = copy_model(trained_run["model"], tmp_path / "model", edit)
    result = run_script("predict.py", face_file(), "--model", model, text=True)
    assert result.returncode == 1 and message in one_error_line(result.stderr)


def test_an_onnx_model_wider_than_its_classes_fails_in_one_line(trained_run, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path / "model"
    model = copy_model(trained_run["model"], folder)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["faces"], ["flat"]),
         helper.make_node("Slice", ["flat", "start", "end", "axis"], ["scores"])], "too_wide",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, [None, 48, 48, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor("start", TensorProto.INT64, [1], [0]), helper.make_tensor("end", TensorProto.INT64, [1], [9]),
         helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), onnx_path(model))
    result = run_script("predict.py", face_file(), "--model", model, "--runtime", "onnx", text=True)
    # The JSON does not record this export, so it is refused before it runs; recorded, it fails running.
    assert result.returncode == 1 and "onnx" in one_error_line(result.stderr)
    from facial_emotion.files import file_sha256

    metadata = json.loads(metadata_path(model).read_text())
    metadata["onnx"] = {"h5_sha256": file_sha256(model), "onnx_sha256": file_sha256(onnx_path(model))}
    metadata_path(model).write_text(json.dumps(metadata))
    result = run_script("predict.py", face_file(), "--model", model, text=True)
    line = one_error_line(result.stderr)  # ONNX Runtime may know the width before it runs, or only after
    assert result.returncode == 1 and ("has 9 outputs but" in line or "answered 9 scores" in line) and "2 classes" in line


@pytest.mark.parametrize("state", ["{}", "[]", '{"epochs_done": "3", "elapsed_seconds": 1, "early_stopping": {}, '
                                               '"settings": {}}'])
def test_a_broken_resume_state_is_one_line(tmp_path, capsys, state):
    (tmp_path / "training_state.json").write_text(state)
    assert er.main(["--resume", str(tmp_path)]) == 1
    assert "not a valid training state" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be from 0 to 4294967295"),
    (["--seed", str(2**32)], "--seed must be from 0 to 4294967295"),
    (["--resume", "runs/x", "--epochs", "5"], "--resume continues a run with its own settings; --epochs"),
])
def test_out_of_range_flags_and_resume_with_training_flags_are_refused(capsys, argv, message):
    with pytest.raises(SystemExit) as usage:
        er.main(argv)
    assert usage.value.code == 2 and message in capsys.readouterr().err


def test_a_full_disk_while_training_writes_a_chart_is_one_line(tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    def disk_full(self, target, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    data = copy_sample(tmp_path / "data", train_per_class=4, validation_per_class=2)
    assert er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--dry-run"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "sample_images.png: cannot write (No space left on device)" in line
    assert not list((tmp_path / "run").glob(".*partial*"))


@pytest.mark.parametrize("content, message", [
    ("emotion,pixels,Usage\n0," + "1 " * 70000 + ",Training\n", "not a FER-2013 CSV file"),
    ("emotion,pixels,Usage\n" + "9" * 5000 + "," + "0 " * 2304 + ",Training\n", "must be numbers"),
    ("emotion,pixels,Usage\n0," + "9" * 400 + " 0" * 2303 + ",Training\n", "must be numbers"),
])
def test_import_csv_edge_cases_are_one_line(tmp_path, capsys, content, message):
    table = tmp_path / "fer2013.csv"
    table.write_text(content)
    assert er.main(["--import-csv", str(table), "--data-dir", str(tmp_path / "out")]) == 1
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_import_csv_into_a_file_is_one_line(tmp_path, capsys):
    table = tmp_path / "fer2013.csv"
    table.write_text("emotion,pixels,Usage\n0," + "0 " * 2304 + ",Training\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert er.main(["--import-csv", str(table), "--data-dir", str(a_file)]) == 1
    assert "exists and is not a folder" in one_error_line(capsys.readouterr().err)
    assert a_file.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# Wrong answers given quietly
# ---------------------------------------------------------------------------------------------
def test_a_diverging_run_stops_in_one_line_and_saves_no_model(tmp_path, capsys):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    assert er.main(["--data-dir", str(data), "--output-dir", str(run), "--epochs", "3", "--batch-size", "8",
                    "--learning-rate", "1e300"]) == 1
    assert "training diverged" in one_error_line(capsys.readouterr().err)
    assert not (run / "emotion_model.h5").exists() and not (run / "last_checkpoint.keras").exists()


def test_a_nan_model_is_never_used(trained_run, tmp_path, capsys):
    import keras

    model = copy_model(trained_run["model"], tmp_path / "model")
    network = keras.models.load_model(model, compile=False)
    network.set_weights([np.full_like(weights, np.nan) for weights in network.get_weights()])
    network.save(model)
    assert predict.main([str(face_file()), "--model", str(model)]) == 1
    assert "NaN" in one_error_line(capsys.readouterr().err)


def test_csv_cells_that_spreadsheets_would_run_are_neutralised_and_json_stays_exact(trained_run, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = '=HYPERLINK("http-x","y").jpg'
    shutil.copy(face_file(), name)
    assert predict.main([name, "--model", str(trained_run["model"]), "--csv", "out.csv", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["file"] == name, "the JSON keeps the exact name"
    with open("out.csv", newline="") as handle:
        header, row = list(csv.reader(handle))
    assert row[0] == "'" + name
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row + header)


def test_a_float_image_in_0_to_1_is_not_black_and_finds_its_face(tmp_path, capsys):
    photo = np.asarray(Image.open(ASTRONAUT).convert("L"), dtype=np.float32) / 255.0
    path = tmp_path / "astronaut.tif"
    Image.fromarray(photo, "F").save(path)
    assert predict.main([str(path), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    [face] = record["faces"]
    x, y, w, h = face["box"]
    assert abs(x - 177) < 15 and abs(y - 66) < 15 and face["emotion"] == "happy"


def test_nan_pixels_and_broken_exif_give_no_warning_noise(tmp_path):
    photo = np.asarray(Image.open(ASTRONAUT).convert("L"), dtype=np.float32)
    photo[:10, :10] = np.nan
    nan_path = tmp_path / "nan.tif"
    Image.fromarray(photo, "F").save(nan_path)
    exif_path = tmp_path / "exif.jpg"
    Image.open(face_file()).save(exif_path, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff garbage")
    result = run_script("predict.py", nan_path, exif_path, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    assert result.stdout.count("\n") == 2


# ---------------------------------------------------------------------------------------------
# The red team's round on the redesigned code
# ---------------------------------------------------------------------------------------------
def test_a_link_planted_under_a_partial_files_name_is_never_written_through_or_deleted(trained_run, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path = type(tmp_path)
    Path("important.txt").write_text("mine")
    for stem in ("out", "out.partial"):
        os.symlink("important.txt", f".{stem}.partial.csv")
    Path(".chart.partial.png").write_text("my own notes")
    assert predict.main([str(face_file()), "--model", str(trained_run["model"]), "--csv", "out.csv",
                         "--plot", "chart.png"]) == 0
    assert Path("important.txt").read_text() == "mine" and Path(".chart.partial.png").read_text() == "my own notes"
    assert not Path("out.csv").is_symlink() and "emotion" in Path("out.csv").read_text()


def test_a_link_planted_as_a_run_folders_lock_is_refused(tmp_path, capsys):
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("years of work")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".run.lock").symlink_to(thesis)
    data = copy_sample(tmp_path / "data", train_per_class=4, validation_per_class=2)
    assert er.main(["--data-dir", str(data), "--output-dir", str(run), "--dry-run"]) == 1
    assert "cannot be locked" in one_error_line(capsys.readouterr().err)
    assert thesis.read_text() == "years of work"


def test_an_image_format_pillow_cannot_decode_is_one_line_and_the_batch_goes_on(trained_run, tmp_path, capsys):
    import struct

    header = struct.pack("<6I", 0x1007, 64, 64, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I4s5I", 32, 0, b"\0" * 4, 0, 0, 0, 0, 0)
    dds = tmp_path / "face.jpg"  # a DDS file of a pixel format Pillow does not implement
    dds.write_bytes(b"DDS " + struct.pack("<I", 124) + header + pixel_format
                    + b"\0" * (120 - len(header) - len(pixel_format)) + b"\0" * 5000)
    assert predict.main([str(dds), str(face_file()), "--model", str(trained_run["model"])]) == 1
    captured = capsys.readouterr()
    assert "face.jpg: broken image" in one_error_line(captured.err)
    assert captured.out.count("\n") == 1


@pytest.mark.parametrize("index", ["-5", "-1", "99999999999999999999"])
def test_a_camera_index_out_of_range_is_refused_before_opencv_sees_it(capsys, index):
    with pytest.raises(SystemExit) as usage:
        predict.main(["--webcam", index])
    assert usage.value.code == 2 and "--webcam takes a camera index from 0 to 99" in capsys.readouterr().err


@pytest.mark.parametrize("option, name", [("--csv", "out"), ("--csv", "out/face_annotated.png"),
                                          ("--plot", "out/chart.png")])
def test_csv_or_plot_inside_the_annotate_folder_is_refused_before_any_work(trained_run, tmp_path, capsys, option,
                                                                         name):
    status = predict.main([str(face_file()), "--model", str(tmp_path / "absent.h5"), "--annotate",
                           str(tmp_path / "out"), option, str(tmp_path / name)])
    assert status == 1 and "inside the --annotate folder" in one_error_line(capsys.readouterr().err)


def test_a_run_folder_inside_the_data_folder_is_refused(tmp_path, capsys):
    data = copy_sample(tmp_path / "data", train_per_class=4, validation_per_class=2)
    assert er.main(["--data-dir", str(data), "--output-dir", str(data / "validation" / "happy" / "run"),
                    "--dry-run"]) == 1
    assert "inside the data folder" in one_error_line(capsys.readouterr().err)
    assert not (data / "validation" / "happy" / "run").exists()


def test_a_huge_model_json_is_refused_by_its_size(trained_run, tmp_path):
    model = copy_model(trained_run["model"], tmp_path / "model")
    with open(metadata_path(model), "r+") as handle:
        handle.truncate(11_000_000)  # sparse: no disk used
    result = run_script("predict.py", face_file(), "--model", model, text=True)
    assert result.returncode == 1 and "over 10 MB" in one_error_line(result.stderr)
