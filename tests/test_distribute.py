"""--distribute: Keras's own tf.distribute strategies, tested with two logical CPU devices."""

import json
import subprocess
import sys

import pytest

import emotion_recognition as er
from conftest import PROJECT_DIR, copy_sample
from facial_emotion.saved_model import load_model

# TensorFlow fixes its devices when it starts, so the two logical CPUs are made in a process of
# their own, before the training script imports anything.
TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import emotion_recognition as er
sys.exit(er.main(sys.argv[1:]))
"""


def test_mirrored_training_on_two_replicas_writes_the_model_and_its_json(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=8, validation_per_class=4)
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", TWO_CPUS, "--data-dir", str(data), "--output-dir", str(run),
                             "--epochs", "1", "--batch-size", "4", "--learning-rate", "0.0005",
                             "--distribute", "mirrored"],
                            capture_output=True, text=True, cwd=PROJECT_DIR, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    training = json.loads((run / "emotion_model.json").read_text())["training"]
    assert training["distribute"] == "mirrored" and training["replicas"] == 2
    assert training["learning_rate"] == 0.0005 and training["batch_size"] == 4, "the flags, per replica"
    # The replicas reach the optimizer: twice the batch, so twice the flag's learning rate
    # (the linear scaling rule), in the epoch's record and in the checkpoint's optimizer.
    history = er.read_history(run / "history.csv")
    assert history["learning_rate"] == [pytest.approx(0.001)]
    checkpoint = er.load_checkpoint(run / er.LAST_CHECKPOINT)
    assert float(checkpoint.optimizer.learning_rate.numpy()) == pytest.approx(0.001)
    # 16 faces in global batches of 2 x 4: two steps, each split over both replicas.
    assert int(checkpoint.optimizer.iterations.numpy()) == 2
    # The epoch's speed counts the global batches' images: 16 an epoch, not one replica's 8.
    # (The record is rounded to 0.1 img/s: on a loaded machine an epoch of 16 faces can take 20 s.)
    assert history["images_per_second"][0] == pytest.approx(16 / history["epoch_seconds"][0], rel=0.05, abs=0.05)
    model, _ = load_model(run / "emotion_model.h5")
    assert model.dtype_policy.name == "float32", "a saved model runs on any CPU"
    assert (run / "emotion_model.onnx").is_file()
    assert "2 replicas" in result.stdout


def test_multi_worker_without_tf_config_is_one_line(tmp_path, monkeypatch):
    data = copy_sample(tmp_path / "data")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "emotion_recognition.py"), "--data-dir", str(data),
                             "--output-dir", str(tmp_path / "run"), "--distribute", "multi-worker"],
                            capture_output=True, text=True, cwd=PROJECT_DIR, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == "error: --distribute multi-worker needs TF_CONFIG, the cluster and this worker's task " \
                   "(see README, \"Training\")"
