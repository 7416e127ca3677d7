"""The model the project ships recognises real faces: a broken or swapped model file fails here."""

import json

import pytest

import emotion_recognition as er
from conftest import SAMPLE_DIR
from facial_emotion.saved_model import onnx_path
from facial_emotion.shifts import ROBUSTNESS_SHIFTS

SHIPPED = er.DEFAULT_MODEL_PATH
# 350 real FER-2013 validation faces, 50 per class: chance is 1/7 = 14.3%. The shipped model
# names 65.7% of them right (`python emotion_recognition.py --evaluate models/emotion_model.h5
# --test-dir dataset/validation`); on 350 faces that has a standard error of 2.5 points, and the
# floor sits 4 of them below: a model a few points worse fails here, not only a broken one.
MIN_SAMPLE_ACCURACY = 0.55
# Each class's recall on its 50 faces, 4 standard errors below the shipped model's (angry 56%,
# disgust 70%, fear 42%, happy 92%, neutral 58%, sad 62%, surprise 80%): a model that lost or
# swapped a class fails.
MIN_CLASS_RECALL = {"angry": 0.28, "disgust": 0.44, "fear": 0.14, "happy": 0.77, "neutral": 0.30, "sad": 0.35,
                    "surprise": 0.57}

# The shipped model was made robust to the faces a detector finds: on the sample's faces blown
# down to 16 px it measures 54%, under a 1-px blur 64%, and it loses 2.2 points on average
# under the panel's shifts. A model trained on clean crops only (the one shipped before it) got
# 23%, 41% and 10.0 there: these bounds sit about 4 standard errors below the shipped model's.
MIN_SMALL_FACE_ACCURACY = 0.42   # low_res_16
MIN_BLURRED_ACCURACY = 0.52      # blur_1
MAX_MEAN_DROP_POINTS = 6.0

# Happy is the class FER-2013 models recognise best (the shipped model: 88% of validation's, 46
# of the sample's 50 taken whole by detect_emotion); 4 standard errors below is 38.
MIN_HAPPY_HITS = 38  # of the sample's 50 happy faces


def test_the_shipped_model_and_its_onnx_export_are_there():
    # A missing model fails here rather than silently skipping every claim below.
    for path in (SHIPPED, er.metadata_path(SHIPPED), onnx_path(SHIPPED)):
        assert path.is_file(), path


@pytest.fixture(scope="module")
def sample_metrics(tmp_path_factory):
    """The shipped model's evaluation on the sample's validation faces, with the robustness panel."""
    return er.evaluate(SHIPPED, SAMPLE_DIR / "validation", tmp_path_factory.mktemp("eval") / "eval",
                       log=lambda *a, **k: None)


def test_shipped_model_recognises_the_real_sample_faces(sample_metrics):
    metrics = sample_metrics
    assert metrics["images"] == 350
    assert metrics["accuracy"] >= MIN_SAMPLE_ACCURACY, metrics["accuracy"]
    for name, figures in metrics["per_class"].items():
        assert figures["recall"] >= MIN_CLASS_RECALL[name], (name, figures)


def test_shipped_model_keeps_recognising_small_and_blurred_faces(sample_metrics):
    metrics = sample_metrics
    shifted = metrics["robustness"]
    assert shifted["low_res_16"] >= MIN_SMALL_FACE_ACCURACY, shifted
    assert shifted["blur_1"] >= MIN_BLURRED_ACCURACY, shifted
    assert metrics["robustness_mean_drop"] <= MAX_MEAN_DROP_POINTS, metrics["robustness_mean_drop"]


def test_shipped_model_json_records_how_it_was_made():
    metadata = json.loads(er.metadata_path(SHIPPED).read_text())
    assert metadata["class_names"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert metadata["input_shape"] == [48, 48, 1]
    training = metadata["training"]
    for key in ("command", "tensorflow_version", "cpu_count"):
        assert key in training, key
    # A trained model records its epochs and minutes; an average of trained models (--average, as
    # the shipped one is) records each member's training and validation accuracy instead.
    members = training.get("averaged_from", [{"model": str(SHIPPED), "training": training}])
    for member in members:
        for key in ("command", "epochs_run", "wall_minutes"):
            assert key in member["training"], (member["model"], key)
        if "averaged_from" in training:
            assert 0.5 < member["validation_accuracy"] < 1, member["model"]
    validation = metadata["validation"]
    assert validation["images"] == 3589
    assert set(validation["per_class_recall"]) == set(metadata["class_names"])
    assert set(validation["framing_accuracy"]) == {"crop_80", "pad_120"}
    assert set(validation["robustness"]["shifts"]) == set(ROBUSTNESS_SHIFTS)
    # No machine's own folders: paths are relative to the project, or names only.
    assert "/work/" not in json.dumps(metadata) and '"/' not in json.dumps(metadata)


def test_shipped_model_is_small_enough():
    assert SHIPPED.stat().st_size <= 25 * 1024 * 1024


def test_detect_emotion_uses_the_shipped_model_by_default():
    faces = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())
    answers = [er.detect_emotion(face) for face in faces]
    assert sum(emotion == "happy" for emotion, _ in answers) >= MIN_HAPPY_HITS
    assert len({confidence for _, confidence in answers}) > 10, "confidences differ from face to face"
