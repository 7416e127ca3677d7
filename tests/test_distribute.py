"""--distribute: Keras's own tf.distribute strategies, tested with two logical CPU devices."""

import json
import subprocess
import sys

import emotion_recognition as er
from conftest import PROJECT_DIR, copy_sample

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
                             "--epochs", "1", "--batch-size", "4", "--distribute", "mirrored"],
                            capture_output=True, text=True, cwd=PROJECT_DIR, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    training = json.loads((run / "emotion_model.json").read_text())["training"]
    assert training["distribute"] == "mirrored" and training["replicas"] == 2
    # 16 faces in global batches of 2 x 4: two steps, each split over both replicas.
    history = er.read_history(run / "history.csv")
    assert len(history["loss"]) == 1
    model, _ = er.load_model_bundle(run / "emotion_model.h5")
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
                   "(see README, \"More than one GPU or machine\")"
