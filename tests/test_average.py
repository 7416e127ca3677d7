"""--average: one model with the mean of several models' weights (a model soup), finished like a
training run's (finishing.average_weights, finishing.average, emotion_recognition.average_models).

    python -m pytest -q tests/test_average.py
"""

import json
import shutil

import keras
import numpy as np
import pytest

import emotion_recognition as er
from facial_emotion import finishing
from facial_emotion.errors import UserError
from facial_emotion.files import portable_path
from facial_emotion.keras_runtime import load_keras_model


@pytest.fixture(scope="module")
def second_run(trained_run, tmp_path_factory):
    """A second model of the same network and classes, trained from another seed."""
    output = tmp_path_factory.mktemp("second") / "run"
    assert er.main(["--data-dir", str(trained_run["data"]), "--output-dir", str(output), "--epochs", "1",
                    "--batch-size", "8", "--seed", "2"]) == 0
    return output / "emotion_model.h5"


def kernels(path):
    model = load_keras_model(path)
    return [layer.kernel.numpy() for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_the_average_has_the_mean_weights_and_names_its_members(trained_run, second_run, tmp_path, capsys):
    output = tmp_path / "average"
    assert er.main(["--average", str(trained_run["model"]), str(second_run), "--data-dir", str(trained_run["data"]),
                    "--output-dir", str(output)]) == 0
    first, second, averaged = kernels(trained_run["model"]), kernels(second_run), kernels(output / "emotion_model.h5")
    assert not np.allclose(first[0], second[0]), "two seeds, two models"
    for one, two, mean in zip(first, second, averaged):
        np.testing.assert_allclose(mean, (one + two) / 2, rtol=1e-5, atol=1e-7)
    metadata = json.loads((output / "emotion_model.json").read_text())
    assert [member["model"] for member in metadata["training"]["averaged_from"]] == [
        portable_path(trained_run["model"]), portable_path(second_run)]
    assert metadata["class_names"] == ["happy", "sad"]
    assert "robustness" in metadata["validation"] and (output / "emotion_model.onnx").is_file()
    assert "class_prior" not in metadata["training"], "each member's prior is already in its weights"
    assert "averaged the weights of 2 models" in capsys.readouterr().out


def test_models_of_other_classes_or_one_model_alone_are_refused(trained_run, second_run, tmp_path, capsys):
    other = tmp_path / "other.h5"
    shutil.copy(second_run, other)
    metadata = json.loads(second_run.with_suffix(".json").read_text())
    metadata["class_names"] = metadata["class_names"][::-1]
    other.with_suffix(".json").write_text(json.dumps(metadata))
    data = str(trained_run["data"])
    assert er.main(["--average", str(trained_run["model"]), str(other), "--data-dir", data,
                    "--output-dir", str(tmp_path / "a")]) == er.EXIT_USER_ERROR
    assert "different classes" in capsys.readouterr().err
    assert er.main(["--average", str(trained_run["model"]), "--data-dir", data,
                    "--output-dir", str(tmp_path / "b")]) == er.EXIT_USER_ERROR
    assert "two or more models" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_networks_of_different_shapes_cannot_be_averaged():
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    large = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(UserError, match="different networks"):
        finishing.average_weights([small, large])
