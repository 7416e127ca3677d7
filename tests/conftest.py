"""Shared fixtures: small class-folder trees made from the real FER-2013 sample in dataset/."""

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import emotion_recognition as er  # noqa: E402

SAMPLE_DIR = PROJECT_DIR / "dataset"


def pytest_configure(config):
    # TensorFlow and Keras emit NumPy-2 deprecation notices on every model call: noise here.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")


def copy_sample(destination, classes=("happy", "sad"), train_per_class=8, validation_per_class=4,
                validation_name="validation"):
    """A tiny data tree of real FER-2013 faces: destination/train/<class>, destination/<val>/<class>."""
    for split, source_split, count in (("train", "train", train_per_class),
                                       (validation_name, "validation", validation_per_class)):
        for name in classes:
            target = Path(destination) / split / name
            target.mkdir(parents=True)
            for path in sorted((SAMPLE_DIR / source_split / name).iterdir())[:count]:
                shutil.copy(path, target / path.name)
    return Path(destination)


@pytest.fixture
def tiny_data(tmp_path):
    return copy_sample(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One real training run (1 epoch, 2 classes) through main(), shared by the tests that need a model.
    The mutation benchmark, which runs the tests once per mutant, trains it once and names it in
    FACIAL_EMOTION_TRAINED_RUN: a copy of that folder is used instead."""
    root = tmp_path_factory.mktemp("trained")
    if os.environ.get("FACIAL_EMOTION_TRAINED_RUN"):
        shutil.copytree(os.environ["FACIAL_EMOTION_TRAINED_RUN"], root, dirs_exist_ok=True)
        return {"data": root / "data", "output": root / "run", "model": root / "run" / "emotion_model.h5"}
    data = copy_sample(root / "data")
    output = root / "run"
    status = er.main(["--data-dir", str(data), "--output-dir", str(output), "--epochs", "1",
                      "--batch-size", "8", "--seed", "1"])
    assert status == 0
    return {"data": data, "output": output, "model": output / "emotion_model.h5"}


@contextlib.contextmanager
def deadline(seconds):
    """Fail, rather than hang, when the block takes longer: an open() of a FIFO blocks forever."""
    def expired(number, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
