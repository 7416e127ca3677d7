"""The Python API: find_emotions on every input kind, track_emotions on a video, detect_emotion's
scale, and the refusals of bad arguments."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import facial_emotion
from facial_emotion import detect_emotion, find_emotions, track_emotions
from facial_emotion.errors import UserError

from conftest import PROJECT_DIR

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
HAPPY_FACE = PROJECT_DIR / "dataset" / "validation" / "happy" / "PublicTest_10130075.jpg"


@pytest.fixture(scope="module")
def from_path():
    [face] = find_emotions(PHOTO)
    return face


def rgb_array():
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def test_a_path_a_string_path_and_a_pil_image_give_the_same_face(from_path):
    assert from_path.emotion == "happy" and 0.9 < from_path.confidence <= 1
    assert find_emotions(str(PHOTO)) == [from_path]
    with Image.open(PHOTO) as image:
        assert find_emotions(image) == [from_path]


def test_an_rgb_array_gives_the_photo_s_face(from_path):
    [face] = find_emotions(rgb_array())
    assert face.box == from_path.box and face.emotion == from_path.emotion
    assert face.confidence == pytest.approx(from_path.confidence, abs=1e-4)


def test_a_grayscale_array_is_read_as_gray_not_as_colour(from_path):
    gray = np.asarray(Image.open(PHOTO).convert("L"))
    [face] = find_emotions(gray)
    assert abs(face.box[0] - from_path.box[0]) <= 6 and face.emotion == "happy"


def test_channels_are_taken_as_rgb_not_bgr():
    rgb = rgb_array()
    [as_rgb], [as_bgr] = find_emotions(rgb), find_emotions(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert as_rgb.scores != as_bgr.scores  # the colour order reaches the detector and the model


def test_detect_emotion_answers_on_the_zero_to_one_scale_and_takes_arrays():
    emotion, confidence = detect_emotion(HAPPY_FACE)
    assert emotion == "happy" and 0.5 < confidence <= 1.0
    array = np.asarray(Image.open(HAPPY_FACE).convert("L"))
    assert detect_emotion(array) == (emotion, confidence)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Six frames of the photo at 10 frames a second."""
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    picture = cv2.cvtColor(rgb_array(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (picture.shape[1], picture.shape[0]))
    for _ in range(6):
        writer.write(picture)
    writer.release()
    return path


def test_track_emotions_yields_frames_in_order_with_their_time_and_people(clip, from_path):
    frames = list(track_emotions(clip, every=2))
    assert [frame.index for frame in frames] == [0, 2, 4]
    assert [frame.time for frame in frames] == pytest.approx([0.0, 0.2, 0.4])
    assert all(len(frame.faces) == 1 and frame.faces[0].person == 1 for frame in frames)
    # The face is found by the detector, not the frame taken whole: its box is the photo's face's.
    assert np.abs(np.subtract(frames[0].faces[0].box, from_path.box)).max() <= 6
    assert [frame.index for frame in track_emotions(clip)] == [0, 1, 2, 3, 4, 5]  # every frame by default


def test_tta_is_off_unless_asked_and_changes_the_answer_when_asked(clip, from_path):
    assert find_emotions(PHOTO, tta=False) == [from_path]
    [mirrored] = find_emotions(PHOTO, tta=True)
    assert mirrored.box == from_path.box and mirrored.scores != from_path.scores
    plain, averaged = next(iter(track_emotions(clip))), next(iter(track_emotions(clip, tta=True)))
    assert plain.faces[0].scores == next(iter(track_emotions(clip, tta=False))).faces[0].scores
    assert averaged.faces[0].scores != plain.faces[0].scores


@pytest.mark.parametrize("call, error, words", [
    (lambda: find_emotions(3), TypeError, "path, a numpy array or a PIL image"),
    (lambda: find_emotions(open(PHOTO, "rb")), TypeError, "BufferedReader"),
    (lambda: find_emotions(rgb_array().astype(np.float32)), TypeError, "uint8"),
    (lambda: find_emotions(np.zeros((40, 40, 4), np.uint8)), ValueError, "H x W x 3"),
    (lambda: find_emotions(np.zeros((40,), np.uint8)), ValueError, "H x W"),
    (lambda: find_emotions(np.zeros((8, 8), np.uint8)), ValueError, "too small"),
    (lambda: detect_emotion(np.zeros((15, 4000), np.uint8)), ValueError, "too small"),
    (lambda: find_emotions(PHOTO, runtime="bogus"), ValueError, "runtime='bogus'"),
    (lambda: detect_emotion(HAPPY_FACE, runtime="bogus"), ValueError, "runtime='bogus'"),
    (lambda: find_emotions(PHOTO, detector="yolo"), ValueError, "detector='yolo'"),
    (lambda: detect_emotion(PHOTO, model_path=3), TypeError, "model_path must be a path, not int"),
    (lambda: list(track_emotions(PHOTO, every=0)), ValueError, "every=0"),
    (lambda: track_emotions(PHOTO, every=True), ValueError, "every=True: must be a whole number of at least 1"),
    (lambda: track_emotions(PHOTO, every=2.5), ValueError, "every=2.5: must be a whole number of at least 1"),
    (lambda: track_emotions(PHOTO, detector="yolo"), ValueError, "detector='yolo': choose one of blazeface"),
    (lambda: list(track_emotions(rgb_array())), TypeError, "video must be a path, not ndarray"),
    (lambda: list(track_emotions(PROJECT_DIR / "README.md")), UserError, "not a video file"),
    (lambda: find_emotions(PROJECT_DIR / "README.md"), UserError, "not an image file"),
])
def test_bad_arguments_are_refused_with_a_clear_message(call, error, words):
    with pytest.raises(error, match=None) as raised:
        call()
    assert words in str(raised.value)


def test_importing_the_package_loads_neither_opencv_nor_onnx_runtime():
    code = ("import sys, facial_emotion, facial_emotion.errors, facial_emotion.files, facial_emotion.training_cli; "
            "print(sorted(m for m in ('cv2', 'onnxruntime', 'tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_DIR)
    assert result.stdout.strip() == "[]", result.stderr
    assert callable(facial_emotion.find_emotions)
    with pytest.raises(AttributeError):
        facial_emotion.no_such_function


def test_too_small_is_the_caller_s_value_error_for_pictures_and_the_file_s_user_error_for_paths(tmp_path):
    for picture in (Image.new("L", (8, 8)), np.zeros((8, 8), np.uint8)):
        with pytest.raises(ValueError) as caught:
            find_emotions(picture)
        assert str(caught.value) == "too small to hold a face (8x8 pixels)"
    path = tmp_path / "tiny.png"
    Image.new("L", (8, 12)).save(path)
    with pytest.raises(UserError) as caught:
        find_emotions(path)
    assert str(caught.value) == f"{path}: too small to hold a face (8x12 pixels)"


def test_load_classifier_picks_a_runtime_itself_unless_told():
    from facial_emotion.api import load_classifier

    assert load_classifier().class_names == load_classifier(runtime="auto").class_names
    assert len(load_classifier().class_names) == 7
    assert load_classifier().tta is False and load_classifier(tta=True).tta is True


def test_a_model_is_loaded_once_and_again_when_one_of_its_files_changes(tmp_path):
    import json
    import os
    import shutil

    from facial_emotion.api import load_classifier

    for suffix in (".h5", ".json", ".onnx"):
        shutil.copy2(PROJECT_DIR / "models" / f"emotion_model{suffix}", tmp_path / f"emotion_model{suffix}")
    path = tmp_path / "emotion_model.h5"
    first = load_classifier(path)
    assert load_classifier(path).model is first.model  # from the cache
    record = json.loads((tmp_path / "emotion_model.json").read_text())
    record["temperature"] = 2.5
    (tmp_path / "emotion_model.json").write_text(json.dumps(record))
    os.utime(tmp_path / "emotion_model.json", ns=(1, 1))  # a new stamp even within the clock's resolution
    changed = load_classifier(path)
    assert changed.temperature == 2.5 and changed.model is not first.model


def test_a_bad_choice_lists_the_choices():
    with pytest.raises(ValueError) as caught:
        find_emotions(PHOTO, detector="yolo")
    assert str(caught.value) == "detector='yolo': choose one of blazeface, haar, mtcnn"
