"""Model building, saving with class names, loading checks, calibration maths."""

import json

import keras
import numpy as np
import pytest

import emotion_recognition as er
from facial_emotion import evaluation, saved_model, shifts
from facial_emotion.saved_model import apply_temperature, load_model


@pytest.mark.parametrize("architecture", er.ARCHITECTURES)
def test_build_model_maps_48x48_faces_to_class_probabilities(architecture):
    model = er.build_model(3, architecture)
    assert model.input_shape == (None, 48, 48, 1)
    assert model.output_shape == (None, 3)
    faces = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 1)).astype("float32")
    probabilities = np.asarray(model(faces, training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_default_model_is_sequential_with_rescaling_first():
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
    er.write_json_atomically({"class_names": ["b", "a", "c"]}, er.metadata_path(path))
    loaded, metadata = load_model(path)
    assert metadata["class_names"] == ["b", "a", "c"]
    faces = np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(faces)), np.asarray(model(faces)), atol=1e-5)
    assert not list(tmp_path.glob(".*partial*")), "no temporary file left behind"


def test_model_whose_outputs_differ_from_its_class_names_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    er.save_model_atomically(er.build_model(3), path)
    er.write_json_atomically({"class_names": ["a", "b"]}, er.metadata_path(path))
    with pytest.raises(er.UserError, match="has 3 outputs but m.json names 2 classes"):
        load_model(path)


def test_model_without_json_or_with_bad_bytes_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    er.save_model_atomically(er.build_model(2), path)
    with pytest.raises(er.UserError, match="no class-name file m.json"):
        load_model(path)
    er.metadata_path(path).write_text(json.dumps({"class_names": ["a", "b"]}))
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(er.UserError, match="not a loadable Keras model"):
        load_model(path)
    path.write_bytes(b"")
    with pytest.raises(er.UserError, match="empty model file"):
        load_model(path)


def test_temperature_softens_without_changing_the_ranking():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    softened = apply_temperature(probabilities, 2.0)
    np.testing.assert_allclose(softened.sum(axis=1), 1.0)
    assert (softened.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (softened.max(axis=1) < probabilities.max(axis=1)).all()
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities)


def test_expected_calibration_error():
    labels = np.array([0, 0, 1, 1])
    # Says 100% and is right every time: perfectly calibrated.
    assert evaluation.expected_calibration_error(labels, np.eye(2)[labels]) == pytest.approx(0.0)
    # Says 90% and is right half the time: 0.4 off.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.9, 0.1]])
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(0.4)


def test_balanced_sample_weights_travel_with_their_faces_and_make_every_class_weigh_the_same():
    from sklearn.utils.class_weight import compute_sample_weight

    # 9 faces of class 0 and 3 of class 1, each face's pixels its own index: the batches show
    # which face came with which label and weight.
    labels = np.array([0] * 9 + [1] * 3)
    faces = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None, None], (12, 48, 48, 1)).copy()
    weights = compute_sample_weight("balanced", labels).astype(np.float32)  # what train_in_folder passes
    batches = er.augmented_batches(faces, labels, weights, batch_size=4, seed=0, augment=False)
    seen, totals = [], np.zeros(2)
    for _ in range(3):  # one epoch
        batch_x, batch_y, batch_w = next(batches)
        index = batch_x[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(batch_y, labels[index])
        np.testing.assert_array_equal(batch_w, weights[index])
        np.add.at(totals, batch_y, batch_w)
        seen += index.tolist()
    assert sorted(seen) == list(range(12)), "every face once an epoch"
    assert totals[0] == pytest.approx(totals[1]), "each class weighs the same in an epoch's loss"


def test_fitted_temperature_repairs_overconfidence():
    # A classifier that is right 60% of the time but always says 95%.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    predicted = np.where(rng.random(3000) < 0.6, labels, (labels + rng.integers(1, 3, 3000)) % 3)
    probabilities = np.full((3000, 3), 0.025)
    probabilities[np.arange(3000), predicted] = 0.95
    temperature = evaluation.fit_temperature(labels, probabilities)
    assert temperature > 1.5
    before = evaluation.expected_calibration_error(labels, probabilities)
    after = evaluation.expected_calibration_error(labels, apply_temperature(probabilities, temperature))
    assert before > 0.3 and after < 0.03


def test_training_records_the_figures_evaluation_measures(trained_run, tmp_path):
    metadata = json.loads((trained_run["output"] / "emotion_model.json").read_text())
    figures = metadata["validation"]
    assert set(figures["per_class_recall"]) == {"happy", "sad"} and figures["images"] == 8
    for tta, recorded in ((False, figures), (True, figures["flip_tta"])):
        measured = er.evaluate(trained_run["model"], trained_run["data"] / "validation", tmp_path / f"eval{tta}",
                               tta=tta, log=lambda *a, **k: None)
        assert measured["accuracy"] == recorded["accuracy"]
        assert measured["expected_calibration_error"] == recorded["ece_after_calibration"]
    assert measured["framing_accuracy"].keys() == figures["framing_accuracy"].keys() == {"crop_80", "pad_120"}


class MirrorShy:
    """A stand-in model, right on 60% of faces: 95% sure of a face as it is, 60% sure of its
    mirror image (faces here are bright on the left), so averaged answers are far less extreme."""

    output_shape = (None, 2)

    def __init__(self, answers):
        self.answers = answers

    def __call__(self, batch, training=False):
        as_is = batch[:, :, :24].mean(axis=(1, 2, 3)) > batch[:, :, 24:].mean(axis=(1, 2, 3))
        sure = np.where(as_is, 0.95, 0.6)[:, None]
        chosen = np.eye(2)[self.answers[: len(batch)]]
        return chosen * sure + (1 - chosen) * (1 - sure)


def test_flip_tta_answers_get_a_temperature_of_their_own(tmp_path):
    rng = np.random.default_rng(0)
    # One prediction batch: the stand-in answers by position within a batch.
    count = saved_model.PREDICT_BATCH_SIZE
    faces = np.zeros((count, 48, 48, 1), np.float32)
    faces[:, :, :24] = 200
    labels = rng.integers(0, 2, count)
    answers = np.where(rng.random(count) < 0.6, labels, 1 - labels)
    metadata, probabilities = evaluation.describe_on_validation(MirrorShy(answers), {"class_names": ["a", "b"]}, faces, labels)
    assert not list(tmp_path.iterdir()), "describing writes no file"
    assert metadata["temperature"] > 1.5, "95% sure and 60% right: softened"
    assert metadata["temperature_tta"] < metadata["temperature"]
    assert metadata["validation"]["ece_after_calibration"] < 0.03
    assert metadata["validation"]["flip_tta"]["ece_after_calibration"] < 0.03
    assert saved_model.model_temperature(metadata, tta=True) == metadata["temperature_tta"]
    # The probabilities returned are the plain answers under the fitted temperature.
    raw = saved_model.predict_probabilities(MirrorShy(answers), faces)
    np.testing.assert_allclose(probabilities, apply_temperature(raw, metadata["temperature"]), rtol=1e-3, atol=1e-4)


def test_reframing_crops_the_centre_or_pads_with_the_edges():
    face = np.zeros((1, 48, 48, 1), np.float32)
    face[0, 4:44, 4:44] = 255  # a bright square with a 4-pixel dark border
    cropped = shifts.apply_shift(face, "crop_80")  # the centre 38 pixels: all bright
    assert cropped.shape == face.shape and cropped.min() == 255
    padded = shifts.apply_shift(face, "pad_120")  # 5 edge pixels repeated on each side: the border widens
    assert padded.shape == face.shape
    assert padded[0, :5].max() == 0 and padded[0, 24, 24] == 255
    assert padded[0, 6, 24] == 0 < shifts.shift_face(face[0, :, :, 0], "scale", 1.0)[6, 24] == 255


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
    ("wide", (32, 32, 64, 64, 128, 128, 256, 256), (0.0, 0.1, 0.15, 0.2, 0.4))])
def test_architectures_have_the_filters_and_dropout_the_help_names(architecture, filters, rates):
    model = er.build_model(7, architecture)
    assert tuple(layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)) == filters
    assert tuple(layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)) == rates
