"""A model file from a stranger cannot run code, and wrong model files get one clear line."""

import json

import keras
import numpy as np
import pytest

import emotion_recognition as er
import predict
from conftest import SAMPLE_DIR
from facial_emotion.images import load_face
from facial_emotion.saved_model import load_model, metadata_path, predict_probabilities


def lambda_model(marker):
    """A model whose Lambda layer writes `marker` whenever it runs."""
    # The path is a constant inside the lambda's own code, which is what the file carries.
    side_effect = eval(f"lambda t: (open({str(marker)!r}, 'w').write('ran'), t)[1]")
    model = keras.Sequential([
        keras.Input((48, 48, 1)),
        keras.layers.Lambda(side_effect),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    return model


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_lambda_layer_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "lambda_ran"
    path = tmp_path / f"hostile{suffix}"
    lambda_model(marker).save(str(path))
    er.write_json_atomically({"class_names": ["a", "b"]}, metadata_path(path))
    marker.unlink(missing_ok=True)
    with pytest.raises(er.UserError, match="Lambda layer"):
        load_model(path)
    assert not marker.exists(), "the lambda ran while loading"
    # The check above can fail: loading the same file unsafely does run the lambda.
    keras.models.load_model(str(path), compile=False, safe_mode=False)(np.zeros((1, 48, 48, 1)))
    assert marker.exists()


def test_predict_refuses_a_hostile_model_with_one_line(tmp_path, capsys):
    marker = tmp_path / "lambda_ran"
    path = tmp_path / "hostile.h5"
    lambda_model(marker).save(str(path))
    er.write_json_atomically({"class_names": ["a", "b"]}, metadata_path(path))
    marker.unlink(missing_ok=True)
    image = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]
    assert predict.main([str(image), "--model", str(path)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and "Lambda" in line
    assert not marker.exists()


def test_wrong_input_shape_is_refused(tmp_path):
    path = tmp_path / "colour.h5"
    keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(2, activation="softmax")]).save(str(path))
    er.write_json_atomically({"class_names": ["a", "b"]}, metadata_path(path))
    with pytest.raises(er.UserError, match=r"expects input \(64, 64, 3\), not 48x48 grayscale"):
        load_model(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty model file"),
    (b"just some text, not a model\n", "not a loadable Keras model"),
    (bytes(range(256)) * 40, "not a loadable Keras model"),
])
def test_broken_model_files(tmp_path, content, message):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    er.write_json_atomically({"class_names": ["a", "b"]}, metadata_path(path))
    with pytest.raises(er.UserError, match=message) as error:
        load_model(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_broken_class_name_json(tmp_path):
    path = tmp_path / "model.h5"
    er.save_model_atomically(er.build_model(2), path)
    metadata_path(path).write_text("{ not json")
    with pytest.raises(er.UserError, match="not a valid model description"):
        load_model(path)
    metadata_path(path).write_text('{"class_names": []}')
    with pytest.raises(er.UserError, match="non-empty list"):
        load_model(path)


@pytest.mark.parametrize("change, message", [
    ({"temperature": 0}, "temperature must be a number from 0.001 to 1000, not 0"),
    ({"temperature": -1.5}, "temperature must be a number from 0.001 to 1000, not -1.5"),
    ({"temperature": 1e-9}, "temperature must be a number from 0.001 to 1000, not 1e-09"),
    ({"temperature": 1e6}, "temperature must be a number from 0.001 to 1000, not 1000000.0"),
    ({"temperature_tta": "hot"}, "temperature_tta must be a number from 0.001 to 1000, not 'hot'"),
    ({"class_names": ["a", "a"]}, "class_names holds a name twice"),
])
def test_a_model_json_with_bad_values_is_one_line_from_predict(trained_run, tmp_path, capsys, change, message):
    path = tmp_path / "model.h5"
    path.write_bytes(trained_run["model"].read_bytes())
    metadata = dict(er.read_metadata(trained_run["model"]), **change)
    metadata.pop("onnx", None)
    er.write_json_atomically(metadata, metadata_path(path))
    assert predict.main([str(good_face()), "--model", str(path)]) == er.EXIT_USER_ERROR
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {metadata_path(path)}: {message}"


def test_extra_keys_are_ignored_and_missing_optional_ones_have_defaults(trained_run, tmp_path, capsys):
    path = tmp_path / "model.h5"
    path.write_bytes(trained_run["model"].read_bytes())
    er.write_json_atomically({"class_names": ["happy", "sad"], "from_the_future": {"x": 1}}, metadata_path(path))
    assert predict.main([str(good_face()), "--model", str(path), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    [face] = result["faces"]
    # No temperature in the JSON: the model's own probabilities, uncalibrated (temperature 1).
    expected = predict_probabilities(er.load_keras_model(path), load_face(good_face())[None])[0]
    assert face["scores"] == pytest.approx({"happy": float(expected[0]), "sad": float(expected[1])}, abs=1e-4)
    assert face["emotion"] == ["happy", "sad"][int(expected.argmax())]
    assert face["confidence"] == pytest.approx(float(expected.max()), abs=1e-4)


def good_face():
    return sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]
