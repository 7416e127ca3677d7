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
from facial_emotion.files import portable_path, portable_record
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
    first_metadata = json.loads(er.metadata_path(trained_run["model"]).read_text())
    assert metadata["training"]["averaged_from"][0]["validation_accuracy"] == first_metadata["validation"]["accuracy"]
    assert metadata["training"]["averaged_from"][0]["training"] == portable_record(first_metadata["training"])
    assert {"tensorflow_version", "keras_version", "cpu_count"} <= set(metadata["training"])
    assert metadata["class_names"] == ["happy", "sad"]
    assert "robustness" in metadata["validation"] and (output / "emotion_model.onnx").is_file()
    assert "class_prior" not in metadata["training"], "each member's prior is already in its weights"
    assert "averaged the weights of 2 models" in capsys.readouterr().out


def average(models, data, output, *flags):
    return er.main(["--average", *map(str, models), "--data-dir", str(data), "--output-dir", str(output), *flags])


def test_models_of_other_classes_the_same_model_twice_or_one_alone_are_refused(trained_run, second_run, tmp_path,
                                                                                 capsys):
    other = tmp_path / "other.h5"
    shutil.copy(second_run, other)
    metadata = json.loads(second_run.with_suffix(".json").read_text())
    metadata["class_names"] = metadata["class_names"][::-1]
    other.with_suffix(".json").write_text(json.dumps(metadata))
    model, data = trained_run["model"], trained_run["data"]
    cases = [([model, other], "are not the data's"), ([model], "two or more different models"),
             ([model, second_run, model], "the same model file twice"),
             ([model, tmp_path / "copy.h5"], "two or more different models")]
    shutil.copy(model, tmp_path / "copy.h5")
    shutil.copy(model.with_suffix(".json"), tmp_path / "copy.json")
    for index, (models, message) in enumerate(cases):
        assert average(models, data, tmp_path / f"out{index}") == er.EXIT_USER_ERROR
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"out{index}").exists()


def test_an_output_folder_holding_a_member_or_training_flags_are_refused(trained_run, second_run, tmp_path, capsys):
    members = [tmp_path / "a" / "emotion_model.h5", second_run]
    members[0].parent.mkdir()
    for suffix in (".h5", ".json"):
        shutil.copy(trained_run["model"].with_suffix(suffix), members[0].with_suffix(suffix))
    before = members[0].read_bytes()
    assert average(members, trained_run["data"], tmp_path / "a", "--overwrite") == er.EXIT_USER_ERROR
    assert "a model being averaged" in capsys.readouterr().err
    assert members[0].read_bytes() == before
    with pytest.raises(SystemExit) as exit_info:
        average(members, trained_run["data"], tmp_path / "b", "--epochs", "5", "--optimizer", "sgd")
    assert exit_info.value.code == 2
    assert "--average trains nothing: --epochs, --optimizer would be ignored" in capsys.readouterr().err


def test_networks_of_different_shapes_cannot_be_averaged():
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    large = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(UserError, match="different networks"):
        finishing.average_weights([small, large])
