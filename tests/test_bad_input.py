"""Every bad image, folder and path a user can hand the tools: one clear line each, the batch
goes on, nothing a user made is lost."""

import errno
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import emotion_recognition as er
import predict
from conftest import PROJECT_DIR, SAMPLE_DIR, copy_sample


@pytest.fixture
def model(trained_run):
    return str(trained_run["model"])


def good_face():
    return sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]


def test_bad_files_in_a_batch_each_get_one_line_and_good_ones_are_still_printed(model, tmp_path, capsys):
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good_face().read_bytes()[:120])
    text = tmp_path / "notes.png"
    text.write_text("hello")
    folder_named_like_image = tmp_path / "folder.jpg"
    folder_named_like_image.mkdir()
    spaced = tmp_path / "my face é 笑.jpg"
    spaced.write_bytes(good_face().read_bytes())
    status = predict.main([str(zero), str(truncated), str(text), str(spaced), "--model", model, "--json"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert status == 1
    assert [bool(result["error"]) for result in results] == [True, True, True, False]
    assert results[3]["file"] == str(spaced) and results[3]["faces"]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "zero.jpg" in errors[0] and "truncated.png" in errors[1] and "notes.png" in errors[2]
    assert "Traceback" not in captured.err


def test_unreadable_file_is_reported(model, tmp_path, capsys, monkeypatch):
    # Tests run as root in CI, where chmod 000 does not stop reading; simulate the OS refusal.
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(good_face().read_bytes())
    original_open = Image.open

    def refuse(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied")
        return original_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", refuse)
    assert predict.main([str(locked), str(good_face()), "--model", model]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {locked}: permission denied"
    assert captured.out.startswith(str(good_face()))


def test_folder_without_images(model, tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no images here")
    assert predict.main([str(tmp_path / "empty"), "--model", model]) == 1
    assert capsys.readouterr().err.strip() == f"error: no image or video files in {tmp_path / 'empty'}"


def test_csv_output_never_overwrites(model, tmp_path, capsys):
    table = tmp_path / "mine.csv"
    table.write_text("precious")
    assert predict.main([str(good_face()), "--model", model, "--csv", str(table)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert table.read_text() == "precious"


def test_more_than_a_thousand_class_folders_is_refused_before_training(tmp_path):
    train = tmp_path / "data" / "train"
    for index in range(er.MAX_CLASSES + 1):
        (train / f"class{index:04d}").mkdir(parents=True)
    (tmp_path / "data" / "validation").mkdir()
    assert er.main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists(), "nothing written before the data was checked"


def test_a_class_with_a_single_image_is_refused(tmp_path, capsys):
    from conftest import copy_sample

    data = copy_sample(tmp_path / "data")
    for path in sorted((data / "train" / "sad").iterdir())[1:]:
        path.unlink()
    assert er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out")]) == 1
    assert "sad: holds 1 image, needs at least 2" in capsys.readouterr().err


def test_evaluation_runs_get_their_own_folders(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert er.main(["--evaluate", str(trained_run["model"]), "--test-dir",
                        str(trained_run["data"] / "validation")]) == 0
    assert (tmp_path / "runs" / "evaluate" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "evaluate2" / "metrics.json").is_file()


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    data = copy_sample(tmp_path / "data")
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert er.main(["--data-dir", str(data), "--output-dir", str(target)]) == er.EXIT_USER_ERROR
    assert capsys.readouterr().err.strip() == f"error: {target}: exists and is not a folder"
    assert target.read_text() == "mine"


def test_a_full_disk_while_saving_leaves_the_old_model_intact(trained_run, tmp_path, monkeypatch):
    path = tmp_path / "emotion_model.h5"
    path.write_bytes(trained_run["model"].read_bytes())
    before = path.read_bytes()
    model = er.load_keras_model(path)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(model), "save", no_space)
    with pytest.raises(er.UserError, match="cannot write \\(No space left on device\\); nothing there was changed"):
        er.save_model_atomically(model, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*partial*"))


def test_bad_training_input_is_one_line_and_writes_nothing(tmp_path):
    output = tmp_path / "out"
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "emotion_recognition.py"), "--data-dir",
                             str(tmp_path / "absent"), "--output-dir", str(output)], capture_output=True,
                            text=True, cwd=PROJECT_DIR, timeout=300)
    assert result.returncode == er.EXIT_USER_ERROR, result.stderr
    assert result.stderr.strip() == f"error: {tmp_path / 'absent'}: no such data folder"
    assert not output.exists(), "nothing written before the data was checked"


def test_prediction_imports_no_tensorflow():
    # Training imports TensorFlow at its top; prediction must not, nor through the package.
    code = ("import sys, predict\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_DIR,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_detect_emotion_sees_an_edited_model_json(trained_run, tmp_path):
    path = tmp_path / "emotion_model.h5"
    path.write_bytes(trained_run["model"].read_bytes())
    metadata = er.read_metadata(trained_run["model"])
    metadata.pop("onnx")
    er.write_json_atomically(metadata, er.metadata_path(path))
    first, confidence = er.detect_emotion(good_face(), path)
    er.write_json_atomically(dict(metadata, class_names=metadata["class_names"][::-1]), er.metadata_path(path))
    second, same_confidence = er.detect_emotion(good_face(), path)
    assert {first, second} == {"happy", "sad"} and same_confidence == confidence
