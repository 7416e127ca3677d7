"""Batch-norm statistics recomputed on un-augmented training faces after training."""

import keras
import numpy as np
import pytest

from facial_emotion import finishing
from facial_emotion.images import INPUT_SHAPE
from facial_emotion.saved_model import predict_probabilities


def faces(count, seed=0):
    rng = np.random.default_rng(seed)
    # Pixel values like the real faces': 0-255, with a per-image brightness so batches differ.
    return (rng.uniform(0, 255, (count, 48, 48, 1)) * rng.uniform(0.3, 1.0, (count, 1, 1, 1))).astype(np.float32)


def batch_norm_model():
    return keras.Sequential([keras.Input(INPUT_SHAPE), keras.layers.BatchNormalization(momentum=0.9),
                             keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax")])


def test_recomputed_statistics_are_those_of_the_faces():
    model, x = batch_norm_model(), faces(600)  # 600: the last batch of 256 is short
    norm = model.layers[0]
    finishing.recompute_batch_norm_statistics(model, x, batch_size=256)
    assert float(np.asarray(norm.moving_mean)[0]) == pytest.approx(float(x.mean()), rel=1e-4)
    # The average of within-batch variances: the population's within a percent for batches of 256.
    assert float(np.asarray(norm.moving_variance)[0]) == pytest.approx(float(x.var()), rel=0.01)
    assert norm.momentum == 0.9, "the layer's own momentum is put back"


def test_statistics_that_lower_validation_accuracy_are_discarded():
    keras.utils.set_random_seed(0)
    model, x_val = batch_norm_model(), faces(40, seed=1)
    # Labels the model gets all right; both classes occur (a fact of seed 0, checked here).
    y_val = predict_probabilities(model, x_val).argmax(axis=1)
    assert set(y_val) == {0, 1}
    before = [np.asarray(w).copy() for w in model.get_weights()]
    # "Training faces" of one huge constant value: every face then looks alike to the model, which
    # answers one class for all of them.
    record, kept_panel = finishing.refresh_batch_norm(model, np.full((64, 48, 48, 1), 1e7, np.float32), x_val, y_val,
                                                      log=lambda *a, **k: None)
    assert kept_panel["accuracy"] == 1.0  # the panel of the statistics kept: the training-time ones
    assert record["validation_accuracy_before"] == 1.0 and record["validation_accuracy_after"] < 1.0
    assert record["kept"] is False
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.get_weights()))


def panel(plain, shifted):
    return {"accuracy": plain, "shifts": dict(zip(("crop", "blur", "low_res"), shifted))}


# Before recomputing: 0.6 plain and 0.5 on average under the shifts (0.3, 0.5, 0.7). After, the
# case's. The mean decides, not the worst shift nor the first: (0.2, 0.75, 0.7) averages 0.55.
@pytest.mark.parametrize("plain_after, shifted_after, kept", [
    (0.7, (0.2, 0.75, 0.7), True),    # both rise, though one shift falls
    (0.6, (0.3, 0.5, 0.8), True),     # plain ties, the shifts' mean rises
    (0.7, (0.3, 0.5, 0.7), True),     # plain rises, the shifts' mean ties
    (0.7, (0.6, 0.5, 0.2), False),    # plain rises, the shifts' mean falls to 0.4333
    (0.5, (0.6, 0.6, 0.6), False),    # the shifts' mean rises, plain falls
])
def test_statistics_are_kept_only_if_neither_plain_nor_shifted_accuracy_drops(monkeypatch, plain_after,
                                                                               shifted_after, kept):
    """A model trained on shifted faces can gain plain accuracy from clean statistics and lose more
    under the panel's shifts: those statistics are discarded too."""
    keras.utils.set_random_seed(0)
    model, x_val = batch_norm_model(), faces(8, seed=1)
    made = [panel(0.6, (0.3, 0.5, 0.7)), panel(plain_after, shifted_after)]
    panels = iter(made)
    monkeypatch.setattr(finishing, "robustness_panel", lambda *args, **kwargs: next(panels))
    monkeypatch.setattr(finishing, "recompute_batch_norm_statistics",
                        lambda model, faces: model.layers[0].moving_mean.assign(np.full((1,), 7.0, np.float32)))
    record, kept_panel = finishing.refresh_batch_norm(model, faces(16), x_val, np.zeros(8, int),
                                                      log=lambda *a, **k: None)
    assert record["kept"] is kept
    assert kept_panel is made[1 if kept else 0]
    assert record["validation_accuracy_after"] == plain_after
    assert (record["mean_shifted_accuracy_before"], record["mean_shifted_accuracy_after"]) == (
        0.5, round(sum(shifted_after) / 3, 4))
    assert (float(np.asarray(model.layers[0].moving_mean)[0]) == 7.0) is kept
