"""Tests written so that plausible bugs fail them: each names the mistake it catches (the fourth
round's mutation audit found these slipping through the other test files)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

import predict
from facial_emotion import boxes, detection, evaluation, finishing, shifts
from facial_emotion.boxes import Detection

from conftest import PROJECT_DIR


def test_gamma_darkens_the_mid_tones_by_its_exponent_not_its_inverse():
    face = np.full((1, 48, 48), 127.5, np.float32)
    assert shifts.apply_shift(face, "gamma_2")[0, 0, 0] == pytest.approx(255 * 0.5 ** 2, abs=0.01)


def test_rotation_is_in_degrees():
    face = np.zeros((48, 48), np.float32)
    face[23:25, 40:44] = 255  # a bright dash right of the centre, on the horizontal axis
    rotated = shifts.apply_shift(face[np.newaxis], "rotate_15")[0]
    rows, columns = np.indices(rotated.shape)
    weight = rotated / rotated.sum()
    dy, dx = (weight * rows).sum() - 23.5, (weight * columns).sum() - 23.5
    assert math.degrees(math.atan2(-dy, dx)) == pytest.approx(15, abs=2)  # counter-clockwise, as OpenCV's


def test_padding_adds_half_the_extra_side_on_each_side():
    face = np.zeros((48, 48), np.float32)
    face[19:29, 19:29] = 255
    padded = shifts.apply_shift(face[np.newaxis], "pad_120")[0]
    side = 48 + 2 * round(48 * 0.2 / 2)  # 58 px before being brought back to 48
    assert (padded > 127).sum() == pytest.approx((10 * 48 / side) ** 2, rel=0.1)


def test_training_draws_low_resolution_for_half_the_faces(monkeypatch):
    drawn = []
    monkeypatch.setattr(shifts, "shift_face", lambda plane, kind, magnitude, generator: drawn.append(kind) or plane)
    np.random.seed(0)
    for _ in range(4000):
        shifts.degrade_randomly(np.zeros((48, 48), np.float32))
    assert drawn.count("low_res") / 4000 == pytest.approx(0.5, abs=0.03)
    assert drawn.count("blur") / 4000 == pytest.approx(0.2, abs=0.03)


def test_precision_and_recall_are_not_swapped():
    # Class 0: 3 faces, 2 found, plus 2 faces of class 1 taken for it -> precision 2/4, recall 2/3.
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    predicted = np.array([0, 0, 1, 0, 0, 1, 1])
    metrics = evaluation.compute_metrics(["a", "b"], labels, np.eye(2)[predicted])
    assert metrics["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert metrics["per_class"]["a"]["recall"] == pytest.approx(2 / 3, abs=1e-4)


class Weights:
    def __init__(self, value):
        self.value = value

    def get_weights(self):
        return [np.full((2, 2), self.value, np.float32), np.array([self.value], np.float32)]


def test_a_soup_is_the_mean_of_every_member_not_of_the_first_and_last():
    kernel, bias = finishing.average_weights([Weights(1.0), Weights(2.0), Weights(6.0)])
    assert np.all(kernel == 3.0) and bias[0] == 3.0  # (1 + 2 + 6) / 3; first and last alone give 3.5


def test_crop_face_keeps_its_margin():
    picture = Image.fromarray(np.arange(200 * 200, dtype=np.uint32).reshape(200, 200).astype(np.uint8), "L")
    box = [50, 60, 80, 80]
    with_margin = detection.crop_face(picture, box, margin=0.25)
    expected = picture.crop((30, 40, 150, 160)).resize((48, 48), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(with_margin[..., 0], np.asarray(expected, np.float32))


def test_faces_come_largest_first_whatever_their_confidence():
    small_sure, large_unsure = Detection([0, 0, 30, 30], 0.99), Detection([50, 50, 90, 90], 0.71)
    assert boxes.largest_first([small_sure, large_unsure]) == [large_unsure, small_sure]


def test_the_json_names_each_annotated_copy(tmp_path, capsys):
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    assert predict.main([str(photo), "--annotate", str(tmp_path / "out"), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["annotated"] == str(tmp_path / "out" / "astronaut_annotated.jpg")
    with Image.open(tmp_path / "out" / "astronaut_annotated.jpg") as annotated:
        assert annotated.format == "JPEG" and annotated.size == (512, 512)


@pytest.fixture(scope="module")
def astronaut():
    from facial_emotion import blazeface

    rgb = np.asarray(Image.open(PROJECT_DIR / "tests" / "data" / "astronaut.jpg").convert("RGB"))
    return blazeface.BlazeFaceDetector(), rgb


def test_a_pass_brings_boxes_and_keypoints_back_by_its_scale(astronaut):
    from facial_emotion import blazeface

    detector, rgb = astronaut
    _, network_input = blazeface.to_network_input(rgb, 256, 256)
    plain, halved = detector.run_pass(network_input, 1.0, True), detector.run_pass(network_input, 2.0, True)
    assert len(plain[0]) > 0
    np.testing.assert_allclose(halved[0], plain[0] / 2, rtol=1e-6)
    np.testing.assert_allclose(halved[2], plain[2] / 2, rtol=1e-6)  # the keypoints too


def test_merge_drops_the_box_inside_the_better_one_not_the_outer_one():
    outer, inner = [100, 100, 100, 100], [130, 130, 30, 30]
    kept, scores, _ = boxes.merge(np.array([outer, inner], np.float32), np.array([0.9, 0.8], np.float32),
                                  np.zeros((2, 6, 2), np.float32))
    np.testing.assert_allclose(kept, [outer]) and np.testing.assert_allclose(scores, [0.9])


def test_the_second_look_mirrors_left_to_right(astronaut, monkeypatch):
    detector, rgb = astronaut
    [face] = detector.detect(rgb)
    seen = []
    run = detector.run_network

    def spy(network_input, anchors):
        seen.append(network_input.copy())
        return run(network_input, anchors)

    monkeypatch.setattr(detector, "run_network", spy)
    [score] = detector.look_again(rgb, np.array([face.box], float))
    [looks] = seen
    np.testing.assert_array_equal(looks[1], looks[0][:, ::-1])  # [128, 128, 3]: the width axis reversed
    assert score > 0.9  # a face and its mirror image both score as a face


def test_the_time_limit_counts_the_whole_run_not_the_epoch():
    import emotion_recognition as er

    class Stub:
        stop_training = False
        optimizer = type("Optimizer", (), {"learning_rate": 0.001})()

    report = er.EpochReport(64, time_limit_minutes=1, elapsed_before=61.0, log=lambda *a, **k: None)
    report.set_model(Stub())
    report.on_epoch_begin(0)
    report.on_epoch_end(0, {})  # a quick epoch, but the run as a whole has passed its minute
    assert report.model.stop_training


def test_a_run_records_the_precision_it_used_never_auto(trained_run):
    metadata = json.loads((trained_run["output"] / "emotion_model.json").read_text())
    assert metadata["training"]["precision"] in ("float32", "bfloat16")
    assert metadata["training"]["architecture"] == "default"


def test_the_onnx_check_compares_the_export_with_keras_and_refuses_a_different_one(trained_run, tmp_path, monkeypatch):
    from facial_emotion.errors import UserError
    from facial_emotion.saved_model import OnnxModel, load_model

    model, _ = load_model(trained_run["model"])
    faces = np.random.default_rng(0).uniform(0, 255, (16, 48, 48, 1)).astype(np.float32)
    target = tmp_path / "copy.h5"
    model.save(str(target))
    record = finishing.export_onnx(model, target, faces, log=lambda *a, **k: None)
    # The recorded difference is the one between Keras and the file written, measured here anew.
    exported = np.asarray(OnnxModel(target.with_suffix(".onnx"))(faces))
    assert record["max_probability_difference"] == pytest.approx(
        float(np.max(np.abs(np.asarray(model(faces)) - exported))), abs=1e-6)

    class Skewed(OnnxModel):  # an export that answers otherwise than the model it came from
        def __call__(self, batch, training=False):
            answers = super().__call__(batch)
            return np.roll(answers, 1, axis=1)

    monkeypatch.setattr(finishing, "OnnxModel", Skewed)
    with pytest.raises(UserError, match="differs from Keras"):
        finishing.export_onnx(model, tmp_path / "copy.h5", faces, log=lambda *a, **k: None)
