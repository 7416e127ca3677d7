"""The fourth red-team round's cases, each through the real command line or API: class folders
changed before --resume, models whose answers are not probabilities, an evaluation written into
its own test folder, video names that FFmpeg would take for protocols or could not encode, 32-bit
images, a full disk under --csv, and output folders that cannot be written."""

import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import emotion_recognition as er
import predict
from conftest import PROJECT_DIR, SAMPLE_DIR, copy_sample
from facial_emotion.files import file_sha256
from facial_emotion.images import to_grayscale
from facial_emotion.saved_model import metadata_path, onnx_path
from test_hostile_input import copy_model, face_file, one_error_line
from test_predict_robustness import make_video


def interrupted_copy(trained_run, root):
    """The trained run as if interrupted after its epoch, on a copy of its data."""
    data = root / "data"
    shutil.copytree(trained_run["data"], data)
    run = root / "run"
    shutil.copytree(trained_run["output"], run)
    state = json.loads((run / er.STATE_FILE).read_text())
    state.update(finished=False, epochs_done=0)
    state["settings"].update(data_dir=str(data), epochs=2)
    (run / er.STATE_FILE).write_text(json.dumps(state))
    return data, run


@pytest.mark.parametrize("change", ["add", "rename"])
def test_resume_refuses_data_whose_classes_changed(trained_run, tmp_path, capsys, change):
    data, run = interrupted_copy(trained_run, tmp_path)
    if change == "add":
        copy_sample(tmp_path / "extra", classes=("angry",))
        for split in ("train", "validation"):
            shutil.copytree(tmp_path / "extra" / split / "angry", data / split / "angry")
    else:
        for split in ("train", "validation"):
            (data / split / "sad").rename(data / split / "a_sad")
    assert er.main(["--resume", str(run)]) == er.EXIT_USER_ERROR
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "its classes changed since the run began (happy, sad -> " in line


def save_with_json(network, path, class_names=("a", "b")):
    network.save(str(path))
    er.write_json_atomically({"class_names": list(class_names)}, metadata_path(path))
    return path


@pytest.mark.parametrize("activation, words", [("linear", "not probabilities"), ("relu", "not probabilities")])
def test_scores_that_are_not_probabilities_are_refused(tmp_path, capsys, activation, words):
    import keras

    network = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(2, activation=activation, kernel_initializer="ones",
                                                   bias_initializer=keras.initializers.Constant([3.0, -5.0]))])
    model = save_with_json(network, tmp_path / f"{activation}.h5")
    assert predict.main([str(face_file()), "--model", str(model)]) == 1
    assert words in one_error_line(capsys.readouterr().err)


def test_an_onnx_model_answering_strings_is_one_line(trained_run, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    model = copy_model(trained_run["model"], tmp_path / "model")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["faces"], ["flat"]),
         helper.make_node("Slice", ["flat", "start", "end", "axis"], ["two"]),
         helper.make_node("Cast", ["two"], ["scores"], to=TensorProto.STRING)], "strings",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, [None, 48, 48, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.STRING, [None, 2])],
        [helper.make_tensor("start", TensorProto.INT64, [1], [0]), helper.make_tensor("end", TensorProto.INT64, [1], [2]),
         helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), onnx_path(model))
    metadata = json.loads(metadata_path(model).read_text())
    metadata["onnx"] = {"h5_sha256": file_sha256(model), "onnx_sha256": file_sha256(onnx_path(model))}
    metadata_path(model).write_text(json.dumps(metadata))
    result = subprocess.run([sys.executable, "predict.py", str(face_file()), "--model", str(model)], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "values, not scores" in one_error_line(result.stderr)


def test_an_evaluation_inside_its_own_test_folder_is_refused(trained_run, tmp_path, capsys):
    test_dir = tmp_path / "test"
    shutil.copytree(trained_run["data"] / "validation", test_dir)
    assert er.main(["--evaluate", str(trained_run["model"]), "--test-dir", str(test_dir),
                    "--output-dir", str(test_dir / "eval")]) == er.EXIT_USER_ERROR
    assert "inside the data folder" in capsys.readouterr().err
    assert not (test_dir / "eval").exists()


@pytest.mark.parametrize("name", ["http:clip.avi", "concat:a.avi|b.avi", "pipe:0.avi", os.fsdecode(b"b\xff.avi")])
def test_video_names_are_files_not_protocols_and_odd_bytes_do_not_crash(tmp_path, name):
    make_video(tmp_path / "a.avi", 2)  # what a concat: protocol would read instead of the file named
    make_video(tmp_path / "plain.avi", 6)
    os.rename(tmp_path / "plain.avi", tmp_path / name)  # OpenCV's writer cannot take such a name either
    for locale in ({}, {"LC_ALL": "C", "PYTHONUTF8": "0"}):
        result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), name, "--json"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, env={**os.environ, **locale},
                                errors="surrogateescape")
        assert result.returncode == 0, result.stderr
        frames = json.loads(result.stdout)
        assert [frame["frame"] for frame in frames] == list(range(6))  # this file's 6 frames, not a.avi's 2


def test_a_32_bit_image_above_16_bits_is_stretched_not_clipped_to_white():
    ramp = np.tile(np.linspace(0, 4_000_000, 64), (64, 1)).astype(np.int32)
    gray = np.asarray(to_grayscale(Image.fromarray(ramp, "I")))
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray[0].astype(int)) >= 0) and len(np.unique(gray)) > 60


def test_a_full_disk_under_the_csv_is_one_line_and_leaves_no_partial_file(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for index, path in enumerate(sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[:40]):
        shutil.copy(path, faces / f"{index:02d}.jpg")
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # noqa: E731  about 10 rows
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(faces), "--csv",
                             str(tmp_path / "rows.csv")], capture_output=True, text=True, timeout=120,
                            preexec_fn=limit)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "rows.csv: cannot be written" in errors[0]
    assert len(result.stdout.splitlines()) == 40, "every face still gets its line"
    assert sorted(os.listdir(tmp_path)) == ["faces"], "no CSV, whole or partial"


def test_running_out_of_file_handles_is_said_once_and_stops_the_batch(monkeypatch, capsys, tmp_path):
    import errno

    from facial_emotion import images

    def no_handles(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(images.Image, "open", no_handles)
    faces = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[:3]
    assert predict.main([*map(str, faces), "--csv", str(tmp_path / "rows.csv")]) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert "out of file handles" in line and "ulimit -n" in line
    assert captured.out == "", "no healthy file is blamed, none is answered after"


@pytest.mark.parametrize("failure", ["raises", "wrong shape", "not finite"])
def test_a_face_detector_that_fails_is_each_photo_s_error_and_the_batch_goes_on(monkeypatch, capsys, failure):
    from facial_emotion import blazeface

    real = blazeface.BlazeFaceDetector.__init__

    def broken(self, *args, **kwargs):
        real(self, *args, **kwargs)
        run = self.session.run

        def answer(outputs, feeds):
            if failure == "raises":
                raise RuntimeError("Failed to allocate memory for requested buffer")
            regressions, logits = run(outputs, feeds)
            if failure == "wrong shape":
                return regressions[:, :-1], logits[:, :-1]
            return np.full_like(regressions, np.nan), logits

        self.session = type("Session", (), {"run": staticmethod(answer), "get_inputs": self.session.get_inputs})()

    monkeypatch.setattr(blazeface.BlazeFaceDetector, "__init__", broken)
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    assert predict.main([str(photo), str(photo)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") and "face detector" in line for line in lines)


def test_an_unwritable_matplotlib_folder_costs_no_warning(tmp_path):
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(photo), "--plot",
                             str(tmp_path / "chart.png")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MPLCONFIGDIR": "/proc/no/such/folder"})
    assert result.returncode == 0 and result.stderr == ""
    with Image.open(tmp_path / "chart.png") as chart:
        assert chart.format == "PNG" and np.asarray(chart.convert("L")).std() > 5


def test_a_disk_that_refuses_the_model_s_save_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    data = copy_sample(tmp_path / "data")

    def refused(self, path, *args, **kwargs):  # what h5py raises under `ulimit -f` or a full disk
        raise RuntimeError("Can't write data (file write failed: errno = 27, error message = 'File too large')")

    monkeypatch.setattr(er.keras.Model, "save", refused)
    assert er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                    "--batch-size", "8"]) == er.EXIT_USER_ERROR
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "cannot write" in line and "File too large" in line
    assert not [name for name in os.listdir(tmp_path / "run") if "partial" in name]


@pytest.mark.parametrize("flag, target", [("--plot", "/proc/chart.png"), ("--annotate", "/proc/annotated")])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(capsys, flag, target):
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    assert predict.main([str(photo), flag, target]) == 1
    captured = capsys.readouterr()
    assert captured.out == "", "refused before the photo was analysed"
    assert "cannot" in one_error_line(captured.err)


def test_a_truncated_video_says_so_and_keeps_the_frames_it_read(tmp_path):
    whole = make_video(tmp_path / "whole.avi", 80) or tmp_path / "whole.avi"
    data = whole.read_bytes()
    half = tmp_path / "half.avi"
    half.write_bytes(data[:len(data) // 2])
    table = tmp_path / "rows.csv"
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(half), str(whole), "--csv",
                             str(table)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {half}: ended after ") and "of its 80 frames" in line
    rows = table.read_text().splitlines()
    half_rows = [row for row in rows if row.startswith(str(half))]
    assert 20 < len(half_rows) < 80 and len(rows) - 1 - len(half_rows) == 80  # the whole video is not blamed


def test_a_huge_sparse_model_file_is_refused_before_it_is_read(trained_run, tmp_path, capsys):
    import time

    model = copy_model(trained_run["model"], tmp_path / "model")
    shutil.copy(trained_run["output"] / "emotion_model.onnx", onnx_path(model))
    with open(model, "r+b") as handle:
        handle.truncate(20 * 10**9)  # sparse: no disk used, 20 GB to read
    started = time.perf_counter()
    assert predict.main([str(face_file()), "--model", str(model)]) == 1
    assert time.perf_counter() - started < 10
    assert "refused before reading it" in one_error_line(capsys.readouterr().err)


def test_a_second_run_writing_the_same_outputs_keeps_its_work_under_a_free_name(tmp_path, monkeypatch, capsys):
    from facial_emotion import sinks, video

    clip, table, out = make_video(tmp_path / "clip.avi", 4) or tmp_path / "clip.avi", tmp_path / "rows.csv", \
        tmp_path / "out"
    add, write = sinks.CsvSink.add, video.VideoWriter.write

    def other_run_finishes_first(self, *args):  # the other run names its files while this one works
        for path in (table, out / "clip_annotated.mp4"):
            if not path.exists():
                path.write_text("the other run's")
        return (add if isinstance(self, sinks.CsvSink) else write)(self, *args)

    monkeypatch.setattr(sinks.CsvSink, "add", other_run_finishes_first)
    monkeypatch.setattr(video.VideoWriter, "write", other_run_finishes_first)
    assert predict.main([str(clip), "--csv", str(table), "--annotate", str(out)]) == 0
    assert table.read_text() == "the other run's" and (out / "clip_annotated.mp4").read_text() == "the other run's"
    assert len((tmp_path / "rows_2.csv").read_text().splitlines()) == 5  # the header and 4 frames
    assert (out / "clip_annotated_2.mp4").stat().st_size > 0
    assert f"these rows are in {tmp_path / 'rows_2.csv'}" in capsys.readouterr().err


def test_an_annotated_photo_that_a_full_disk_truncated_silently_is_an_error(tmp_path, monkeypatch, capsys):
    save = Image.Image.save

    def truncated(self, target, *args, **kwargs):  # what a full disk did: save returned, half the file written
        save(self, target, *args, **kwargs)
        data = open(target, "rb").read()
        open(target, "wb").write(data[:len(data) // 2])

    monkeypatch.setattr(Image.Image, "save", truncated)
    out = tmp_path / "out"
    assert predict.main([str(PROJECT_DIR / "tests" / "data" / "astronaut.jpg"), "--annotate", str(out)]) == 1
    assert "cannot write annotated image (it did not read back whole" in one_error_line(capsys.readouterr().err)
    assert os.listdir(out) == []


def test_an_annotated_video_on_a_full_disk_is_an_error_and_never_a_truncated_file(tmp_path):
    source = make_video(tmp_path / "clip.avi", 60, side=256) or tmp_path / "clip.avi"
    out = tmp_path / "out"
    out.mkdir()
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))  # noqa: E731
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(source), "--annotate", str(out),
                             "--no-detect"], capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write annotated" in one_error_line(result.stderr)
    assert os.listdir(out) == [], "no copy, whole or partial"


def test_an_import_that_fails_half_way_removes_what_it_wrote_so_a_rerun_works(tmp_path, monkeypatch, capsys):
    from facial_emotion import fer2013_csv

    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"] + [f"{index % 7},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},Training"
                                        for index in range(30)]
    table = tmp_path / "fer2013.csv"
    table.write_text("\n".join(lines) + "\n")
    real, calls = fer2013_csv.create_new_file, [0]

    def full_after_ten(path, write, what):
        calls[0] += 1
        if calls[0] > 10:
            raise er.UserError(f"{path}: cannot write {what} (No space left on device)")
        return real(path, write, what)

    monkeypatch.setattr(fer2013_csv, "create_new_file", full_after_ten)
    output = tmp_path / "folders"
    assert er.main(["--import-csv", str(table), "--data-dir", str(output)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(output.rglob("*.png")) == [], "none of the 10 images written is left"
    monkeypatch.setattr(fer2013_csv, "create_new_file", real)
    assert er.main(["--import-csv", str(table), "--data-dir", str(output), "--overwrite"]) == 0
    assert len(list(output.rglob("*.png"))) == 30


def test_with_stderr_closed_errors_never_reach_the_json_on_stdout(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(photo), str(broken), "--json"],
                            stdout=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(2))
    assert result.returncode == 1
    records = json.loads(result.stdout)
    assert [record["file"] for record in records] == [str(photo), str(broken)]


# tests/data/vfr.mp4: ten frames of the astronaut, frame n stamped at 0.12 * n**2 seconds, the last
# at 9.68 as the encoder wrote it (tests/data/README.md says how it was made).
VFR_TIMES = [0.0, 0.12, 0.48, 1.08, 1.92, 3.0, 4.32, 5.88, 7.68, 9.68]


def test_a_variable_frame_rate_video_is_timed_by_its_own_timestamps(tmp_path):
    subtitles = tmp_path / "faces.srt"
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), str(PROJECT_DIR / "tests/data/vfr.mp4"),
                             "--json", "--srt", str(subtitles)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frames = json.loads(result.stdout)
    # index / average frame rate would put frame 3 at 2.92 s and frame 9 at 8.75 s
    assert [round(frame["time"], 2) for frame in frames] == VFR_TIMES
    assert all(frame["faces"] for frame in frames)
    assert subtitles.read_text().splitlines()[1].startswith("00:00:00,000 --> 00:00:10,")


def test_the_api_times_a_variable_frame_rate_video_by_its_timestamps():
    from facial_emotion import track_emotions

    frames = list(track_emotions(PROJECT_DIR / "tests/data/vfr.mp4", every=3))
    assert [frame.index for frame in frames] == [0, 3, 6, 9]
    assert [round(frame.time, 2) for frame in frames] == VFR_TIMES[::3]


class StampedCapture:
    """A capture whose frames carry the given timestamps (milliseconds)."""

    def __init__(self, stamps):
        self.stamps, self.at = list(stamps), -1

    def read(self):
        self.at += 1
        return (True, np.zeros((4, 4, 3), np.uint8)) if self.at < len(self.stamps) else (False, None)

    def get(self, _):
        return self.stamps[self.at]


def test_frames_without_usable_timestamps_are_placed_one_frame_apart():
    from facial_emotion.video import read_timed_frames

    times = [time for _, time in read_timed_frames(StampedCapture([0, 0, 0, float("nan"), 500, 400]), fps=10)]
    assert times == pytest.approx([0, 0.1, 0.2, 0.3, 0.5, 0.6])
