"""facial_emotion.evaluation: the robustness panel, the metrics and calibration, with stand-in
models whose right answers are known."""

from pathlib import Path

import numpy as np
import pytest

from facial_emotion import evaluation, shifts
from facial_emotion.images import load_face

SAMPLE = Path(__file__).resolve().parent.parent / "dataset" / "validation"


class Memory:
    """Knows the exact faces it was shown (the right class for each, certain); any other input, a
    shifted face, gets a hesitant class 0 (0.4 against 0.3 each). Counts its calls."""
    input_shape = (None, 48, 48, 1)

    def __init__(self, faces, labels, classes):
        self.known = {np.ascontiguousarray(face).tobytes(): label for face, label in zip(faces, labels)}
        self.output_shape, self.calls = (None, classes), 0

    def __call__(self, batch, training=False):
        self.calls += 1
        answers = np.full((len(batch), self.output_shape[1]), 0.3, dtype=np.float32)
        answers[:, 0] = 0.4
        for row, face in zip(answers, np.asarray(batch, dtype=np.float32)):
            label = self.known.get(np.ascontiguousarray(face).tobytes())
            if label is not None:
                row[:] = np.eye(len(row))[label]
        return answers


@pytest.fixture(scope="module")
def sample():
    paths = [path for name in ("angry", "happy", "sad") for path in sorted((SAMPLE / name).glob("*.jpg"))[:4]]
    return np.stack([load_face(path) for path in paths]), np.repeat([0, 1, 2], 4)


def test_the_panel_scores_the_faces_as_they_are_and_under_each_shift(sample):
    faces, labels = sample
    model = Memory(faces, labels, 3)
    panel = evaluation.robustness_panel(model, faces, labels)
    assert panel["accuracy"] == 1.0
    assert set(panel["shifts"]) == set(shifts.ROBUSTNESS_SHIFTS)
    # Shifted faces are unknown: only the class-0 third is still right.
    assert all(accuracy == pytest.approx(1 / 3, abs=1e-4) for accuracy in panel["shifts"].values())
    assert panel["mean_drop_points"] == pytest.approx(66.67, abs=0.01)
    assert model.calls == 1 + len(shifts.ROBUSTNESS_SHIFTS)
    assert evaluation.framing_of(panel) == {"crop_80": panel["shifts"]["crop_80"], "pad_120": panel["shifts"]["pad_120"]}
    line = evaluation.describe_panel(panel)
    assert line.startswith("robustness: mean drop 66.7 points") and "crop_80 0.333" in line


def test_accuracy_with_tta_averages_the_mirror_image(sample):
    faces, labels = sample
    model = Memory(faces[:, :, ::-1], labels, 3)  # knows only the mirror images
    assert evaluation.accuracy_of(model, faces, labels) == pytest.approx(1 / 3, abs=1e-4)
    # Averaged with the mirror image, which it knows, the right class wins (0.65 against 0.2).
    assert evaluation.accuracy_of(model, faces, labels, tta=True) == 1.0


def test_metrics_cover_the_classes_present():
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0]])
    metrics = evaluation.compute_metrics(["a", "b", "c"], labels, probabilities)
    assert metrics["accuracy"] == 0.6 and metrics["images"] == 5
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"]["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["per_class"]["c"]["support"] == 0
    # Macro-F1 over a and b only: class c, absent, does not count as a zero.
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-4)
    report = evaluation.text_report(["a", "b", "c"], labels, probabilities)
    assert " a " in report and " b " in report and " c " not in report


def test_a_calibrated_model_has_no_calibration_error_and_an_overconfident_one_is_repaired():
    rng = np.random.default_rng(0)
    confidence = np.full(2000, 0.75)
    labels = (rng.random(2000) > 0.75).astype(int)  # right 75% of the time when saying class 0
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(0.0, abs=0.03)
    sharp = np.stack([np.full(2000, 0.99), np.full(2000, 0.01)], axis=1)
    assert evaluation.expected_calibration_error(labels, sharp) > 0.2
    temperature = evaluation.fit_temperature(labels, sharp)
    assert temperature > 1
    from facial_emotion.saved_model import apply_temperature

    assert evaluation.expected_calibration_error(labels, apply_temperature(sharp, temperature)) < 0.03


class Halves:
    """Answers from the brightness of a face's left and right halves, overconfidently (so that a
    temperature above 1 calibrates it); a mirrored face gets other answers."""
    input_shape, output_shape = (None, 48, 48, 1), (None, 3)

    def __call__(self, batch, training=False):
        batch = np.asarray(batch, dtype=np.float64)
        left, right = batch[:, :, :24].mean(axis=(1, 2, 3)) / 255, batch[:, :, 24:].mean(axis=(1, 2, 3)) / 255
        logits = 200 * np.stack([left, right, 0.5 * np.ones_like(left)], axis=1)
        scores = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


def faces_and_labels(count, seed):
    """Faces of random halves, labelled by Halves' answer for 70% and at random for the rest."""
    rng = np.random.default_rng(seed)
    faces = np.concatenate([np.repeat(rng.uniform(0, 255, (count, 48, 1, 1)), 24, axis=2),
                            np.repeat(rng.uniform(0, 255, (count, 48, 1, 1)), 24, axis=2)], axis=2)
    faces = faces.astype(np.float32)
    labels = Halves()(faces).argmax(axis=1)
    noisy = rng.random(count) < 0.3
    labels[noisy] = rng.integers(0, 3, noisy.sum())
    return faces, labels


def test_validation_is_described_with_temperatures_fitted_on_validation_when_there_is_no_selection_set():
    from facial_emotion.saved_model import apply_temperature

    model, (faces, labels) = Halves(), faces_and_labels(300, 1)
    metadata, calibrated = evaluation.describe_on_validation(model, {"class_names": ["a", "b", "c"]}, faces, labels)
    raw, raw_tta = model(faces), (model(faces) + model(faces[:, :, ::-1])) / 2
    temperature = evaluation.fit_temperature(labels, raw)
    assert temperature > 1.2 and metadata["temperature"] == round(temperature, 4)
    assert metadata["temperature_tta"] == round(evaluation.fit_temperature(labels, raw_tta), 4)
    np.testing.assert_allclose(calibrated, apply_temperature(raw, temperature), rtol=1e-5)
    figures = metadata["validation"]
    assert figures["images"] == 300 and "selection" not in metadata
    assert figures["accuracy"] == round(float(np.mean(raw.argmax(axis=1) == labels)), 4)
    assert figures["per_class_recall"]["b"] == round(float(np.mean(raw.argmax(axis=1)[labels == 1] == 1)), 4)
    assert figures["ece_before_calibration"] == round(evaluation.expected_calibration_error(labels, raw), 4)
    assert figures["ece_after_calibration"] == round(evaluation.expected_calibration_error(labels, calibrated), 4)
    assert figures["ece_after_calibration"] < figures["ece_before_calibration"]
    assert figures["flip_tta"]["accuracy"] == round(float(np.mean(raw_tta.argmax(axis=1) == labels)), 4)
    assert figures["flip_tta"]["accuracy"] != figures["accuracy"]
    assert figures["flip_tta"]["ece_before_calibration"] == round(evaluation.expected_calibration_error(labels, raw_tta), 4)
    assert figures["robustness"]["accuracy"] == figures["accuracy"]
    assert figures["framing_accuracy"] == evaluation.framing_of(figures["robustness"])


def test_with_a_selection_set_the_temperatures_come_from_it_and_validation_is_only_measured():
    model = Halves()
    (faces, labels), (chosen_faces, chosen_labels) = faces_and_labels(300, 1), faces_and_labels(200, 2)
    given_panel = {"accuracy": 0.5, "shifts": {"crop_80": 0.1, "pad_120": 0.2}, "mean_drop_points": 1.0,
                   "worst_drop_points": 2.0, "worst_shift": "crop_80"}
    metadata, _ = evaluation.describe_on_validation(model, {"class_names": ["a", "b", "c"]}, faces, labels,
                                                    selection=(chosen_faces, chosen_labels), panel=given_panel)
    assert metadata["temperature"] == round(evaluation.fit_temperature(chosen_labels, model(chosen_faces)), 4)
    assert metadata["temperature"] != round(evaluation.fit_temperature(labels, model(faces)), 4)
    chosen_tta = (model(chosen_faces) + model(chosen_faces[:, :, ::-1])) / 2
    assert metadata["temperature_tta"] == round(evaluation.fit_temperature(chosen_labels, chosen_tta), 4)
    assert metadata["selection"]["images"] == 200 and metadata["validation"]["images"] == 300
    assert metadata["selection"]["robustness"] == given_panel  # the panel given is the selection set's
    assert metadata["validation"]["robustness"]["shifts"].keys() == shifts.ROBUSTNESS_SHIFTS.keys()
    raw = model(faces)
    assert metadata["validation"]["accuracy"] == round(float(np.mean(raw.argmax(axis=1) == labels)), 4)


PANEL = {"accuracy": 0.5, "shifts": {"crop_80": 0.1, "pad_120": 0.25, "blur_1": 0.4}, "mean_drop_points": 25.0,
         "worst_drop_points": 40.0, "worst_shift": "crop_80"}


def test_the_panel_s_line_and_its_record_in_metrics():
    assert evaluation.describe_panel(PANEL) == ("robustness: mean drop 25.0 points, worst 40.0 (crop_80); "
                                                "crop_80 0.100, pad_120 0.250, blur_1 0.400")
    assert evaluation.with_panel({"accuracy": 0.5, "images": 9}, PANEL) == {
        "accuracy": 0.5, "images": 9, "robustness": PANEL["shifts"], "robustness_mean_drop": 25.0,
        "robustness_worst_drop": 40.0, "robustness_worst_shift": "crop_80",
        "framing_accuracy": {"crop_80": 0.1, "pad_120": 0.25}}


def test_the_text_report_has_four_digits_and_only_the_classes_present():
    labels = np.array([0, 0, 1, 1])
    # Class c is predicted once but never present; class b is present but never predicted.
    probabilities = np.array([[0.9, 0.0, 0.1], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    report = evaluation.text_report(["a", "b", "c"], labels, probabilities)
    rows = {line.split()[0]: line.split()[1:] for line in report.splitlines() if line.split()[:1] in (["a"], ["b"])}
    assert rows["a"] == ["0.3333", "0.5000", "0.4000", "2"]
    assert rows["b"] == ["0.0000", "0.0000", "0.0000", "2"]  # no division by zero: 0, not 1
    assert " c " not in report


def test_figures_are_rounded_to_four_digits_and_points_to_two():
    summary = evaluation.robustness_summary(2 / 3, {"a": 1 / 3, "b": 1 / 7})
    assert summary == {"accuracy": 0.6667, "shifts": {"a": 0.3333, "b": 0.1429}, "mean_drop_points": 42.86,
                       "worst_drop_points": 52.38, "worst_shift": "b"}


def test_accuracy_and_the_panel_take_tta_when_asked(sample):
    faces, labels = sample
    model = Memory(faces[:, :, ::-1], labels, 3)  # knows only the mirror images
    assert evaluation.accuracy_of(model, faces, labels) == 0.3333
    panel = evaluation.robustness_panel(model, faces, labels, tta=True)
    assert panel["accuracy"] == 1.0


def test_metrics_of_a_class_predicted_but_absent_and_one_present_but_never_predicted():
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.eye(3)[[0, 0, 2, 0, 2]]  # b is never predicted; c is predicted, never present
    metrics = evaluation.compute_metrics(["a", "b", "c"], labels, probabilities)
    assert metrics["per_class"]["a"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "support": 3}
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["macro_f1"] == 0.3333  # over a and b, the classes present: c is not a third zero


def test_validation_s_record_has_its_named_fields():
    metadata, _ = evaluation.describe_on_validation(Halves(), {"class_names": ["a", "b", "c"]}, *faces_and_labels(60, 3))
    assert set(metadata["validation"]) == {"images", "accuracy", "macro_f1", "per_class_recall", "ece_before_calibration",
                                           "ece_after_calibration", "framing_accuracy", "robustness", "flip_tta"}
    assert set(metadata["validation"]["flip_tta"]) == {"accuracy", "macro_f1", "per_class_recall",
                                                       "ece_before_calibration", "ece_after_calibration"}
    assert set(metadata["validation"]["flip_tta"]["per_class_recall"]) == {"a", "b", "c"}


def ece_by_hand(labels, probabilities, bins=15):
    """ECE with bins (k/bins, (k+1)/bins], each weighted by its share of the faces."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return sum(np.mean(which == k) * abs(correct[which == k].mean() - confidence[which == k].mean())
               for k in range(bins) if np.any(which == k))


def test_calibration_error_bins_confidence_in_fifteen_equal_bins():
    # 0.55 (right) and 0.58 (wrong) share the bin (8/15, 9/15]; 0.95 (right, wrong) the last.
    probabilities = np.array([[0.55, 0.45], [0.42, 0.58], [0.95, 0.05], [0.05, 0.95]])
    labels = np.array([0, 0, 0, 0])
    expected = 0.5 * abs(0.5 - 0.565) + 0.5 * abs(0.5 - 0.95)
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(expected)
    rng = np.random.default_rng(5)
    confidence = np.concatenate([rng.uniform(0.34, 1.0, 300), np.linspace(0, 1, 16)[6:]])  # edges included
    probabilities = np.stack([confidence, (1 - confidence) / 2, (1 - confidence) / 2], axis=1)
    labels = np.where(rng.random(len(confidence)) < 0.7, 0, 1)
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(ece_by_hand(labels, probabilities))


def test_the_temperature_is_the_best_of_601_log_spaced_ones():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) > 0.8).astype(int)
    sharp = np.stack([np.full(500, 0.97), np.full(500, 0.03)], axis=1)
    from facial_emotion.saved_model import apply_temperature

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 601))
    errors = [evaluation.expected_calibration_error(labels, apply_temperature(sharp, float(t))) for t in grid]
    assert evaluation.fit_temperature(labels, sharp) == pytest.approx(grid[int(np.argmin(errors))], rel=1e-12)


def test_the_panel_under_tta_shifts_the_faces_and_then_averages_with_the_mirror():
    model, (faces, labels) = Halves(), faces_and_labels(40, 4)
    panel = evaluation.robustness_panel(model, faces, labels, tta=True)
    for name in ("crop_80", "shift_10", "rotate_15"):
        assert panel["shifts"][name] == evaluation.accuracy_of(model, shifts.apply_shift(faces, name), labels, tta=True)
    plain = evaluation.robustness_panel(model, faces, labels)
    assert plain["shifts"] != panel["shifts"]
