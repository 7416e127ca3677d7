"""Model building, saving with class names, loading checks, calibration maths."""

import json

import numpy as np
import pytest

import emotion_recognition as er


@pytest.mark.parametrize("architecture", er.ARCHITECTURES)
def test_build_model_maps_48x48_faces_to_class_probabilities(architecture):
    model = er.build_model(3, architecture)
    assert model.input_shape == (None, 48, 48, 1)
    assert model.output_shape == (None, 3)
    faces = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 1)).astype("float32")
    probabilities = np.asarray(model(faces, training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_default_model_is_sequential_with_rescaling_first():
    keras = er.import_keras()
    model = er.build_model(7)
    assert isinstance(model, keras.Sequential)
    assert isinstance(model.layers[0], keras.layers.Rescaling)
    assert model.layers[0].scale == pytest.approx(1 / 255)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    deep_convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-2:]
    assert all(layer.kernel_regularizer is not None for layer in deep_convolutions)


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(er.UserError, match="unknown architecture"):
        er.build_model(7, "resnet")


def test_class_names_round_trip_through_the_saved_model(tmp_path):
    model = er.build_model(3)
    path = tmp_path / "m.h5"
    er.save_model_atomically(model, path)
    er.write_json_atomically(er.make_metadata(["b", "a", "c"], {}), er.metadata_path(path))
    loaded, metadata = er.load_model_bundle(path)
    assert metadata["class_names"] == ["b", "a", "c"]
    faces = np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(faces)), np.asarray(model(faces)), atol=1e-5)
    assert not list(tmp_path.glob(".*partial*")), "no temporary file left behind"


def test_model_whose_outputs_differ_from_its_class_names_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    er.save_model_atomically(er.build_model(3), path)
    er.write_json_atomically({"class_names": ["a", "b"]}, er.metadata_path(path))
    with pytest.raises(er.UserError, match="has 3 outputs but m.json names 2 classes"):
        er.load_model_bundle(path)


def test_model_without_json_or_with_bad_bytes_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    er.save_model_atomically(er.build_model(2), path)
    with pytest.raises(er.UserError, match="no class-name file m.json"):
        er.load_model_bundle(path)
    er.metadata_path(path).write_text(json.dumps({"class_names": ["a", "b"]}))
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(er.UserError, match="not a loadable Keras model"):
        er.load_model_bundle(path)
    path.write_bytes(b"")
    with pytest.raises(er.UserError, match="empty model file"):
        er.load_model_bundle(path)


def test_temperature_softens_without_changing_the_ranking():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    softened = er.apply_temperature(probabilities, 2.0)
    np.testing.assert_allclose(softened.sum(axis=1), 1.0)
    assert (softened.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (softened.max(axis=1) < probabilities.max(axis=1)).all()
    np.testing.assert_allclose(er.apply_temperature(probabilities, 1.0), probabilities)


def test_expected_calibration_error():
    labels = np.array([0, 0, 1, 1])
    # Says 100% and is right every time: perfectly calibrated.
    assert er.expected_calibration_error(labels, np.eye(2)[labels]) == pytest.approx(0.0)
    # Says 90% and is right half the time: 0.4 off.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.9, 0.1]])
    assert er.expected_calibration_error(labels, probabilities) == pytest.approx(0.4)


def test_balanced_sample_weights_make_every_class_weigh_the_same():
    labels = np.array([0] * 90 + [1] * 10)
    weights = er.balanced_sample_weights(labels, 2)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())


def test_fitted_temperature_repairs_overconfidence():
    # A classifier that is right 60% of the time but always says 95%.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    predicted = np.where(rng.random(3000) < 0.6, labels, (labels + rng.integers(1, 3, 3000)) % 3)
    probabilities = np.full((3000, 3), 0.025)
    probabilities[np.arange(3000), predicted] = 0.95
    temperature = er.fit_temperature(labels, probabilities)
    assert temperature > 1.5
    before = er.expected_calibration_error(labels, probabilities)
    after = er.expected_calibration_error(labels, er.apply_temperature(probabilities, temperature))
    assert before > 0.3 and after < 0.03


def test_training_records_calibration_and_tta_figures(trained_run):
    metadata = json.loads((trained_run["output"] / "emotion_model.json").read_text())
    figures = metadata["validation"]
    assert metadata["temperature"] > 0
    assert {"accuracy", "macro_f1", "per_class_recall", "ece_before_calibration", "ece_after_calibration",
            "flip_tta"} <= set(figures)
    assert set(figures["per_class_recall"]) == {"happy", "sad"}
    assert figures["images"] == 8


def test_json_files_are_readable_by_others_like_any_new_file(tmp_path):
    import os
    import stat

    path = tmp_path / "m.json"
    er.write_json_atomically({"class_names": ["a"]}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("architecture, filters, rates", [
    ("default", (16, 32, 32, 96, 96, 192, 192), (0.0, 0.0, 0.05, 0.1, 0.25)),
    ("narrow", (16, 16, 32, 32, 64, 64, 128, 128), (0.0, 0.1, 0.15, 0.2, 0.4)),
    ("wide", (32, 32, 64, 64, 128, 128, 256, 256), (0.0, 0.1, 0.15, 0.2, 0.4))])
def test_vgg_architectures_have_the_filters_and_dropout_the_readme_names(architecture, filters, rates):
    keras = er.import_keras()
    model = er.build_model(7, architecture)
    assert tuple(layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)) == filters
    assert tuple(layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)) == rates
