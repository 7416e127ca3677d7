"""Training with balanced class weights ends with the class prior put back into the model."""

import json

import keras
import numpy as np
import pytest

import emotion_recognition as er
from conftest import copy_sample
from facial_emotion.finishing import restore_class_prior
from facial_emotion.images import INPUT_SHAPE
from facial_emotion.saved_model import predict_probabilities


@pytest.fixture
def uneven_data(tmp_path):
    """8 happy and 2 sad training faces: prior 0.8 / 0.2."""
    data = copy_sample(tmp_path / "data")
    for path in sorted((data / "train" / "sad").iterdir())[2:]:
        path.unlink()
    return data


def test_answers_are_multiplied_by_the_training_class_frequencies():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input(INPUT_SHAPE), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    faces = np.random.default_rng(0).uniform(0, 255, (20, 48, 48, 1)).astype(np.float32)
    labels = np.array([0, 1] * 10)
    before = predict_probabilities(model, faces)
    record = restore_class_prior(model, np.array([0] * 8 + [1] * 2), faces, labels, ["happy", "sad"],
                                    log=lambda *a, **k: None)
    expected = before * [0.8, 0.2]
    np.testing.assert_allclose(predict_probabilities(model, faces),
                               expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    assert record["prior"] == {"happy": 0.8, "sad": 0.2} and record["training_images"] == 10
    assert record["validation_accuracy_before"] == pytest.approx(float(np.mean(before.argmax(axis=1) == labels)))


def test_only_balanced_training_restores_the_prior(uneven_data, tmp_path):
    quiet = lambda *a, **k: None  # noqa: E731
    for weighting in ("balanced", "none"):
        config = er.TrainConfig(data_dir=str(uneven_data), epochs=1, batch_size=8, seed=2, class_weighting=weighting)
        er.train(config, tmp_path / weighting, log=quiet)
    balanced = json.loads((tmp_path / "balanced" / "emotion_model.json").read_text())["training"]
    assert balanced["class_prior"]["prior"] == {"happy": 0.8, "sad": 0.2}
    assert balanced["class_weighting"] == "balanced", "how it was trained stays on record"
    plain = json.loads((tmp_path / "none" / "emotion_model.json").read_text())["training"]
    assert "class_prior" not in plain
