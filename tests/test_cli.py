"""The two command-line tools end to end, and every bad input a user can give them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import emotion_recognition as er
import predict
from conftest import PROJECT_DIR, SAMPLE_DIR, copy_sample
from facial_emotion.files import claim_run_folder
from facial_emotion.images import load_face, read_image, to_grayscale
from facial_emotion.saved_model import load_model, model_temperature, predict_probabilities

TRAINING_OUTPUTS = ["emotion_model.h5", "emotion_model.json", "history.csv", "training_curves.png",
                    "confusion_matrix.png", "classification_report.txt", "metrics.json",
                    "sample_images.png", "validation_predictions.png", "emotion_model.onnx"]


def run_cli(script, *args, cwd=PROJECT_DIR):
    return subprocess.run([sys.executable, str(PROJECT_DIR / script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_training_writes_every_artifact(trained_run):
    output = trained_run["output"]
    for name in TRAINING_OUTPUTS:
        assert (output / name).is_file() and (output / name).stat().st_size > 0, name
    for name in (name for name in TRAINING_OUTPUTS if name.endswith(".png")):
        with Image.open(output / name) as chart:  # a whole picture with something drawn on it
            assert chart.format == "PNG" and chart.width >= 500 and chart.height >= 300, name
            assert np.asarray(chart.convert("L")).std() > 5, name
    metadata = json.loads((output / "emotion_model.json").read_text())
    assert metadata["class_names"] == ["happy", "sad"]
    assert metadata["input_shape"] == [48, 48, 1]
    assert metadata["training"]["epochs"] == 1 and metadata["training"]["seed"] == 1
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"happy", "sad"}
    assert metrics["accuracy"] == metadata["validation"]["accuracy"]
    history = (output / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_accuracy" in history[0] and "images_per_second" in history[0]


def test_predict_prints_one_line_per_image(trained_run, capsys):
    images = sorted((trained_run["data"] / "validation" / "happy").iterdir())[:2]
    status = predict.main([*map(str, images), "--model", str(trained_run["model"]), "--top-k", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 0
    assert len(lines) == 2
    assert predict.main([*map(str, images), "--model", str(trained_run["model"]), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for image, line, result in zip(images, lines, results):
        assert line.startswith(f"{image}: ")
        ranked = [part[:-2].split(" (") for part in line.split(": ", 1)[1].split(", ")]
        names, percents = [name for name, _ in ranked], [float(percent) for _, percent in ranked]
        # Both classes, highest first, the probabilities of one answer, the same as --json gives.
        assert sorted(names) == ["happy", "sad"] and percents == sorted(percents, reverse=True)
        assert sum(percents) == pytest.approx(100, abs=0.15)
        [face] = result["faces"]
        assert names[0] == face["emotion"] and percents[0] == pytest.approx(100 * face["confidence"], abs=0.05)
        assert percents == pytest.approx([100 * face["scores"][name] for name in names], abs=0.05)


def test_predict_json_schema(trained_run, capsys):
    image = sorted((trained_run["data"] / "validation" / "sad").iterdir())[0]
    assert predict.main([str(image), "--model", str(trained_run["model"]), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["file"] == str(image) and result["error"] is None
    [face] = result["faces"]
    assert face["box"] == [0, 0, 48, 48]
    assert face["emotion"] == max(face["scores"], key=face["scores"].get)
    assert set(face["scores"]) == {"happy", "sad"}
    assert face["confidence"] == pytest.approx(max(face["scores"].values()))
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-3)


def test_predict_goes_on_past_bad_files_and_exits_1(trained_run, tmp_path, capsys):
    good = sorted((trained_run["data"] / "validation" / "happy").iterdir())[0]
    text = tmp_path / "notes.txt.jpg"
    text.write_text("not an image")
    status = predict.main([str(tmp_path / "missing.jpg"), str(text), str(good),
                           "--model", str(trained_run["model"])])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out.strip().startswith(f"{good}: ")
    assert "missing.jpg: no such file" in captured.err
    assert "notes.txt.jpg: not an image" in captured.err


def test_detect_emotion_api(trained_run):
    image = sorted((trained_run["data"] / "validation" / "happy").iterdir())[0]
    emotion, confidence = er.detect_emotion(image, model_path=trained_run["model"])
    # The same answer as the saved model's calibrated probabilities for the image taken whole.
    model, metadata = load_model(trained_run["model"], runtime="auto")
    [expected] = predict_probabilities(model, load_face(image)[None], model_temperature(metadata))
    assert emotion == metadata["class_names"][int(expected.argmax())]
    assert confidence == round(float(expected.max()), 4)  # 0..1, as find_emotions gives it


def test_evaluate_accepts_a_subset_of_classes(trained_run, tmp_path, capsys):
    subset = tmp_path / "only_sad"
    subset.mkdir()
    (subset / "sad").symlink_to(trained_run["data"] / "validation" / "sad")
    output = tmp_path / "eval"
    status = er.main(["--evaluate", str(trained_run["model"]), "--test-dir", str(subset),
                      "--output-dir", str(output)])
    assert status == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class"} <= set(metrics)
    assert metrics["per_class"]["sad"]["support"] == 4 and metrics["per_class"]["happy"]["support"] == 0
    assert metrics["accuracy"] == pytest.approx(metrics["per_class"]["sad"]["recall"])
    for name in ("classification_report.txt", "confusion_matrix.png"):
        assert (output / name).is_file()
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_rejects_an_unknown_class(trained_run, tmp_path, capsys):
    test_dir = copy_sample(tmp_path / "data", classes=("happy", "fear"))
    status = er.main(["--evaluate", str(trained_run["model"]), "--test-dir", str(test_dir / "validation"),
                      "--output-dir", str(tmp_path / "eval")])
    assert status == 1
    assert "fear unknown to the model" in capsys.readouterr().err


def test_training_refuses_to_clobber_an_earlier_run(trained_run, capsys):
    before = (trained_run["model"]).read_bytes()
    status = er.main(["--data-dir", str(trained_run["data"]), "--output-dir", str(trained_run["output"]),
                      "--epochs", "1"])
    assert status == 1
    assert "already holds files" in capsys.readouterr().err
    assert trained_run["model"].read_bytes() == before


def test_default_output_folders_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "train" / "emotion_model.h5").write_text("an earlier run")
    folder, lock = claim_run_folder(None, er.DEFAULT_RUNS_DIR)
    lock.release()
    assert folder == er.DEFAULT_RUNS_DIR / "train2"
    assert (tmp_path / "runs" / "train" / "emotion_model.h5").read_text() == "an earlier run"


def test_training_into_the_shipped_models_folder_needs_overwrite(tiny_data, capsys):
    shipped = er.DEFAULT_MODEL_PATH.parent
    before = sorted(path.name for path in shipped.iterdir())
    assert er.main(["--data-dir", str(tiny_data), "--output-dir", str(shipped)]) == er.EXIT_USER_ERROR
    assert capsys.readouterr().err.strip() == \
        f"error: {shipped}: holds the shipped model; pass --overwrite to replace it"
    assert sorted(path.name for path in shipped.iterdir()) == before, "nothing written there, not even a lock"


def _missing_folder(root):
    return root / "absent"


def _no_train_folder(root):
    (root / "d" / "validation" / "happy").mkdir(parents=True)
    return root / "d"


def _empty_class_folder(root):
    data = copy_sample(root / "d", classes=("happy",))
    (data / "train" / "sad").mkdir()
    return data


def _classes_differ(root):
    data = copy_sample(root / "d")
    (data / "validation" / "happy").rename(data / "validation" / "joy")
    return data


@pytest.mark.parametrize("make, message", [
    (_missing_folder, "no such data folder"),
    (_no_train_folder, "has no train/ folder"),
    (_empty_class_folder, "sad: holds 0 images"),
    (_classes_differ, "classes differ from train/ (missing happy; extra joy)"),
])
def test_bad_training_data_is_one_clear_line(tmp_path, make, message):
    data = make(tmp_path)
    result = run_cli("emotion_recognition.py", "--data-dir", data, "--output-dir", tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_training_skips_non_image_files_among_images(tmp_path, capsys):
    data = copy_sample(tmp_path / "d", train_per_class=4, validation_per_class=2)
    (data / "train" / "happy" / "README.txt").write_text("not an image, and not named like one")
    (data / "train" / "sad" / "Thumbs.jpg").write_bytes(b"\x00\x01 junk")
    status = er.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out"), "--dry-run"])
    assert status == 0
    assert "Thumbs.jpg" in capsys.readouterr().err
    assert (tmp_path / "out" / "emotion_model.h5").is_file()


def test_predict_bad_model_and_missing_image_via_the_shell(trained_run, tmp_path):
    missing_model = run_cli("predict.py", SAMPLE_DIR / "validation" / "happy", "--model", tmp_path / "none.h5")
    assert missing_model.returncode == 1 and "Traceback" not in missing_model.stderr
    assert missing_model.stderr.strip() == f"error: {tmp_path / 'none.h5'}: no such model file"
    missing_image = run_cli("predict.py", tmp_path / "nope.png", "--model", trained_run["model"])
    assert missing_image.returncode == 1 and "Traceback" not in missing_image.stderr
    assert missing_image.stderr.strip() == f"error: {tmp_path / 'nope.png'}: no such file"


def test_fer2013_csv_import(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(3, "Training"), (0, "Training"), (6, "PublicTest"), (1, "PrivateTest"), (3, "PrivateTest")]
    lines = ["emotion,pixels,Usage"]
    for label, usage in rows:
        lines.append(f"{label},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    output = tmp_path / "folders"
    assert er.main(["--import-csv", str(csv_path), "--data-dir", str(output)]) == 0
    written = sorted(str(p.relative_to(output).parent) for p in output.rglob("*.png"))
    assert written == ["test/disgust", "test/happy", "train/angry", "train/happy", "validation/neutral"]
    first = np.asarray(to_grayscale(read_image(next((output / "train" / "happy").iterdir()))))
    assert first.shape == (48, 48)
    np.testing.assert_array_equal(first.ravel(), np.array(lines[1].split(",")[1].split(), dtype=np.uint8))
    # A second import into the same folder refuses rather than mixing two data sets.
    assert er.main(["--import-csv", str(csv_path), "--data-dir", str(output)]) == 1


def test_fer2013_csv_import_rejects_bad_rows(tmp_path, capsys):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    assert er.main(["--import-csv", str(csv_path), "--data-dir", str(tmp_path / "out")]) == 1
    assert "bad.csv:2: emotion 9 is not 0..6" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
