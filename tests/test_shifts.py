"""facial_emotion.shifts: the robustness panel's fixed shifts and training's random ones."""

from pathlib import Path

import numpy as np
import pytest

from facial_emotion import evaluation, shifts
from facial_emotion.images import load_face

SAMPLE = Path(__file__).resolve().parent.parent / "dataset" / "validation"


@pytest.fixture(scope="module")
def faces():
    """Eight real FER-2013 faces [8, 48, 48, 1], float32 0..255."""
    paths = [sorted((SAMPLE / name).glob("*.jpg"))[0] for name in ("angry", "fear", "happy", "sad")]
    paths += [sorted((SAMPLE / name).glob("*.jpg"))[1] for name in ("neutral", "surprise", "disgust", "happy")]
    return np.stack([load_face(path) for path in paths])


@pytest.mark.parametrize("condition", shifts.ROBUSTNESS_SHIFTS)
def test_each_panel_shift_changes_the_face_and_keeps_its_form(faces, condition):
    shifted = shifts.apply_shift(faces, condition)
    assert shifted.shape == faces.shape and shifted.dtype == np.float32
    assert shifted.min() >= 0 and shifted.max() <= 255
    change = np.abs(shifted - faces).mean(axis=(1, 2, 3))
    assert np.all(change > 0.5), f"{condition} left a face (nearly) as it was: {change}"
    planes = shifts.apply_shift(faces[..., 0], condition)  # without the channel axis
    assert planes.shape == faces.shape[:3]
    np.testing.assert_array_equal(planes, shifted[..., 0])


def test_panel_shifts_are_deterministic(faces):
    for condition in shifts.ROBUSTNESS_SHIFTS:
        np.testing.assert_array_equal(shifts.apply_shift(faces, condition), shifts.apply_shift(faces, condition))


def test_crop_80_keeps_the_centre_and_pad_120_shrinks_it():
    face = np.zeros((48, 48), dtype=np.float32)
    face[19:29, 19:29] = 255  # a 10 px bright square in the middle
    def centre_and_area(image):
        weight = image / image.sum()
        rows, columns = np.indices(image.shape)
        return (weight * rows).sum(), (weight * columns).sum(), (image > 127).sum()

    row, column, area = centre_and_area(shifts.apply_shift(face[np.newaxis], "crop_80")[0])
    assert row == pytest.approx(23.5, abs=0.6) and column == pytest.approx(23.5, abs=0.6)
    assert area == pytest.approx(100 / 0.8 ** 2, rel=0.2)  # the square blown up with the crop
    row, column, area = centre_and_area(shifts.apply_shift(face[np.newaxis], "pad_120")[0])
    assert row == pytest.approx(23.5, abs=0.6) and column == pytest.approx(23.5, abs=0.6)
    assert area == pytest.approx(100 / 1.2 ** 2, rel=0.25)
    row, column, _ = centre_and_area(shifts.apply_shift(face[np.newaxis], "shift_10")[0])
    assert row == pytest.approx(23.5 + 4.8, abs=0.6) and column == pytest.approx(23.5 + 4.8, abs=0.6)


def test_low_res_16_removes_high_frequencies():
    checkerboard = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.float32)
    smooth = np.tile(np.linspace(0, 255, 48, dtype=np.float32), (48, 1))
    out = shifts.apply_shift(np.stack([checkerboard, smooth]), "low_res_16")
    assert checkerboard.std() > 120 and out[0].std() < 10  # the 1 px pattern is gone
    assert np.abs(out[1] - smooth).mean() < 3  # a slow ramp survives


def test_degrade_randomly_repeats_with_the_seed_and_spares_the_share_its_probabilities_say(faces):
    face = faces[2]
    np.random.seed(7)
    first = [shifts.degrade_randomly(face) for _ in range(50)]
    np.random.seed(7)
    second = [shifts.degrade_randomly(face) for _ in range(50)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert first[0].shape == face.shape and first[0].dtype == np.float32
    np.random.seed(8)
    draws = 2000
    unchanged = sum(np.array_equal(shifts.degrade_randomly(face), face) for _ in range(draws))
    expected = np.prod([1 - probability for probability, _ in shifts.RANDOM_SHIFTS.values()])
    assert unchanged / draws == pytest.approx(expected, abs=0.04)
    assert not all(np.array_equal(a, first[0]) for a in first[1:]), "the draws differ from one another"


def test_robustness_summary_arithmetic():
    summary = evaluation.robustness_summary(0.8, {"a": 0.7, "b": 0.5, "c": 0.8, "d": 0.85})
    assert summary["accuracy"] == 0.8
    assert summary["shifts"] == {"a": 0.7, "b": 0.5, "c": 0.8, "d": 0.85}
    assert summary["mean_drop_points"] == pytest.approx(100 * (0.1 + 0.3 + 0.0 - 0.05) / 4, abs=0.01)
    assert summary["worst_drop_points"] == pytest.approx(30.0, abs=0.01)
    assert summary["worst_shift"] == "b"
