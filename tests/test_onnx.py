"""The ONNX Runtime prediction path: exported with every model, checked against Keras, never
used when it no longer matches its .h5, and free of TensorFlow."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import emotion_recognition as er
from conftest import PROJECT_DIR, SAMPLE_DIR
from facial_emotion.files import file_sha256
from facial_emotion.finishing import ONNX_TOLERANCE
from facial_emotion.saved_model import (OnnxModel, load_model, matching_onnx, model_temperature, onnx_path,
                                        predict_probabilities)

SHIPPED = er.DEFAULT_MODEL_PATH
FACE = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]


def run_python(code, *args):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT_DIR, timeout=300)


def predict_cli(*args):
    return subprocess.run([sys.executable, str(PROJECT_DIR / "predict.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=PROJECT_DIR, timeout=300)


@pytest.fixture
def model_copy(trained_run, tmp_path):
    """The trained run's model, .json and .onnx, copied where a test may change them."""
    for suffix in (".h5", ".json", ".onnx"):
        shutil.copy(trained_run["model"].with_suffix(suffix), tmp_path / f"emotion_model{suffix}")
    return tmp_path / "emotion_model.h5"


def test_training_records_which_h5_its_onnx_export_was_made_from(trained_run):
    record = er.read_metadata(trained_run["model"])["onnx"]
    assert record["h5_sha256"] == file_sha256(trained_run["model"])
    assert record["onnx_sha256"] == file_sha256(onnx_path(trained_run["model"]))
    assert record["max_probability_difference"] <= ONNX_TOLERANCE


def test_both_runtimes_give_the_shipped_model_the_same_answers_on_the_sample_faces():
    class_names = er.read_metadata(SHIPPED)["class_names"]
    faces, _, _ = er.load_split(SAMPLE_DIR / "validation", class_names)
    keras_model, _ = load_model(SHIPPED, runtime="keras")
    onnx_model, _ = load_model(SHIPPED, runtime="onnx")
    assert isinstance(onnx_model, OnnxModel)
    expected, got = (predict_probabilities(model, faces, tta=True) for model in (keras_model, onnx_model))
    np.testing.assert_array_equal(expected.argmax(axis=1), got.argmax(axis=1))
    assert np.max(np.abs(expected - got)) < 1e-4


NO_TENSORFLOW = """
import sys
import predict
status = predict.main(sys.argv[1:])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))
print("LOADED", loaded, file=sys.stderr)
sys.exit(status)
"""


def test_the_onnx_path_loads_no_tensorflow(tmp_path):
    import cv2

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 120))
    for _ in range(3):
        writer.write(np.full((120, 160, 3), 128, np.uint8))
    writer.release()
    for args in ([FACE], [SAMPLE_DIR / "validation" / "sad"], [video], [PROJECT_DIR / "tests" / "data"]):
        result = run_python(NO_TENSORFLOW, *args)
        assert result.returncode == 0, result.stderr
        assert "LOADED []" in result.stderr, (args, result.stderr[-500:])
    # Importing the package, or asking predict.py for its help, starts no TensorFlow either
    # (`import predict`: test_bad_input.py; emotion_recognition.py imports it at its top by design).
    for code in ("import facial_emotion",
                 "import predict\ntry:\n    predict.main(['--help'])\nexcept SystemExit:\n    pass"):
        result = run_python(code + "\nimport sys\n"
                            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras')))")
        assert result.returncode == 0 and result.stdout.strip().endswith("[]"), (code, result.stdout[-300:])


def test_runtime_keras_gives_the_same_calibrated_probabilities_as_onnx():
    # Unrounded: the calibrated probabilities prediction prints, from both runtimes.
    metadata = er.read_metadata(SHIPPED)
    faces, _, _ = er.load_split(SAMPLE_DIR / "validation", ["fear"])
    answers = {}
    for runtime in ("onnx", "keras"):
        model, _ = load_model(SHIPPED, runtime=runtime)
        assert isinstance(model, OnnxModel) == (runtime == "onnx")
        answers[runtime] = predict_probabilities(model, faces, model_temperature(metadata))
    np.testing.assert_array_equal(answers["onnx"].argmax(axis=1), answers["keras"].argmax(axis=1))
    assert np.max(np.abs(answers["onnx"] - answers["keras"])) <= ONNX_TOLERANCE


def test_the_runtime_flag_picks_the_runtime():
    face = SAMPLE_DIR / "validation" / "fear"
    for runtime, loads_tensorflow in (("onnx", False), ("keras", True)):
        result = run_python(NO_TENSORFLOW, face, "--json", "--runtime", runtime)
        assert result.returncode == 0, result.stderr[-500:]
        assert ("LOADED []" not in result.stderr) == loads_tensorflow, (runtime, result.stderr[-500:])
        assert len(json.loads(result.stdout)) == 50


def test_an_onnx_file_that_no_longer_matches_its_h5_is_never_used(model_copy):
    keras_model = er.load_keras_model(model_copy)
    weights = keras_model.get_weights()
    keras_model.set_weights([w * 0.5 for w in weights])
    er.save_model_atomically(keras_model, model_copy)  # retrained, say: the export is now stale
    auto = predict_cli(FACE, "--model", model_copy, "--json")
    assert auto.returncode == 0
    assert "emotion_model.onnx was made from another emotion_model.h5; using Keras" in auto.stderr
    expected = predict_probabilities(keras_model, er.load_face(FACE)[None], er.read_metadata(model_copy)["temperature"])
    assert json.loads(auto.stdout)[0]["faces"][0]["confidence"] == pytest.approx(float(expected.max()), abs=1e-4)
    forced = predict_cli(FACE, "--model", model_copy, "--runtime", "onnx")
    assert forced.returncode == 1 and "Traceback" not in forced.stderr
    [line] = forced.stderr.strip().splitlines()
    assert "was made from another emotion_model.h5" in line and "--export-onnx" in line


def test_a_corrupt_onnx_file_is_one_line_naming_it(model_copy):
    onnx_file = onnx_path(model_copy)
    onnx_file.write_bytes(b"\x08\x07not an onnx graph" * 50)
    metadata = er.read_metadata(model_copy)
    metadata["onnx"]["onnx_sha256"] = file_sha256(onnx_file)  # recorded as if it were the export
    er.write_json_atomically(metadata, er.metadata_path(model_copy))
    result = predict_cli(FACE, "--model", model_copy)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {onnx_file}: not a loadable ONNX model")


def test_export_onnx_for_a_model_trained_before_exports(model_copy, capsys):
    onnx_path(model_copy).unlink()
    metadata = er.read_metadata(model_copy)
    del metadata["onnx"]
    er.write_json_atomically(metadata, er.metadata_path(model_copy))
    digest = file_sha256(model_copy)
    assert er.main(["--export-onnx", str(model_copy)]) == 0
    assert file_sha256(model_copy) == digest, "the .h5 is left as it was"
    assert matching_onnx(model_copy, er.read_metadata(model_copy))[0] == onnx_path(model_copy)
    assert er.main(["--export-onnx", str(model_copy)]) == er.EXIT_USER_ERROR
    assert "already exists; pass --overwrite" in capsys.readouterr().err
