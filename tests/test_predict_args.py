"""The prediction command line's arguments and routing, in-process (test_cli.py runs the script):
defaults, each refusal's words, and what reaches the webcam loop, the file batch and Ray."""

import os

import pytest

from facial_emotion import batch, predict_cli, ray_predict
from facial_emotion.saved_model import DEFAULT_MODEL_PATH

from conftest import PROJECT_DIR

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"


def refused(capsys, *argv):
    """parse_args' usage error for argv: its last stderr line."""
    with pytest.raises(SystemExit) as exit_:
        predict_cli.parse_args(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_defaults():
    args = predict_cli.parse_args(["a.jpg"])
    assert (args.inputs, args.model, args.top_k, args.detector, args.no_detect, args.tta, args.runtime, args.every,
            args.webcam, args.ray) == (["a.jpg"], DEFAULT_MODEL_PATH, 1, "blazeface", False, False, "auto", 1, None, None)
    assert predict_cli.parse_args(["--webcam"]).webcam == 0
    assert predict_cli.parse_args(["--webcam", str(predict_cli.MAX_CAMERA_INDEX)]).webcam == 99
    assert predict_cli.parse_args(["a.jpg", "--ray", "--parquet", "out"]).ray == "local"
    assert predict_cli.parse_args(["a.jpg", "--top-k", "3", "--every", "2"]).top_k == 3


@pytest.mark.parametrize("argv, words", [
    (["a.jpg", "--top-k", "0"], "--top-k must be at least 1"),
    (["a.jpg", "--every", "0"], "--every must be at least 1"),
    ([], "give at least one image, video or folder (or --webcam)"),
    (["--webcam", "-1"], "--webcam takes a camera index from 0 to 99"),
    (["--webcam", "100"], "--webcam takes a camera index from 0 to 99"),
    (["a.jpg", "--webcam"], "--webcam shows its results in a window; it goes with no files and none of "
                            "--json, --csv, --parquet, --srt, --plot, --annotate, --ray"),
    (["--webcam", "--json"], "it goes with no files"),
    (["--webcam", "--ray"], "it goes with no files"),
    (["a.jpg", "--ray"], "--ray writes its results to --parquet FOLDER, and only there: give --parquet and no other output"),
    (["a.jpg", "--ray", "--parquet", "p", "--csv", "c.csv"], "--ray writes its results to --parquet FOLDER"),
    (["a.jpg", "--top", "3"], "unrecognized arguments: --top 3"),  # no abbreviations
])
def test_each_refusal_says_what_is_wrong(capsys, argv, words):
    assert words in refused(capsys, *argv)


def test_no_input_found_is_one_error_line_after_a_warning_per_skipped_file(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a picture")
    os.mkfifo(folder / "pipe.jpg")  # a FIFO among the files: skipped, never opened
    assert predict_cli.main([str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: no image or video files in {folder}"
    assert len(err) == 2 and err[0].startswith(f"warning: skipping {folder / 'pipe.jpg'}: ")


def test_the_webcam_gets_its_index_and_a_pipeline_with_the_options_asked(monkeypatch):
    seen = []
    monkeypatch.setattr(batch, "run_webcam", lambda pipeline, index: seen.append((pipeline, index)))
    assert predict_cli.main(["--webcam", "3", "--tta", "--no-detect"]) == 0
    [(pipeline, index)] = seen
    assert index == 3 and pipeline.classifier.tta is True and pipeline.detector is None
    assert pipeline.make_tracker is not None
    assert predict_cli.main(["--webcam", "--detector", "haar"]) == 0
    assert seen[1][1] == 0 and seen[1][0].detector.kind == "haar" and seen[1][0].classifier.tta is False


def test_files_reach_the_batch_with_their_outputs_top_k_and_every(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(batch, "predict_files", lambda *call: seen.append(call) or 0)
    csv_path = tmp_path / "out.csv"
    assert predict_cli.main([str(PHOTO), "--csv", str(csv_path), "--top-k", "2", "--every", "4"]) == 0
    [(pipeline, inputs, chosen, top_k, every)] = seen
    assert [str(path) for path in inputs] == [str(PHOTO)] and chosen == {"csv": csv_path}
    assert (top_k, every, pipeline.detector.kind) == (2, 4, "blazeface")


def test_an_output_that_exists_is_refused_before_the_model_loads(monkeypatch, tmp_path, capsys):
    taken = tmp_path / "taken.csv"
    taken.write_text("mine")
    monkeypatch.setattr(predict_cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert predict_cli.main([str(PHOTO), "--csv", str(taken)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {taken}: already exists; choose another --csv file"
    assert taken.read_text() == "mine"


def test_ctrl_c_outside_the_batch_is_a_note_and_status_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_cli, "load_model", interrupted)
    assert predict_cli.main([str(PHOTO)]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_ray_gets_the_inputs_and_every_option(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(ray_predict, "predict_on_ray", lambda *args, **kwargs: seen.append((args, kwargs)) or 0)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    (folder / "notes.txt").write_text("x")
    parquet = tmp_path / "out.parquet"
    assert predict_cli.main([str(folder), "--ray", "--parquet", str(parquet), "--detector", "haar", "--tta",
                             "--every", "3", "--runtime", "onnx"]) == 0
    [(args, kwargs)] = seen
    assert [str(path) for path in args[0]] == [str(folder / "a.jpg")]
    assert args[1:] == (parquet, DEFAULT_MODEL_PATH, None)
    assert kwargs == {"detector": "haar", "runtime": "onnx", "tta": True, "every": 3, "no_detect": False}
    assert predict_cli.main([str(folder), "--ray", "ray://head:10001", "--parquet", str(tmp_path / "o2.parquet"), "--no-detect"]) == 0
    assert seen[1][0][3] == "ray://head:10001" and seen[1][1]["no_detect"] is True


def test_ray_refuses_an_empty_input_and_an_output_that_exists(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ray_predict, "predict_on_ray", lambda *args, **kwargs: pytest.fail("Ray was started"))
    (tmp_path / "empty").mkdir()
    assert predict_cli.main([str(tmp_path / "empty"), "--ray", "--parquet", str(tmp_path / "out.parquet")]) == 1
    assert capsys.readouterr().err.strip() == f"error: no image or video files in {tmp_path / 'empty'}"
    (tmp_path / "out.parquet").mkdir()
    assert predict_cli.main([str(PHOTO), "--ray", "--parquet", str(tmp_path / "out.parquet")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_ray_checks_its_extra_model_and_detector_first_and_lists_uris_and_every_input(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(predict_cli, "require_extra", lambda *args: calls.append(("extra", *args)))
    monkeypatch.setattr(predict_cli, "load_model", lambda *args, **kwargs: calls.append(("model", args, kwargs)))
    monkeypatch.setattr(predict_cli, "FaceDetector", lambda kind: calls.append(("detector", kind)))
    monkeypatch.setattr(ray_predict, "list_uris", lambda uri: [f"{uri}/a.jpg", f"{uri}/b.png"])
    monkeypatch.setattr(ray_predict, "predict_on_ray", lambda inputs, *args, **kwargs: calls.append(("ray", inputs)) or 0)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "c.jpg").write_bytes(PHOTO.read_bytes())
    os.mkfifo(folder / "pipe.jpg")
    assert predict_cli.main(["s3://bucket/photos", str(folder), str(PHOTO), "--ray", "--parquet",
                             str(tmp_path / "out.parquet"), "--runtime", "onnx", "--detector", "haar"]) == 0
    assert calls[0] == ("extra", "ray", "--ray", "ray")
    assert calls[1] == ("model", (DEFAULT_MODEL_PATH,), {"runtime": "onnx"}) and calls[2] == ("detector", "haar")
    assert [str(path) for path in calls[3][1]] == ["s3://bucket/photos/a.jpg", "s3://bucket/photos/b.png",
                                                   str(folder / "c.jpg"), str(PHOTO)]
    assert capsys.readouterr().err.startswith(f"warning: skipping {folder / 'pipe.jpg'}: ")
    calls.clear()
    assert predict_cli.main([str(PHOTO), "--ray", "--parquet", str(tmp_path / "o2.parquet"), "--no-detect"]) == 0
    assert [call[0] for call in calls] == ["extra", "model", "ray"]  # no detector to check


def test_ray_with_no_input_names_every_argument(monkeypatch, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert predict_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--ray", "--parquet",
                             str(tmp_path / "out.parquet")]) == 1
    assert capsys.readouterr().err.strip() == f"error: no image or video files in {tmp_path / 'a'}, {tmp_path / 'b'}"


def test_the_model_is_loaded_with_the_runtime_asked_and_its_warnings_as_notes(monkeypatch, tmp_path, capsys):
    real, seen = predict_cli.load_model, []

    def spy(path, **kwargs):
        seen.append((path, kwargs))
        kwargs["warn"]("the export is stale")
        return real(path, runtime="onnx")

    monkeypatch.setattr(predict_cli, "load_model", spy)
    monkeypatch.setattr(batch, "predict_files", lambda *call: 0)
    assert predict_cli.main([str(PHOTO), "--runtime", "onnx"]) == 0
    assert seen == [(DEFAULT_MODEL_PATH, {"runtime": "onnx", "warn": predict_cli.print_note})]
    assert capsys.readouterr().err == "the export is stale\n"


def test_no_input_found_names_every_argument(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert predict_cli.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert capsys.readouterr().err.strip() == f"error: no image or video files in {tmp_path / 'a'}, {tmp_path / 'b'}"


def test_help_describes_the_tool_and_every_option(capsys):
    with pytest.raises(SystemExit):
        predict_cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: ") and "[IMAGE_OR_VIDEO ...]" in text
    assert "Find faces in images and videos and predict each one's emotion." in text
    parser_options = ["--model", "--top-k", "--detector", "--no-detect", "--tta", "--runtime", "--every", "--webcam",
                      "--ray", "--json", "--csv", "--parquet", "--srt", "--plot", "--annotate"]
    for option in parser_options:
        assert option in text
    for words in ("image or video files, or folders of them", "a model saved by emotion_recognition.py",
                  "how many emotions to print per face", "take every image whole as one face",
                  "average each face with its mirror image", "in videos, analyse every Nth frame",
                  "blazeface: Google's BlazeFace", "auto: ONNX Runtime when"):
        assert words in text


def test_an_unknown_detector_or_runtime_is_a_usage_error(capsys):
    assert "invalid choice: 'yolo'" in refused(capsys, "a.jpg", "--detector", "yolo")
    assert "invalid choice: 'tvm'" in refused(capsys, "a.jpg", "--runtime", "tvm")
