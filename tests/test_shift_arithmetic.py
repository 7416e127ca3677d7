"""Each shift's arithmetic on faces whose answer is known by hand, and how training draws them:
which shifts in which order, from which ranges, gamma's log-uniform exponent."""

import numpy as np
import pytest

from facial_emotion import shifts
from facial_emotion.shifts import shift_face


def ramp():
    """A face whose columns run 0, 5, 10, ... 235."""
    return np.tile(np.arange(48, dtype=np.float32) * 5, (48, 1))


def test_brightness_multiplies_and_contrast_scales_around_the_mean():
    face = np.full((48, 48), 100.0, np.float32)
    face[:, 24:] = 200.0
    np.testing.assert_allclose(shift_face(face, "brightness", 0.5), face * 0.5)
    contrast = shift_face(face, "contrast", 0.5)
    np.testing.assert_allclose(contrast[:, :24], 125.0)
    np.testing.assert_allclose(contrast[:, 24:], 175.0)


def test_gamma_raises_each_pixel_s_share_of_255_to_the_exponent():
    face = np.array([[0.0, 51.0, 127.5, 255.0]] * 48, np.float32)
    np.testing.assert_allclose(shift_face(face, "gamma", 2.0)[0], [0.0, 10.2, 63.75, 255.0], atol=1e-3)


def test_results_are_clipped_to_0_255_as_float32():
    face = np.full((48, 48), 200.0, np.float32)
    bright = shift_face(face, "brightness", 1.5)
    assert bright.dtype == np.float32 and bright.max() == 255.0
    assert shift_face(face - 200.0, "brightness", -1.0).min() == 0.0


def test_shift_moves_the_face_right_and_down_by_its_share_of_the_side():
    moved = shift_face(ramp(), "shift", 0.1)  # 4.8 px
    np.testing.assert_allclose(moved[10, 10:40], (np.arange(10, 40) - 4.8) * 5, atol=0.1)  # OpenCV warps in 1/32 px steps
    face = np.zeros((48, 48), np.float32)
    face[10, 20] = 255.0
    assert np.unravel_index(shift_face(face, "shift", 0.125).argmax(), (48, 48)) == (16, 26)


def test_blur_spreads_a_point_by_its_sigma():
    face = np.zeros((48, 48), np.float32)
    face[24, 24] = 255.0
    for sigma in (1.0, 1.6):
        row = shift_face(face, "blur", sigma)[24].astype(np.float64)
        offsets = np.arange(48) - 24
        spread = np.sqrt((row * offsets ** 2).sum() / row.sum())
        assert spread == pytest.approx(sigma, rel=0.1)


def test_noise_adds_zero_mean_noise_of_its_sigma_and_uses_the_generator_given():
    face = np.full((48, 48), 128.0, np.float32)
    noisy = shift_face(face, "noise", 10.0, np.random.default_rng(1))
    assert (noisy - face).mean() == pytest.approx(0.0, abs=0.6)
    assert (noisy - face).std() == pytest.approx(10.0, rel=0.06)
    np.testing.assert_array_equal(noisy, shift_face(face, "noise", 10.0, np.random.default_rng(1)))
    assert not np.array_equal(shift_face(face, "noise", 10.0), shift_face(face, "noise", 10.0))  # fresh each time


def test_jpeg_loses_more_at_lower_quality_and_low_res_keeps_a_flat_face():
    rng = np.random.default_rng(0)
    face = np.clip(ramp() + rng.normal(0, 20, (48, 48)), 0, 255).astype(np.float32)
    error = {quality: np.abs(shift_face(face, "jpeg", quality) - face).mean() for quality in (8, 15, 60, 95)}
    assert error[8] > error[15] > error[60] > error[95]
    flat = np.full((48, 48), 77.0, np.float32)
    np.testing.assert_allclose(shift_face(flat, "low_res", 16), flat, atol=1e-3)


def test_an_unknown_shift_is_named():
    with pytest.raises(ValueError, match="unknown shift 'warp'"):
        shift_face(np.zeros((48, 48)), "warp", 1.0)


def test_an_empty_batch_keeps_its_shape():
    assert shifts.apply_shift(np.zeros((0, 48, 48, 1), np.float32), "blur_1").shape == (0, 48, 48, 1)
    assert shifts.apply_shift(np.zeros((0, 48, 48), np.float32), "noise_10").shape == (0, 48, 48)


def draws(monkeypatch, shift_table, count, seed=3):
    """[(kind, magnitude)] of every shift degrade_randomly applies to `count` faces."""
    applied = []

    def record(face, kind, magnitude, generator=None):
        applied.append((kind, magnitude))
        return face

    monkeypatch.setattr(shifts, "shift_face", record)
    np.random.seed(seed)
    for _ in range(count):
        shifts.degrade_randomly(np.zeros((48, 48, 1), np.float32), shift_table)
    return applied


def test_training_applies_the_shifts_in_the_table_s_order_and_each_magnitude_within_its_range(monkeypatch):
    applied = draws(monkeypatch, shifts.RANDOM_SHIFTS, 300)
    order = list(shifts.RANDOM_SHIFTS)
    kinds = [kind for kind, _ in applied]
    for kind, (probability, (low, high)) in shifts.RANDOM_SHIFTS.items():
        magnitudes = [magnitude for name, magnitude in applied if name == kind]
        assert len(magnitudes) / 300 == pytest.approx(probability, abs=0.08)
        assert low <= min(magnitudes) and max(magnitudes) <= high
        assert max(magnitudes) - min(magnitudes) > 0.6 * (high - low)  # the whole range is drawn
    positions = [order.index(kind) for kind in kinds]
    runs = np.split(positions, np.flatnonzero(np.diff(positions) <= 0) + 1)
    assert all(list(run) == sorted(run) for run in runs)  # within a face, the table's order


def test_a_probability_of_one_always_applies_and_of_zero_never(monkeypatch):
    table = {"blur": (1.0, (1.0, 1.0)), "noise": (0.0, (5.0, 5.0))}
    assert draws(monkeypatch, table, 20) == [("blur", 1.0)] * 20


def test_gamma_s_exponent_is_drawn_log_uniform_so_darker_and_lighter_are_alike(monkeypatch):
    exponents = np.array([magnitude for _, magnitude in draws(monkeypatch, {"gamma": (1.0, (0.5, 2.0))}, 2000)])
    assert np.median(exponents) == pytest.approx(1.0, abs=0.06)  # uniform would give 1.25
    assert np.mean(exponents < 1) == pytest.approx(0.5, abs=0.04)


def test_training_s_shifts_keep_a_face_s_form_and_give_float32_even_when_none_is_drawn():
    none_drawn = {"blur": (0.0, (1.0, 1.0))}
    always = {"brightness": (1.0, (0.5, 0.5))}
    for shape in ((48, 48), (48, 48, 1)):
        face = np.full(shape, 100, np.uint8)
        for table in (none_drawn, always):
            out = shifts.degrade_randomly(face, table)
            assert out.shape == shape and out.dtype == np.float32
        np.testing.assert_array_equal(shifts.degrade_randomly(face, always), np.full(shape, 50.0))


def halves(left=50.0, right=200.0):
    face = np.full((48, 48), left, np.float32)
    face[:, 24:] = right
    return face


def test_framing_resizes_bilinearly_and_pads_with_the_edge_pixels():
    cropped = shift_face(halves(), "scale", 0.8)
    assert cropped.min() >= 50 and cropped.max() <= 200  # no bicubic overshoot at the step
    assert 50 < cropped[0, 23] < 200 or 50 < cropped[0, 24] < 200  # but a blend across it
    padded = shift_face(np.full((48, 48), 200.0, np.float32), "scale", 1.2)
    np.testing.assert_array_equal(padded, 200.0)  # edge pixels, not black, around the face
    np.testing.assert_array_equal(shift_face(np.zeros((48, 48), np.float32), "scale", 0.8), 0.0)


def test_padding_to_120_percent_adds_a_tenth_of_the_side_on_each_side():
    # 5 px each side: the ramp's 48 columns span 58, so the slope grows by 58/48.
    padded = shift_face(ramp(), "scale", 1.2)
    assert np.diff(padded[24, 10:38]).mean() == pytest.approx(5 * 58 / 48, abs=0.1)


def test_moving_and_blurring_repeat_the_edge_pixels():
    np.testing.assert_array_equal(shift_face(np.full((48, 48), 200.0, np.float32), "shift", 0.1), 200.0)
    face = np.zeros((48, 48), np.float32)
    face[:, 0] = 255.0
    assert shift_face(face, "blur", 1.0)[:, 0].min() > 150  # beyond the edge is 255 again, not a mirror of 0


def test_blur_spreads_a_point_down_as_far_as_across():
    face = np.zeros((48, 48), np.float32)
    face[24, 24] = 255.0
    blurred = shift_face(face, "blur", 1.0)
    np.testing.assert_allclose(blurred[:, 24], blurred[24, :], atol=1e-4)


def test_rotation_turns_about_the_face_s_centre():
    face = np.zeros((48, 48), np.float32)
    face[14:34, 14:34] = 255.0  # a square centred on (23.5, 23.5)
    turned = shift_face(face, "rotate", 90.0)
    assert np.abs(turned - face).max() < 1.0


def test_jpeg_at_full_quality_keeps_black_black():
    np.testing.assert_array_equal(shift_face(np.full((48, 48), -0.4, np.float32), "jpeg", 100), 0.0)


@pytest.mark.parametrize("kind, magnitude", [("shift", 0.1), ("rotate", 15.0), ("scale", 1.2), ("blur", 1.0)])
def test_integer_faces_are_shifted_as_floats(kind, magnitude):
    face = np.clip(ramp() + np.arange(48)[:, np.newaxis], 0, 255)
    as_float = shift_face(face.astype(np.float32), kind, magnitude)
    np.testing.assert_allclose(shift_face(face.astype(np.uint8), kind, magnitude), as_float, atol=1e-3)
    np.testing.assert_allclose(shifts.apply_shift(face.astype(np.uint8)[np.newaxis], "shift_10")[0],
                               shift_face(face.astype(np.float32), "shift", 0.1), atol=1e-3)
