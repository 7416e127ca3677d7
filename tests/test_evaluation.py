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
