"""--restore-class-prior: a balanced-weighted model's answers put back on the class frequencies."""

import hashlib
import json

import numpy as np
import pytest

import emotion_recognition as er
from conftest import copy_sample


def save_model(path, layers, training):
    keras = er.import_keras()
    keras.utils.set_random_seed(3)
    er.save_model_atomically(keras.Sequential([keras.Input(er.INPUT_SHAPE), keras.layers.Rescaling(1 / 255),
                                               keras.layers.Flatten()] + layers), path)
    path.with_suffix(".json").write_text(json.dumps({"class_names": ["happy", "sad"], "training": training}))
    return path


def softmax_model(path, class_weighting="balanced"):
    keras = er.import_keras()
    return save_model(path, [keras.layers.Dense(2, activation="softmax")], {"class_weighting": class_weighting})


@pytest.fixture
def uneven_data(tmp_path):
    """8 happy and 2 sad training faces: prior 0.8 / 0.2."""
    data = copy_sample(tmp_path / "data")
    for path in sorted((data / "train" / "sad").iterdir())[2:]:
        path.unlink()
    return data


def test_answers_are_multiplied_by_the_training_class_frequencies(uneven_data, tmp_path):
    source = softmax_model(tmp_path / "balanced.h5")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "prior"
    assert er.main(["--restore-class-prior", str(source), "--data-dir", str(uneven_data),
                    "--output-dir", str(out)]) == 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest, "the source model is left as it was"

    faces, labels, _ = er.load_split(uneven_data / "validation", ["happy", "sad"])
    before = er.predict_probabilities(er.load_model_bundle(source)[0], faces)
    model, metadata = er.load_model_bundle(out / "emotion_model.h5")
    expected = before * [0.8, 0.2]
    np.testing.assert_allclose(er.predict_probabilities(model, faces),
                               expected / expected.sum(axis=1, keepdims=True), atol=1e-5)

    record = metadata["training"]["class_prior"]
    assert record["prior"] == {"happy": 0.8, "sad": 0.2} and record["training_images"] == 10
    assert record["source_model"] == str(source)
    assert record["validation_accuracy_before"] == pytest.approx(
        float(np.mean(before.argmax(axis=1) == labels)), abs=1e-4)
    assert metadata["validation"]["accuracy"] == record["validation_accuracy_after"]
    assert metadata["training"]["class_weighting"] == "balanced", "how it was trained stays on record"
    assert (out / "metrics.json").is_file() and (out / "confusion_matrix.png").is_file()

    # Restoring twice would count the prior twice: refused, and nothing is written.
    assert er.main(["--restore-class-prior", str(out / "emotion_model.h5"), "--data-dir", str(uneven_data),
                    "--output-dir", str(tmp_path / "twice")]) == er.EXIT_USER_ERROR
    assert not (tmp_path / "twice").exists()


def test_refuses_models_it_cannot_correct(uneven_data, tmp_path, capsys):
    keras = er.import_keras()
    unweighted = softmax_model(tmp_path / "unweighted.h5", class_weighting="none")
    no_record = save_model(tmp_path / "no_record.h5", [keras.layers.Dense(2, activation="softmax")], None)
    separate_softmax = save_model(tmp_path / "separate.h5", [keras.layers.Dense(2), keras.layers.Softmax()],
                                  {"class_weighting": "balanced"})
    for index, model in enumerate((unweighted, no_record, separate_softmax)):
        assert er.main(["--restore-class-prior", str(model), "--data-dir", str(uneven_data),
                        "--output-dir", str(tmp_path / f"out{index}")]) == er.EXIT_USER_ERROR
        assert not (tmp_path / f"out{index}").exists()
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    assert "not trained with --class-weight balanced" in errors[0] and "'none'" in errors[0]
    assert "not trained with --class-weight balanced" in errors[1]
    assert "not a softmax layer with a bias" in errors[2]


def test_refuses_data_with_other_classes(tmp_path, capsys):
    other = copy_sample(tmp_path / "other", classes=("angry", "happy"))
    assert er.main(["--restore-class-prior", str(softmax_model(tmp_path / "m.h5")), "--data-dir", str(other),
                    "--output-dir", str(tmp_path / "out")]) == er.EXIT_USER_ERROR
    assert "classes differ" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_restore_class_prior_is_a_job_of_its_own(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        er.main(["--restore-class-prior", str(tmp_path / "m.h5"), "--recompute-batch-norm", str(tmp_path / "m.h5")])
    assert usage.value.code == 2
    assert "separate jobs" in capsys.readouterr().err
