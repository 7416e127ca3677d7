"""Batch-norm statistics recomputed on un-augmented training faces after training."""

import hashlib
import json

import numpy as np
import pytest

import emotion_recognition as er
from conftest import copy_sample


def faces(count, seed=0):
    rng = np.random.default_rng(seed)
    # Pixel values like the real faces': 0-255, with a per-image brightness so batches differ.
    return (rng.uniform(0, 255, (count, 48, 48, 1)) * rng.uniform(0.3, 1.0, (count, 1, 1, 1))).astype(np.float32)


def batch_norm_model():
    keras = er.import_keras()
    return keras.Sequential([keras.Input(er.INPUT_SHAPE), keras.layers.BatchNormalization(momentum=0.9),
                             keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax")])


def test_recomputed_statistics_are_those_of_the_faces():
    model, x = batch_norm_model(), faces(600)  # 600: the last batch of 256 is short
    norm = model.layers[0]
    er.recompute_batch_norm_statistics(model, x, batch_size=256)
    assert float(np.asarray(norm.moving_mean)[0]) == pytest.approx(float(x.mean()), rel=1e-4)
    # The average of within-batch variances: the population's within a percent for batches of 256.
    assert float(np.asarray(norm.moving_variance)[0]) == pytest.approx(float(x.var()), rel=0.01)
    assert norm.momentum == 0.9, "the layer's own momentum is put back"


def test_training_keeps_recomputed_statistics_only_when_validation_accuracy_holds(trained_run):
    record = json.loads(trained_run["model"].with_suffix(".json").read_text())["training"]["batch_norm_statistics"]
    assert record["recomputed_on_training_images"] == 16, "the run's 2 classes x 8 training faces"
    assert record["kept"] == (record["validation_accuracy_after"] >= record["validation_accuracy_before"])


def test_statistics_that_lower_validation_accuracy_are_discarded():
    er.import_keras().utils.set_random_seed(0)
    model, x_val = batch_norm_model(), faces(40, seed=1)
    # Labels the model gets all right; both classes occur (a fact of seed 0, checked here).
    y_val = er.predict_probabilities(model, x_val).argmax(axis=1)
    assert set(y_val) == {0, 1}
    before = [np.asarray(w).copy() for w in model.get_weights()]
    # "Training faces" of one huge constant value: every face then looks alike to the model, which
    # answers one class for all of them.
    record = er.refresh_batch_norm(model, np.full((64, 48, 48, 1), 1e7, np.float32), x_val, y_val,
                                   log=lambda *a, **k: None)
    assert record["validation_accuracy_before"] == 1.0 and record["validation_accuracy_after"] < 1.0
    assert record["kept"] is False
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.get_weights()))


def test_recompute_batch_norm_command_writes_a_new_model_and_leaves_the_old_one(trained_run, tmp_path, capsys):
    source = trained_run["model"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    run = tmp_path / "bn"
    assert er.main(["--recompute-batch-norm", str(source), "--data-dir", str(trained_run["data"]),
                    "--output-dir", str(run)]) == 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    model, metadata = er.load_model_bundle(run / "emotion_model.h5")
    record = metadata["training"]["batch_norm_statistics"]
    assert record["source_model"] == str(source) and record["recomputed_on_training_images"] == 16
    assert metadata["validation"]["accuracy"] == record[
        "validation_accuracy_after" if record["kept"] else "validation_accuracy_before"]
    assert (run / "metrics.json").is_file() and (run / "confusion_matrix.png").is_file()
    # A second time into the same folder: refused, nothing replaced.
    written = (run / "emotion_model.h5").read_bytes()
    assert er.main(["--recompute-batch-norm", str(source), "--data-dir", str(trained_run["data"]),
                    "--output-dir", str(run)]) == er.EXIT_USER_ERROR
    assert (run / "emotion_model.h5").read_bytes() == written
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_recompute_batch_norm_refuses_other_classes_and_models_without_batch_norm(trained_run, tmp_path, capsys):
    other = copy_sample(tmp_path / "other", classes=("angry", "happy"))
    assert er.main(["--recompute-batch-norm", str(trained_run["model"]), "--data-dir", str(other),
                    "--output-dir", str(tmp_path / "a")]) == er.EXIT_USER_ERROR
    plain = tmp_path / "plain.h5"
    keras = er.import_keras()
    er.save_model_atomically(keras.Sequential([keras.Input(er.INPUT_SHAPE), keras.layers.Flatten(),
                                               keras.layers.Dense(2, activation="softmax")]), plain)
    plain.with_suffix(".json").write_text(json.dumps({"class_names": ["happy", "sad"]}))
    assert er.main(["--recompute-batch-norm", str(plain), "--data-dir", str(trained_run["data"]),
                    "--output-dir", str(tmp_path / "b")]) == er.EXIT_USER_ERROR
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "no batch-normalisation layers" in errors[1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_recompute_batch_norm_is_a_job_of_its_own(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        er.main(["--recompute-batch-norm", str(tmp_path / "m.h5"), "--evaluate", str(tmp_path / "m.h5"),
                 "--test-dir", str(tmp_path)])
    assert usage.value.code == 2
    assert "separate jobs" in capsys.readouterr().err
