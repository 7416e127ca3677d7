"""Training for robustness and choosing honestly: the held-out selection set, the AugMix
consistency term and its batches, and bfloat16 training that saves a float32 model."""

import json

import numpy as np
import pytest

import emotion_recognition as er

from test_training_mechanics import FitSpy, make_data, run_main


def test_the_selection_set_is_a_stratified_fixed_slice_of_training():
    labels = np.repeat([0, 1, 2], [100, 30, 3])
    x = np.arange(len(labels)).astype(np.float32)
    (kept_x, kept_y), (held_x, held_y) = er.split_selection(x, labels, 0.1, seed=5)
    assert np.bincount(held_y).tolist() == [10, 3, 1]  # 10% of each class, at least one face
    assert np.bincount(kept_y).tolist() == [90, 27, 2]  # and at least one left to train on
    assert not set(kept_x) & set(held_x) and len(kept_x) + len(held_x) == len(x)
    assert all(labels[int(face)] == label for face, label in zip(held_x, held_y))
    (_, _), (again, _) = er.split_selection(x, labels, 0.1, seed=5)
    (_, _), (other, _) = er.split_selection(x, labels, 0.1, seed=6)
    np.testing.assert_array_equal(again, held_x)
    assert set(other) != set(held_x)


def test_training_with_a_selection_set_validates_on_it_and_reports_validation(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data", (("happy", 20), ("sad", 20)))
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--selection-fraction", "0.25"]) == 130
    x_choose, y_choose = spy.calls[0]["validation_data"]
    assert np.bincount(y_choose).tolist() == [5, 5]  # held out of train/, not validation/'s 4 + 4


def test_a_finished_run_records_selection_and_validation_apart(tmp_path, monkeypatch, capsys):
    data = make_data(tmp_path / "data", (("happy", 20), ("sad", 20)))
    monkeypatch.setattr(er, "cpu_has_bfloat16", lambda: False)  # bfloat16 asked for on a CPU that emulates it
    assert er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                    "--selection-fraction", "0.25", "--selection-seed", "9", "--precision", "bfloat16"]) == 0
    metadata = json.loads((tmp_path / "run" / "emotion_model.json").read_text())
    assert metadata["selection"]["images"] == 10 and metadata["validation"]["images"] == 8
    assert metadata["training"]["selection_seed"] == 9 and metadata["training"]["selection_fraction"] == 0.25
    assert metadata["training"]["precision"] == "bfloat16"
    assert "bfloat16 is emulated and trains about 4x slower than float32" in capsys.readouterr().out
    model = er.load_keras_model(tmp_path / "run" / "emotion_model.h5")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}  # the saved model is float32
    assert er.keras.mixed_precision.global_policy().name == "float32"  # and the process is back to it


def test_consistency_batches_hold_the_framed_faces_then_two_degraded_copies():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 48, 48, 1)).astype(np.float32)
    y, weights = np.arange(8), np.linspace(1, 2, 8).astype(np.float32)
    faces, labels, batch_weights = next(er.augmented_batches(x, y, weights, 4, seed=1, consistency=True))
    assert faces.shape == (12, 48, 48, 1)
    np.testing.assert_array_equal(labels, np.tile(labels[:4], 3))
    np.testing.assert_array_equal(batch_weights, weights[labels])
    clean, first, second = faces[:4], faces[4:8], faces[8:]
    assert not np.array_equal(first, second)  # each copy draws its own shifts
    assert np.abs(first - clean).mean() > 0 and np.abs(second - clean).mean() > 0
    plain, plain_labels = next(er.augmented_batches(x, y, None, 4, seed=1, consistency=False))
    np.testing.assert_array_equal(plain_labels, labels[:4])  # the same faces in the same order


def jensen_shannon(p):
    mixture = p.mean(axis=0)
    return np.mean([np.sum(q * np.log(q / mixture), axis=-1) for q in p], axis=0).mean()


def test_the_consistency_loss_is_clean_cross_entropy_plus_the_weighted_divergence():
    model = er.build_model(3)
    plain = model.compute_loss
    er.attach_consistency(model, 12.0)
    answers = np.array([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]],
                        [[0.5, 0.3, 0.2], [0.2, 0.6, 0.2]],
                        [[0.2, 0.2, 0.6], [0.1, 0.8, 0.1]]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    y_pred = answers.reshape(6, 3)
    clean = float(plain(y=labels[:2], y_pred=y_pred[:2], training=True))
    loss = float(model.compute_loss(y=labels, y_pred=y_pred, training=True))
    assert loss == pytest.approx(clean + 12.0 * jensen_shannon(answers), rel=1e-4)
    same = np.tile(answers[0], (3, 1))
    assert float(model.compute_loss(y=labels, y_pred=same, training=True)) == pytest.approx(clean, rel=1e-5)
    # Validation keeps the plain loss over every face.
    assert float(model.compute_loss(y=labels, y_pred=y_pred, training=False)) == pytest.approx(
        float(plain(y=labels, y_pred=y_pred)), rel=1e-6)


def test_the_consistency_flag_reaches_training(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    spy = FitSpy(monkeypatch)
    assert run_main(["--data-dir", data, "--output-dir", tmp_path / "run", "--batch-size", 8,
                     "--consistency", "12"]) == 130
    faces, labels = spy.calls[0]["batch"]
    assert len(faces) == 24 and np.array_equal(labels[:8], labels[8:16])
    assert spy.calls[0]["model"].compute_loss.__name__ == "compute_loss"
    assert "consistency" in spy.calls[0]["model"].compute_loss.__qualname__


def test_precision_auto_follows_the_cpu_s_bfloat16_flags(tmp_path):
    from facial_emotion.training_cli import cpu_has_bfloat16

    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx512f", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_bfloat16(info) is expected
    assert cpu_has_bfloat16(tmp_path / "missing") is False


def test_a_finish_computes_the_panel_once_per_model_the_batch_norm_rule_weighs(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data", (("happy", 20), ("sad", 20)))
    sizes = []
    panel = er.evaluation.robustness_panel

    def counted(model, faces, labels, tta=False):
        sizes.append(len(faces))
        return panel(model, faces, labels, tta)

    monkeypatch.setattr(er.finishing, "robustness_panel", counted)
    monkeypatch.setattr(er.evaluation, "robustness_panel", counted)
    assert er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                    "--selection-fraction", "0.25", "--class-weight", "balanced"]) == 0
    # Before and after recomputing the statistics on the selection set (10 faces); validation once (8).
    assert sizes == [10, 10, 8]
    metadata = json.loads((tmp_path / "run" / "emotion_model.json").read_text())
    kept = metadata["training"]["batch_norm_statistics"]
    assert metadata["selection"]["robustness"]["accuracy"] == (
        kept["validation_accuracy_after"] if kept["kept"] else kept["validation_accuracy_before"])
