"""What training really feeds Keras, checked without training a model to the end: the augmented
batches and their resume, the class weights, the learning rate, its schedule and the time limit.

The command-line tests run emotion_recognition.main on a few real faces with keras.Model.fit
wrapped: the wrapper records what fit was given (and, for the schedule and the time limit, runs
the real fit), then stops the run as Ctrl-C would, before the finishing steps."""

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import emotion_recognition as er

SAMPLE = Path(__file__).resolve().parent.parent / "dataset"


def make_data(root, counts=(("happy", 8), ("sad", 8)), validation=4):
    """root/train/<class> with `counts` real faces each, root/validation/<class> with `validation`."""
    for split, source in (("train", "train"), ("validation", "validation")):
        for name, count in counts:
            target = root / split / name
            target.mkdir(parents=True)
            for path in sorted((SAMPLE / source / name).iterdir())[:count if split == "train" else validation]:
                shutil.copy(path, target / path.name)
    return root


@pytest.fixture(scope="module")
def faces():
    """20 real faces with labels 0..19: each batch's labels say which faces it holds."""
    paths = sorted((SAMPLE / "train" / "neutral").iterdir())[:20]
    x = np.stack([er.load_face(path) for path in paths])
    return x, np.arange(len(x))


def epochs_of(generator, count, steps):
    return [[next(generator) for _ in range(steps)] for _ in range(count)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert len(a) == len(b)
        for part_a, part_b in zip(a, b):
            np.testing.assert_array_equal(part_a, part_b)


def differ(first, second):
    return any(not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1]) for a, b in zip(first, second))


# ---------------------------------------------------------------------------------------------
# Augmentation and resume, without training
# ---------------------------------------------------------------------------------------------
def test_augmented_batches_are_augmented_and_cover_every_face(faces):
    x, y = faces
    steps = math.ceil(len(x) / 8)
    epoch, = epochs_of(er.augmented_batches(x, y, None, 8, seed=3), 1, steps)
    labels = np.concatenate([batch[1] for batch in epoch])
    assert sorted(labels) == list(range(len(x))), "an epoch shows every face once"
    changed = [np.abs(face - x[label]).mean() > 1.0 for batch in epoch for face, label in zip(batch[0], batch[1])]
    assert np.mean(changed) > 0.9, f"only {np.mean(changed):.0%} of the faces were augmented"
    batch_faces = np.concatenate([batch[0] for batch in epoch])
    assert batch_faces.shape[1:] == (48, 48, 1) and batch_faces.min() >= 0 and batch_faces.max() <= 255
    flips = 0
    for face, label in zip(batch_faces, labels):  # a horizontal flip is the likelier of the two
        flips += np.abs(face - x[label][:, ::-1]).mean() < np.abs(face - x[label]).mean()
    assert 0 < flips < len(x), "some faces, not all, are mirrored"
    plain, = epochs_of(er.augmented_batches(x, y, None, 8, seed=3, augment=False), 1, steps)
    for batch_x, batch_y in plain:
        np.testing.assert_array_equal(batch_x, x[batch_y])


def test_the_same_seed_gives_the_same_batches_and_a_resumed_run_its_own_epochs(faces):
    x, y = faces
    weights = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    steps = math.ceil(len(x) / 8)
    fresh = epochs_of(er.augmented_batches(x, y, weights, 8, seed=5), 3, steps)
    again = epochs_of(er.augmented_batches(x, y, weights, 8, seed=5), 3, steps)
    for first, second in zip(fresh, again):
        assert_same_batches(first, second)
    resumed = epochs_of(er.augmented_batches(x, y, weights, 8, seed=5, first_epoch=2), 2, steps)
    assert_same_batches(resumed[0], fresh[2])
    continued = epochs_of(er.augmented_batches(x, y, weights, 8, seed=5), 4, steps)
    assert_same_batches(resumed[1], continued[3])
    # ... and the check can fail: epochs differ from one another, and seeds from one another.
    assert differ(fresh[0], fresh[1]) and differ(fresh[1], fresh[2])
    other = epochs_of(er.augmented_batches(x, y, weights, 8, seed=6), 1, steps)
    assert differ(fresh[0], other[0])
    for batch_x, batch_y, batch_w in fresh[0]:
        np.testing.assert_array_equal(batch_w, weights[batch_y])  # each face keeps its weight


# ---------------------------------------------------------------------------------------------
# Class folders
# ---------------------------------------------------------------------------------------------
def test_class_names_are_the_sorted_folder_names_and_labels_follow_them(tmp_path):
    for name in ("surprise", "angry", "happy", "Zed", "fear"):
        (tmp_path / name).mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("not a class")
    assert er.list_class_folders(tmp_path) == ["Zed", "angry", "fear", "happy", "surprise"]
    data = make_data(tmp_path / "data", (("happy", 3), ("angry", 2)))
    names = er.check_class_folders(data / "train")
    assert names == ["angry", "happy"]
    x, y, files = er.load_split(data / "train", names)
    assert [Path(file).parent.name for file in files] == [names[label] for label in y]
    assert list(y) == [0, 0, 1, 1, 1]


def test_more_than_a_thousand_class_folders_is_refused(tmp_path):
    for index in range(er.MAX_CLASSES):
        (tmp_path / f"c{index:04d}").mkdir()
    assert len(er.list_class_folders(tmp_path)) == er.MAX_CLASSES == 1000
    (tmp_path / "one_more").mkdir()
    with pytest.raises(er.UserError, match="holds 1001 folders, more than 1000 classes"):
        er.list_class_folders(tmp_path)


# ---------------------------------------------------------------------------------------------
# The learning rate and its schedule
# ---------------------------------------------------------------------------------------------
def test_cosine_learning_rate_decays_over_epochs_or_the_time_limit():
    low = er.MIN_LEARNING_RATE
    assert er.cosine_learning_rate(1e-3, 0, 10) == pytest.approx(1e-3)
    assert er.cosine_learning_rate(1e-3, 5, 10) == pytest.approx((1e-3 + low) / 2)
    assert er.cosine_learning_rate(1e-3, 10, 10) == pytest.approx(low)
    # Half the time limit gone at epoch 1 of 10: the rate is half-way down.
    assert er.cosine_learning_rate(1e-3, 1, 10, 2.0, 60.0) == pytest.approx((1e-3 + low) / 2)
    assert er.cosine_learning_rate(1e-3, 1, 10, 2.0, 500.0) == pytest.approx(low)


def test_replicas_multiply_the_learning_rate_of_the_model_and_of_the_schedule(tmp_path):
    config = er.TrainConfig(learning_rate=0.002, lr_schedule="cosine", epochs=10)
    for replicas in (1, 2):
        folder = tmp_path / f"r{replicas}"
        folder.mkdir()
        model, metadata, first_epoch = er.make_training_model(folder, folder / "emotion_model.h5", ["a", "b"],
                                                              config, replicas, None, log=lambda *a, **k: None)
        assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.002 * replicas)
        assert first_epoch == 0 and metadata["training"]["replicas"] == replicas
        callbacks = er.make_callbacks(config, folder, 64, replicas)
        scheduler, = [callback for callback in callbacks
                      if isinstance(callback, er.keras.callbacks.LearningRateScheduler)]
        assert scheduler.schedule(0, 0.0) == pytest.approx(0.002 * replicas)
        assert scheduler.schedule(5, 0.0) == pytest.approx(er.cosine_learning_rate(0.002 * replicas, 5, 10))


def test_the_time_limit_stops_training_after_the_epoch_that_passes_it():
    class Model:
        stop_training = False
        optimizer = type("Optimizer", (), {"learning_rate": 0.001})()

    for limit, stops in ((None, False), (60.0, False), (1e-9, True)):
        report = er.EpochReport(64, limit, log=lambda *args, **kwargs: None)
        report.set_model(Model())
        report.model.stop_training = False
        report.on_epoch_begin(0)
        report.on_epoch_end(0, {})
        assert report.model.stop_training is stops


# ---------------------------------------------------------------------------------------------
# Through the command line: what reaches keras.Model.fit
# ---------------------------------------------------------------------------------------------
class FitSpy:
    """keras.Model.fit, wrapped: records the model, its first batch and fit's arguments; runs the
    real fit when `train`; then stops the run as Ctrl-C would (no finishing steps)."""

    def __init__(self, monkeypatch, train=False):
        self.original, self.train, self.calls = er.keras.Model.fit, train, []
        monkeypatch.setattr(er.keras.Model, "fit", self)

    def __get__(self, model, owner=None):
        return lambda *args, **kwargs: self.fit(model, *args, **kwargs)

    def fit(self, model, batches, **kwargs):
        call = dict(kwargs, model=model, learning_rate=float(np.asarray(model.optimizer.learning_rate)))
        self.calls.append(call)
        if self.train:
            call["history"] = self.original(model, batches, **kwargs).history
        else:
            call["batch"] = next(batches)
        raise KeyboardInterrupt


def run_main(args):
    return er.main([*map(str, args), "--seed", "3"])


@pytest.mark.parametrize("flags, balanced", [([], False), (["--class-weight", "balanced"], True)])
def test_balanced_class_weights_reach_fit(tmp_path, monkeypatch, flags, balanced):
    data = make_data(tmp_path / "data", (("happy", 12), ("sad", 4)))
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--batch-size", 16, *flags]) == 130
    batch = spy.calls[0]["batch"]
    if not balanced:
        assert len(batch) == 2
        return
    faces, labels, weights = batch
    assert sorted(labels) == [0] * 12 + [1] * 4
    np.testing.assert_allclose(weights, np.where(labels == 0, 16 / (2 * 12), 16 / (2 * 4)), rtol=1e-6)


@pytest.mark.parametrize("augment", [True, False])
def test_training_batches_are_augmented_unless_asked_not_to(tmp_path, monkeypatch, augment):
    data = make_data(tmp_path / "data")
    spy = FitSpy(monkeypatch)
    flags = [] if augment else ["--no-augment"]
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--batch-size", 16, *flags]) == 130
    faces, labels = spy.calls[0]["batch"]
    raw, raw_labels, _ = er.load_split(data / "train", ["happy", "sad"], log=lambda *a, **k: None)
    nearest = [min(np.abs(face - original).mean() for original in raw) for face in faces]
    if augment:
        assert np.mean(np.array(nearest) > 1.0) > 0.9, nearest
    else:
        assert max(nearest) == 0.0
    assert sorted(labels) == sorted(raw_labels)


def test_the_learning_rate_rule_uses_the_replicas(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    monkeypatch.setattr(er, "distribution", lambda distribute: (None, 2, True))  # as two GPUs would
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--batch-size", 8,
                     "--learning-rate", 0.004, "--distribute", "mirrored"]) == 130
    call = spy.calls[0]
    assert call["learning_rate"] == pytest.approx(0.008)
    assert len(call["batch"][0]) == 16 and call["steps_per_epoch"] == 1  # 8 per replica, 16 faces


@pytest.mark.parametrize("flags, kind", [([], "Adam"), (["--optimizer", "sgd"], "SGD")])
def test_the_optimizer_flag_reaches_fit(tmp_path, monkeypatch, flags, kind):
    data = make_data(tmp_path / "data")
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--learning-rate", 0.02, *flags]) == 130
    optimizer = spy.calls[0]["model"].optimizer
    assert type(optimizer).__name__ == kind
    assert spy.calls[0]["learning_rate"] == pytest.approx(0.02)
    if kind == "SGD":
        assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.9)
        assert optimizer.weight_decay == pytest.approx(1e-4)


def read_history(folder):
    with open(folder / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_cosine_schedule_sets_the_rate_of_each_epoch(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    spy = FitSpy(monkeypatch, train=True)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--batch-size", 16, "--epochs", 3,
                     "--learning-rate", 0.01, "--lr-schedule", "cosine"]) == 130
    rates = [float(row["learning_rate"]) for row in read_history(tmp_path / "run")]
    assert rates == pytest.approx([er.cosine_learning_rate(0.01, epoch, 3) for epoch in range(3)], rel=1e-5)
    assert rates[0] > rates[1] > rates[2]
    assert spy.calls[0]["epochs"] == 3 and len(spy.calls[0]["history"]["loss"]) == 3


def test_the_plateau_schedule_starts_at_the_given_rate_and_halves_on_a_plateau(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--learning-rate", 0.01]) == 130
    call = spy.calls[0]
    assert call["learning_rate"] == pytest.approx(0.01)
    keras = er.keras
    assert not any(isinstance(callback, keras.callbacks.LearningRateScheduler) for callback in call["callbacks"])
    plateau, = [callback for callback in call["callbacks"] if isinstance(callback, keras.callbacks.ReduceLROnPlateau)]
    assert (plateau.factor, plateau.patience, plateau.monitor) == (0.5, er.REDUCE_LR_PATIENCE, "val_loss")


def test_the_time_limit_reaches_the_epoch_report(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--time-limit", 2.5]) == 130
    report, = [callback for callback in spy.calls[0]["callbacks"] if isinstance(callback, er.EpochReport)]
    assert report.time_limit_s == pytest.approx(150.0)


def test_the_time_limit_ends_training_after_the_first_epoch(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    FitSpy(monkeypatch, train=True)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--batch-size", 16, "--epochs", 3,
                     "--time-limit", 1e-9]) == 130
    assert len(read_history(tmp_path / "run")) == 1
