"""Interrupted training keeps its work and resumes where it left off."""

import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import emotion_recognition as er
from conftest import PROJECT_DIR, copy_sample
from facial_emotion.console import StopSignals
from facial_emotion.files import portable_record, replace_atomically
from facial_emotion.saved_model import load_model


def quiet(*args, **kwargs):
    pass


class StopAt(keras.callbacks.Callback):
    """Presses Ctrl-C as training begins the given epoch (counted from 1)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def config(data, **settings):
    return er.TrainConfig(data_dir=str(data), **settings)


def test_interrupted_run_keeps_a_loadable_model_and_resumes_to_the_end(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    with pytest.raises(er.TrainingInterrupted) as stopped:
        er.train(config(data, epochs=4, batch_size=8, seed=3), run, log=quiet, callbacks=[StopAt(3)])
    # Interrupted as epoch 3 began: two epochs finished and saved.
    assert stopped.value.epochs_done == 2
    model, metadata = load_model(run / "emotion_model.h5")
    assert metadata["class_names"] == ["happy", "sad"]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 2
    state = json.loads((run / "training_state.json").read_text())
    assert state["epochs_done"] == 2 and not state.get("finished")

    er.resume(run, log=lambda *args, **kwargs: None)
    history = er.read_history(run / "history.csv")
    assert history["epoch"] == [0, 1, 2, 3], "same epochs as an uninterrupted 4-epoch run"
    assert json.loads((run / "training_state.json").read_text())["finished"] is True
    load_model(run / "emotion_model.h5")
    with pytest.raises(er.UserError, match="already finished"):
        er.resume(run)


def test_a_run_interrupted_while_finishing_resumes_to_its_finishing_steps(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"

    stop, seen = StopSignals(), []

    class CtrlCAfterTraining(keras.callbacks.Callback):
        """Ctrl-C as the last epoch ends: the stop is noticed at finishing's safe point."""

        def on_train_end(self, logs=None):
            stop.requested = True

    with pytest.raises(er.TrainingInterrupted) as stopped:
        er.train(config(data, epochs=2, batch_size=8, seed=3), run, callbacks=[CtrlCAfterTraining()], stop=stop,
                 log=lambda message, **kwargs: seen.append(message))
    assert stopped.value.epochs_done == 2
    assert any(message.startswith("batch-norm statistics") for message in seen), "finishing had begun"
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
        er.train(config(data, epochs=3, batch_size=8, seed=3), run, log=quiet, callbacks=[StopAt(3)])
    saved = er.load_checkpoint(run / er.LAST_CHECKPOINT)
    assert int(saved.optimizer.iterations.numpy()) == 2 * 2, "two epochs of two batches"
    assert json.loads((run / "training_state.json").read_text())["epochs_done"] == 2
    seen = {}

    def record(message, **kwargs):
        seen.setdefault("messages", []).append(message)

    er.resume(run, log=record)
    assert any(message == "resuming after epoch 2" for message in seen["messages"])
    final = er.load_checkpoint(run / er.LAST_CHECKPOINT)
    assert int(final.optimizer.iterations.numpy()) == 3 * 2, "the optimizer carried on, not restarted"


def test_resume_restores_the_callbacks_counters_and_the_clock(tmp_path):
    model = er.build_model(2)
    settings = er.TrainConfig(lr_schedule="plateau", learning_rate=1e-3, epochs=10, time_limit_minutes=None)
    state = {"epochs_done": 5, "elapsed_seconds": 600.0, "checkpoint_best": 0.75,
             "early_stopping": {"wait": 3, "best": 0.75, "best_epoch": 1},
             "reduce_lr": {"wait": 2, "best": 0.4, "cooldown_counter": 0}}
    callbacks = er.make_callbacks(settings, tmp_path, 64, resume_state=state, log=quiet)
    assert all(isinstance(callback, keras.callbacks.Callback) for callback in callbacks)
    model.fit(np.zeros((2, 48, 48, 1), np.float32), np.array([0, 1]), epochs=0, verbose=0,
              callbacks=callbacks)  # runs every on_train_begin, as a resumed fit does
    stopping = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
    reduce_lr = next(c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau))
    assert (stopping.wait, stopping.best, stopping.best_epoch) == (3, 0.75, 1)
    assert (reduce_lr.wait, reduce_lr.best) == (2, 0.4)
    report = callbacks[0]
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
    assert err.strip().splitlines()[-1].startswith("interrupted after ")
    model, metadata = load_model(run / "emotion_model.h5")
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
        er.train(config(data, epochs=1, batch_size=8, seed=11), tmp_path / name, log=quiet)
        losses.append(er.read_history(tmp_path / name / "history.csv")["loss"][0])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("start_file", ["emotion_model.h5", er.LAST_CHECKPOINT])
def test_init_model_starts_from_the_saved_weights_and_records_them(trained_run, tmp_path, start_file):
    start_path = trained_run["output"] / start_file  # the run's best model, or its last epoch
    start, start_metadata = load_model(start_path, described_as=trained_run["model"])
    run = tmp_path / "second"
    # A learning rate too small to move the weights: the new run must begin where the old one ended.
    assert er.main(["--data-dir", str(trained_run["data"]), "--output-dir", str(run), "--epochs", "1",
                    "--batch-size", "8", "--learning-rate", "1e-9", "--init-model", str(start_path)]) == 0
    model, metadata = load_model(run / "emotion_model.h5")
    convolutions = [[layer for layer in m.layers if layer.name.startswith("conv")] for m in (start, model)]
    assert convolutions[0] and len(convolutions[0]) == len(convolutions[1]), "the network has convolutions to compare"
    for before, after in zip(*convolutions):  # in order: a model finished after bfloat16 training has new names
        assert np.allclose(np.asarray(before.kernel), np.asarray(after.kernel), atol=1e-6), before.name
    origin = metadata["training"]["initialised_from"]
    # Recorded without this machine's folders: the JSON travels with the model.
    assert origin["model"] == str(start_path.relative_to(start_path.parents[1])) == "run/" + start_file
    assert origin["training"] == portable_record(start_metadata["training"])
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


@pytest.mark.parametrize("flags", [["--epochs", "5"], ["--learning-rate=0.01", "--seed", "3"], ["--no-augment"]])
def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as usage:
        er.main(["--resume", str(tmp_path), *flags])
    assert usage.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # argparse's usage, then the one error line
    named = ", ".join(flag.split("=")[0] for flag in flags if flag.startswith("--"))
    assert error.endswith(f": error: --resume continues a run with its own settings; {named} cannot change them "
                          "(start a new run with --init-model RUN_DIR/last_checkpoint.keras)"), error
    assert not list(tmp_path.iterdir()), "refused before anything was read or written"


def test_a_stop_request_ends_training_at_the_next_batch_boundary(tmp_path):
    # Ctrl-C and SIGTERM only set a flag; the batch in hand finishes, the next never starts.
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run, stop, batches = tmp_path / "run", StopSignals(), []

    class CtrlCInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            batches.append((self.epoch, batch))
            if (self.epoch, batch) == (1, 0):
                stop.requested = True

    with pytest.raises(er.TrainingInterrupted) as stopped:
        er.train(config(data, epochs=3, batch_size=8, seed=3), run, log=quiet, callbacks=[CtrlCInSecondEpoch()],
                 stop=stop)
    assert batches == [(0, 0), (0, 1), (1, 0)], "no batch begins after the one in hand"
    assert stopped.value.epochs_done == 1 and stopped.value.output_dir == run
    assert len(er.read_history(run / "history.csv")["loss"]) == 1
    assert int(er.load_checkpoint(run / er.LAST_CHECKPOINT).optimizer.iterations.numpy()) == 2


@pytest.mark.parametrize("schedule, patience", [("plateau", er.EARLY_STOP_PATIENCE), ("cosine", 80)])
def test_early_stopping_never_cuts_a_cosine_schedule_short(tmp_path, schedule, patience):
    settings = er.TrainConfig(lr_schedule=schedule, learning_rate=1e-3, epochs=80)
    callbacks = er.make_callbacks(settings, tmp_path, 64, log=quiet)
    stopping = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    assert len(stopping) == 1 and not stopping[0].restore_best_weights  # RunState's .h5 is the best epoch
    # Under cosine the schedule ends the run; early stopping never stops it.
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
        replace_atomically(target, write_half_then_fail)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last_checkpoint.keras"]


def test_a_resumed_run_draws_the_batches_of_its_next_epoch_not_its_first(tmp_path, monkeypatch):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    with pytest.raises(er.TrainingInterrupted):
        er.train(config(data, epochs=3, batch_size=8, seed=3), run, log=quiet, callbacks=[StopAt(2)])
    drawn = []
    batches = er.augmented_batches

    def recorded(*args, **kwargs):
        drawn.append(kwargs.get("first_epoch", args[6] if len(args) > 6 else 0))
        return batches(*args, **kwargs)

    monkeypatch.setattr(er, "augmented_batches", recorded)
    er.resume(run, log=quiet)
    assert drawn == [1], "epoch 2's batches, as an uninterrupted run would draw them"
