"""The package as installed: a prediction-only install names the extra it lacks in one line, and
the training command answers --help and argument errors before TensorFlow loads. (The wheel
itself is built, installed into a fresh venv and run from outside the checkout by
tests/check_install.sh, which CI runs.)"""

import importlib.util
import os
import subprocess
import sys

import pytest

import predict
from facial_emotion import training_cli
from facial_emotion.files import shipped_file

from conftest import PROJECT_DIR

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"


@pytest.fixture
def no_tensorflow(monkeypatch):
    """This process as a prediction-only install sees it: TensorFlow and mtcnn not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name.split(".")[0] in ("tensorflow", "mtcnn") else real(name, *args))


@pytest.fixture
def poisoned_tensorflow(tmp_path):
    """A PYTHONPATH whose `tensorflow` fails when imported: a command that imports it crashes."""
    package = tmp_path / "poison" / "tensorflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('tensorflow was imported')\n")
    return {"PYTHONPATH": str(package.parent)}


@pytest.mark.parametrize("argv", [
    ["--data-dir", "dataset"],
    ["--evaluate", "models/emotion_model.h5", "--test-dir", "dataset/validation"],
    ["--average", "models/emotion_model.h5", "models/emotion_model.h5"],
])
def test_training_without_the_train_extra_is_one_line(no_tensorflow, argv, capsys, monkeypatch):
    monkeypatch.chdir(PROJECT_DIR)
    assert training_cli.main(argv) == 1
    assert capsys.readouterr().err == f"error: {training_cli.TRAIN_EXTRA}\n"


@pytest.mark.parametrize("flags, words", [
    (["--runtime", "keras"], "the Keras runtime needs tensorflow"),
    (["--detector", "mtcnn"], "--detector mtcnn needs tensorflow"),
])
def test_prediction_asking_for_the_train_extra_is_one_line(no_tensorflow, flags, words, capsys):
    assert predict.main([str(PHOTO), *flags]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert words in line and line.endswith('pip install "facial-emotion[train]"')


def test_prediction_only_needs_no_tensorflow(no_tensorflow, capsys):
    assert predict.main([str(PHOTO)]) == 0
    assert capsys.readouterr().out.startswith(f"{PHOTO}: happy (")


@pytest.mark.parametrize("argv, status, words", [
    (["--help"], 0, "--selection-fraction"),
    (["--data-dir", "no/such/folder"], 1, "no/such/folder: no such data folder"),
    (["--resume", "no/such/run"], 1, "no/such/run: no such run folder"),
    (["--evaluate", "models/emotion_model.h5"], 2, "--evaluate needs --test-dir"),
    (["--resume", "runs/x", "--epochs", "5"], 2, "--epochs cannot change them"),
    (["--selection-fraction", "0.7"], 2, "--selection-fraction must be"),
])
def test_training_answers_before_tensorflow_loads(poisoned_tensorflow, argv, status, words):
    for command in ([sys.executable, "emotion_recognition.py"],
                    [sys.executable, "-c", "import sys; from facial_emotion.training_cli import main; sys.exit(main())"]):
        result = subprocess.run([*command, *argv], capture_output=True, text=True, cwd=PROJECT_DIR, timeout=60,
                                env={**os.environ, **poisoned_tensorflow})
        assert result.returncode == status, result.stderr
        assert words in result.stdout + result.stderr
        assert "tensorflow was imported" not in result.stderr


def test_the_poison_works(poisoned_tensorflow):
    """The check above can fail: with the poison, a command that imports TensorFlow dies."""
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                            env={**os.environ, **poisoned_tensorflow}, timeout=60)
    assert "tensorflow was imported" in result.stderr


def test_shipped_files_are_found_in_a_clone():
    assert shipped_file("emotion_model.onnx") == PROJECT_DIR / "models" / "emotion_model.onnx"
    assert shipped_file("face_detection_short_range.onnx").is_file()
