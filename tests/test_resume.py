"""Interrupted training keeps its work and resumes where it left off."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import emotion_recognition as er
from conftest import PROJECT_DIR, copy_sample


class StopAt:
    """A log function that presses Ctrl-C when training reports the given epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, message, **kwargs):
        if message.startswith(f"epoch {self.epoch}:"):
            raise KeyboardInterrupt


def test_interrupted_run_keeps_a_loadable_model_and_resumes_to_the_end(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    with pytest.raises(er.TrainingInterrupted) as stopped:
        er.train(data, run, epochs=4, batch_size=8, seed=3, log=StopAt(3))
    # Interrupted during epoch 3: two epochs finished and saved.
    assert stopped.value.epochs_done == 2
    model, metadata = er.load_model_bundle(run / "emotion_model.h5")
    assert metadata["class_names"] == ["happy", "sad"]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 2
    state = json.loads((run / "training_state.json").read_text())
    assert state["epochs_done"] == 2 and not state.get("finished")

    er.resume(run, log=lambda *args, **kwargs: None)
    history = er.read_history(run / "history.csv")
    assert history["epoch"] == [0, 1, 2, 3], "same epochs as an uninterrupted 4-epoch run"
    assert json.loads((run / "training_state.json").read_text())["finished"] is True
    er.load_model_bundle(run / "emotion_model.h5")
    with pytest.raises(er.UserError, match="already finished"):
        er.resume(run)


def test_a_run_interrupted_while_finishing_resumes_to_its_finishing_steps(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"

    def stop_while_finishing(message, **kwargs):
        if message.startswith("batch-norm statistics"):
            raise KeyboardInterrupt

    with pytest.raises(er.TrainingInterrupted) as stopped:
        er.train(data, run, epochs=2, batch_size=8, seed=3, log=stop_while_finishing)
    assert stopped.value.epochs_done == 2
    assert "validation" not in er.read_metadata(run / "emotion_model.h5"), "not finished yet"
    seen = []
    er.resume(run, log=lambda message, **kwargs: seen.append(message))
    assert "training had ended; finishing its best model" in seen
    assert not any(message.startswith("epoch ") for message in seen), "no epoch is trained again"
    assert er.read_metadata(run / "emotion_model.h5")["validation"]["images"] == 8
    assert len(er.read_history(run / "history.csv")["loss"]) == 2
    assert json.loads((run / "training_state.json").read_text())["finished"] is True


def test_resume_restores_the_optimizer(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    with pytest.raises(er.TrainingInterrupted):
        er.train(data, run, epochs=3, batch_size=8, seed=3, log=StopAt(3))
    saved = er.load_checkpoint(run / er.LAST_CHECKPOINT)
    assert int(saved.optimizer.iterations.numpy()) == 2 * 2, "two epochs of two batches"
    state = json.loads((run / "training_state.json").read_text())
    seen = {}

    def record(message, **kwargs):
        seen.setdefault("messages", []).append(message)

    er.resume(run, log=record)
    assert any(message == "resuming after epoch 2" for message in seen["messages"])
    final = er.load_checkpoint(run / er.LAST_CHECKPOINT)
    assert int(final.optimizer.iterations.numpy()) == 3 * 2, "the optimizer carried on, not restarted"


def test_resume_restores_the_callbacks_counters_and_the_clock(tmp_path):
    keras = er.import_keras()
    model = er.build_model(2)
    settings = dict(lr_schedule="plateau", learning_rate=1e-3, epochs=10, time_limit_minutes=None)
    state = {"epochs_done": 5, "elapsed_seconds": 600.0, "checkpoint_best": 0.75,
             "early_stopping": {"wait": 3, "best": 0.75, "best_epoch": 1},
             "reduce_lr": {"wait": 2, "best": 0.4, "cooldown_counter": 0}}
    callbacks = er.make_callbacks(model, tmp_path, 64, settings, resume_state=state)
    model.fit(np.zeros((2, 48, 48, 1), np.float32), np.eye(2, dtype=np.float32), epochs=0, verbose=0,
              callbacks=callbacks)  # runs every on_train_begin, as a resumed fit does
    stopping = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
    reduce_lr = next(c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau))
    assert (stopping.wait, stopping.best, stopping.best_epoch) == (3, 0.75, 1)
    assert (reduce_lr.wait, reduce_lr.best) == (2, 0.4)
    report = callbacks[0].on_epoch_end.__self__
    assert 600 <= report.elapsed() < 660, "the time limit and a cosine schedule count the earlier minutes"


def test_sigterm_leaves_the_best_model_and_says_how_to_resume(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "emotion_recognition.py"), "--data-dir", str(data),
         "--output-dir", str(run), "--epochs", "200", "--batch-size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run / "training_state.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert f"--resume {run}" in err
    model, metadata = er.load_model_bundle(run / "emotion_model.h5")
    faces = np.zeros((1, 48, 48, 1), dtype="float32")
    assert np.asarray(model(faces)).shape == (1, 2)
    assert not list(run.glob(".*partial*")), "no half-written file left behind"


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert er.main(["--resume", str(tmp_path)]) == 1
    assert "not a run folder that can be resumed" in capsys.readouterr().err


def test_same_seed_gives_the_same_first_epoch_loss(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    losses = []
    for name in ("a", "b"):
        er.train(data, tmp_path / name, epochs=1, batch_size=8, seed=11, log=lambda *a, **k: None)
        losses.append(er.read_history(tmp_path / name / "history.csv")["loss"][0])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("start_file", ["emotion_model.h5", er.LAST_CHECKPOINT])
def test_init_model_starts_from_the_saved_weights_and_records_them(trained_run, tmp_path, start_file):
    start_path = trained_run["output"] / start_file  # the run's best model, or its last epoch
    start, start_metadata = er.load_model_bundle(start_path, described_as=trained_run["model"])
    run = tmp_path / "second"
    # A learning rate too small to move the weights: the new run must begin where the old one ended.
    assert er.main(["--data-dir", str(trained_run["data"]), "--output-dir", str(run), "--epochs", "1",
                    "--batch-size", "8", "--learning-rate", "1e-9", "--init-model", str(start_path)]) == 0
    model, metadata = er.load_model_bundle(run / "emotion_model.h5")
    kernels = [layer for layer in start.layers if layer.name.startswith("conv")]
    assert kernels, "the network has convolutions to compare"
    for layer in kernels:
        before, after = (np.asarray(m.get_layer(layer.name).kernel) for m in (start, model))
        assert np.allclose(before, after, atol=1e-6), layer.name
    origin = metadata["training"]["initialised_from"]
    # Recorded without this machine's folders: the JSON travels with the model.
    assert origin["model"] == str(start_path.relative_to(start_path.parents[1])) == "run/" + start_file
    assert origin["training"] == er.portable_record(start_metadata["training"])
    assert metadata["training"]["architecture"] == start_metadata["training"]["architecture"]


def test_init_model_with_other_classes_is_refused_before_anything_is_written(trained_run, tmp_path, capsys):
    data = copy_sample(tmp_path / "data", classes=("angry", "happy"))
    run = tmp_path / "run"
    assert er.main(["--data-dir", str(data), "--output-dir", str(run), "--init-model",
                    str(trained_run["model"])]) == er.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "are not the data's" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_init_model_does_not_go_with_resume(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        er.main(["--resume", str(tmp_path), "--init-model", str(tmp_path / "model.h5")])
    assert usage.value.code == 2
    assert "--init-model goes with training" in capsys.readouterr().err


@pytest.mark.parametrize("schedule, patience", [("plateau", er.EARLY_STOP_PATIENCE), ("cosine", 80)])
def test_early_stopping_never_cuts_a_cosine_schedule_short(tmp_path, schedule, patience):
    settings = dict(lr_schedule=schedule, learning_rate=1e-3, epochs=80)
    callbacks = er.make_callbacks(er.build_model(2), tmp_path, 64, settings)
    keras = er.import_keras()
    stopping = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    assert len(stopping) == 1 and stopping[0].restore_best_weights
    # Under cosine the schedule ends the run; early stopping only keeps the best epoch's weights.
    assert stopping[0].patience == patience


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError, OSError])
def test_an_interrupted_save_leaves_no_partial_file_and_the_old_file_whole(tmp_path, interruption):
    # SIGTERM arrives as KeyboardInterrupt, which may land in the middle of a model's save.
    target = tmp_path / "last_checkpoint.keras"
    target.write_bytes(b"the previous checkpoint")

    def write_half_then_fail(partial):
        partial.write_bytes(b"half a chec")
        raise interruption("stopped mid-write")

    with pytest.raises((interruption, er.UserError)):
        er.replace_atomically(target, write_half_then_fail)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last_checkpoint.keras"]
