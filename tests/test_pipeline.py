"""facial_emotion.pipeline: what reaches the model (the crop of the returned box, the mirror image
with --tta, RGB video frames) and how its answer is named. A recording model stands in for the
network: it keeps every batch it is given and answers fixed scores."""

import json
import os
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

import predict
from facial_emotion import predict_cli
from facial_emotion.detection import Detection, FaceDetector, crop_face
from facial_emotion.images import load_face, read_image, to_grayscale
from facial_emotion.pipeline import Classifier, Pipeline

PROJECT_DIR = Path(__file__).resolve().parent.parent
ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
HAPPY_FACE = PROJECT_DIR / "dataset" / "validation" / "happy" / "PublicTest_10130075.jpg"
CLASSES = ["angry", "happy", "sad", "surprise"]


class RecordingModel:
    """Answers `scores` for every face and records each batch it was called with."""
    input_shape = (None, 48, 48, 1)

    def __init__(self, scores=(0.1, 0.2, 0.6, 0.1)):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.output_shape = (None, len(self.scores))
        self.batches = []

    def __call__(self, batch, training=False):
        assert training is False
        self.batches.append(np.array(batch, dtype=np.float32))
        return np.tile(self.scores, (len(batch), 1))


def metadata(**extra):
    return {"class_names": CLASSES, "temperature": 1.0, "temperature_tta": 1.0, **extra}


def test_the_model_gets_exactly_the_crop_of_the_returned_box():
    model = RecordingModel()
    pipeline = Pipeline(Classifier(model, metadata()), FaceDetector("haar"))
    result, = pipeline.images([ASTRONAUT])
    face, = result.faces
    x, y, w, h = face.box
    width, height = read_image(ASTRONAUT).size
    # The face is well off the photo's centre: a crop of anything else would not match.
    assert abs(x + w / 2 - width / 2) > 20 and abs(y + h / 2 - height / 2) > 80 and w < width / 3
    batch, = model.batches
    assert batch.shape == (1, 48, 48, 1)
    expected = crop_face(to_grayscale(read_image(ASTRONAUT)), face.box)
    np.testing.assert_array_equal(batch[0], expected)


def test_the_named_emotion_is_the_highest_score_with_its_own_confidence():
    for scores, expected in (((0.1, 0.2, 0.6, 0.1), "sad"), ((0.05, 0.9, 0.03, 0.02), "happy"),
                             ((0.1, 0.2, 0.3, 0.4), "surprise"), ((0.7, 0.1, 0.1, 0.1), "angry")):
        pipeline = Pipeline(Classifier(RecordingModel(scores), metadata()))
        result, = pipeline.images([HAPPY_FACE])
        face, = result.faces
        assert face.emotion == expected
        assert face.confidence == pytest.approx(max(scores), abs=1e-4)
        assert face.scores == pytest.approx(dict(zip(CLASSES, scores)), abs=1e-4)


def test_tta_shows_the_model_the_mirror_image_and_averages():
    model = RecordingModel()
    classifier = Classifier(model, metadata(temperature=2.0, temperature_tta=1.0), tta=True)
    face = load_face(HAPPY_FACE)
    scores = classifier.scores([face])
    plain, mirrored = model.batches
    np.testing.assert_array_equal(plain[0], face)
    np.testing.assert_array_equal(mirrored[0], face[:, ::-1])
    np.testing.assert_allclose(scores[0], model.scores, atol=1e-6)  # the TTA temperature, 1, applies
    model = RecordingModel()
    Classifier(model, metadata(), tta=False).scores([face])
    assert len(model.batches) == 1


@pytest.mark.parametrize("flags, calls", [([], 1), (["--tta"], 2)])
def test_predict_tta_flag_reaches_the_model(monkeypatch, capsys, flags, calls):
    model = RecordingModel()
    monkeypatch.setattr(predict_cli, "load_model", lambda *args, **kwargs: (model, metadata()))
    assert predict.main([str(HAPPY_FACE), "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"][0]["emotion"] == "sad"
    assert len(model.batches) == calls
    face = load_face(HAPPY_FACE)
    np.testing.assert_array_equal(model.batches[0][0], face)
    if calls == 2:
        np.testing.assert_array_equal(model.batches[1][0], face[:, ::-1])


class RecordingDetector:
    """Finds one face at a fixed box in every frame and keeps the frames it was shown."""

    def __init__(self, box):
        self.box, self.frames = box, []

    def detect(self, rgb, video=False):
        self.frames.append(np.array(rgb))
        return [Detection(list(self.box))]


def test_video_frames_reach_the_detector_and_model_as_rgb(tmp_path):
    bgr = np.full((120, 160, 3), 128, dtype=np.uint8)
    bgr[20:68, 30:78] = (0, 0, 255)  # pure red, in OpenCV's BGR order
    path = tmp_path / "red.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for _ in range(3):
        writer.write(bgr)
    writer.release()
    detector, model = RecordingDetector([30, 20, 48, 48]), RecordingModel()
    results = list(Pipeline(Classifier(model, metadata()), detector).video(path))
    assert [result.frame for result in results] == [0, 1, 2] and all(result.error is None for result in results)
    for frame in detector.frames:
        red, green, blue = frame[30:58, 40:68].reshape(-1, 3).mean(axis=0)
        assert red > 200 and green < 60 and blue < 60, (red, green, blue)
    # The model's grayscale crop is red's luminance (0.299 * 255), not blue's (0.114 * 255).
    centre = model.batches[0][0, 12:36, 12:36, 0].mean()
    assert centre == pytest.approx(0.299 * 255, abs=12)


def test_frames_follow_every_and_come_in_order():
    detector = RecordingDetector([10, 10, 40, 40])
    frames = [np.full((100, 120, 3), value, dtype=np.uint8) for value in range(0, 70, 10)]
    pipeline = Pipeline(Classifier(RecordingModel(), metadata()), detector)
    seen = [(index, faces[0].emotion) for index, rgb, faces in pipeline.frames(iter(frames), every=3)]
    assert seen == [(0, "sad"), (3, "sad"), (6, "sad")]
    assert [frame[0, 0, 0] for frame in detector.frames] == [0, 30, 60]


# ---------------------------------------------------------------------------------------------
# Records, batches, truncated videos, the order of inputs
# ---------------------------------------------------------------------------------------------
from facial_emotion import pipeline as pipeline_module  # noqa: E402
from facial_emotion.errors import OutOfResources, UserError  # noqa: E402
from facial_emotion.pipeline import Face, Result, collect_inputs  # noqa: E402


def test_records_carry_a_person_a_frame_and_an_annotated_copy_only_when_there_is_one():
    face = Face([1, 2, 3, 4], "sad", 0.6, {"sad": 0.6})
    assert face.to_dict() == {"box": [1, 2, 3, 4], "emotion": "sad", "confidence": 0.6, "scores": {"sad": 0.6}}
    face.person = 2
    assert face.to_dict()["person"] == 2
    photo = Result("a.jpg", [face])
    assert list(photo.to_dict()) == ["file", "faces", "error"]
    clip = Result("v.mp4", [], video=True, frame=3, time=0.12, annotated="v_emotions.mp4")
    assert clip.to_dict() == {"file": "v.mp4", "frame": 3, "time": 0.12, "faces": [], "error": None,
                              "annotated": "v_emotions.mp4"}


def test_a_result_counts_as_analysed_unless_its_error_left_it_without_faces():
    face = Face([0, 0, 1, 1], "sad", 0.6, {})
    assert Result("a.jpg").analysed and Result("a.jpg", [face], error="annotated copy failed").analysed
    assert not Result("a.jpg", error="broken image").analysed


def test_the_classifier_rounds_scores_and_refuses_a_model_with_other_classes():
    classifier = Classifier(RecordingModel((0.123456, 0.5, 0.276544, 0.1)), metadata())
    assert classifier.scores([]).shape == (0, len(CLASSES))
    face = classifier.face(np.array([1.9, 2.0, 30.2, 40.0]), np.array([0.123456, 0.5, 0.276544, 0.1]))
    assert face.box == [1, 2, 30, 40] and all(type(value) is int for value in face.box)
    assert (face.emotion, face.confidence) == ("happy", 0.5)
    assert face.scores == {"angry": 0.1235, "happy": 0.5, "sad": 0.2765, "surprise": 0.1}
    wrong = Classifier(RecordingModel((0.5, 0.5)), metadata())
    with pytest.raises(UserError) as refused:
        wrong.scores([load_face(HAPPY_FACE)])
    assert str(refused.value) == "the model answered 2 scores a face for 4 classes"


STOPPED_CLOCK = types.SimpleNamespace(monotonic=lambda: 100.0)  # no batch ever waits FLUSH_SECONDS


def test_a_batch_is_classified_once_it_holds_enough_faces(monkeypatch):
    monkeypatch.setattr(pipeline_module, "time", STOPPED_CLOCK)
    monkeypatch.setattr(pipeline_module, "PREDICT_BATCH_SIZE", 2)
    model = RecordingModel()
    given = Pipeline(Classifier(model, metadata()))
    seen = []
    for result in given.images([HAPPY_FACE] * 5):
        seen.append((result.faces[0].emotion, len(model.batches)))
    assert [len(batch) for batch in model.batches] == [2, 2, 1]
    assert seen == [("sad", 1), ("sad", 1), ("sad", 2), ("sad", 2), ("sad", 3)]  # handed over as each batch ends


def test_a_batch_is_classified_once_its_first_photo_waited_flush_seconds(monkeypatch):
    clock = iter([100.0, 100.5, 100.99, 101.0, 105.0, 105.5])  # when each photo starts a batch or is checked
    monkeypatch.setattr(pipeline_module, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    model = RecordingModel()
    list(Pipeline(Classifier(model, metadata())).images([HAPPY_FACE] * 4))
    # started at 100: waits at 100.5 and 100.99, ends at 101 (3 faces); the next starts at 105, and the input ends
    assert [len(batch) for batch in model.batches] == [3, 1]


def test_a_batch_holding_pictures_is_classified_once_they_hold_enough_pixels(monkeypatch):
    monkeypatch.setattr(pipeline_module, "time", STOPPED_CLOCK)
    monkeypatch.setattr(pipeline_module, "MAX_PIXELS_HELD", 48 * 48 * 2)
    model = RecordingModel()
    results = list(Pipeline(Classifier(model, metadata())).images([HAPPY_FACE] * 3, pictures=True))
    assert [len(batch) for batch in model.batches] == [2, 1]
    assert all(result.picture.shape == (48, 48, 3) and result.picture.dtype == np.uint8 for result in results)
    model = RecordingModel()
    results = list(Pipeline(Classifier(model, metadata())).images([HAPPY_FACE] * 3))
    assert [len(batch) for batch in model.batches] == [3] and all(result.picture is None for result in results)


def test_a_bad_photo_gets_its_error_in_order_and_running_out_of_resources_stops(tmp_path, monkeypatch):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    given = Pipeline(Classifier(RecordingModel(), metadata()))
    results = list(given.images([HAPPY_FACE, broken, HAPPY_FACE]))
    assert [result.file for result in results] == [str(HAPPY_FACE), str(broken), str(HAPPY_FACE)]
    assert [bool(result.faces) for result in results] == [True, False, True]
    assert results[1].error.startswith(f"{broken}: ")

    def exhausted(path):
        raise OutOfResources("out of file handles")

    monkeypatch.setattr(given, "read_photo", exhausted)
    with pytest.raises(OutOfResources):
        list(given.images([HAPPY_FACE]))


def write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for index in range(frames):
        writer.write(np.full((48, 64, 3), index * 10 % 250, dtype=np.uint8))
    writer.release()
    return path


def test_a_video_that_ends_early_says_so_after_the_frames_it_read(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", 10)
    given = Pipeline(Classifier(RecordingModel(), metadata()), RecordingDetector([8, 0, 48, 48]))
    results = list(given.video(path, every=2))
    assert [result.frame for result in results] == [0, 2, 4, 6, 8]
    assert [result.time for result in results] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert all(result.fps == 5 and result.frames_total == 10 and result.error is None for result in results)
    real = pipeline_module.open_video
    for claimed, truncated in ((11, False), (12, True)):  # 10 read of 11 is within the header's slack
        monkeypatch.setattr(pipeline_module, "open_video", lambda p: (real(p)[0], 10.0, claimed))
        *frames, last = list(given.video(path))
        if truncated:
            assert len(frames) == 10 and last.frame is None and last.video
            assert last.error == (f"{path}: ended after 10 of its 12 frames (truncated or damaged); the frames read "
                                  "were analysed")
        else:
            assert last.error is None and last.frame == 9


def test_a_video_without_frames_or_that_cannot_be_opened_is_one_error_result(tmp_path, monkeypatch):
    given = Pipeline(Classifier(RecordingModel(), metadata()), RecordingDetector([0, 0, 48, 48]))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    [result] = list(given.video(broken))
    assert result.video and result.frame is None and result.error.startswith(f"{broken}: ")
    path = write_video(tmp_path / "clip.mp4", 3)
    monkeypatch.setattr(pipeline_module, "read_timed_frames", lambda capture, fps: iter(()))  # opens, then no frame
    [result] = list(given.video(path))
    assert (result.video, result.frame, result.error) == (True, None, f"{path}: no frames could be read")


def test_images_before_a_video_come_out_before_its_frames_in_the_order_given(tmp_path):
    video = write_video(tmp_path / "clip.mp4", 2)
    given = Pipeline(Classifier(RecordingModel(), metadata()), RecordingDetector([8, 0, 48, 48]))
    order = [(Path(result.file).name, result.frame) for result in
             given.inputs([HAPPY_FACE, HAPPY_FACE, video, HAPPY_FACE])]
    assert order == [(HAPPY_FACE.name, None)] * 2 + [("clip.mp4", 0), ("clip.mp4", 1), (HAPPY_FACE.name, None)]


def test_collect_inputs_walks_folders_and_keeps_files_as_given(tmp_path):
    folder = tmp_path / "photos"
    (folder / "deeper").mkdir(parents=True)
    for name in ("b.jpg", "a.png", "notes.txt", "deeper/c.mp4"):
        (folder / name).write_bytes(b"x")
    os.mkfifo(folder / "pipe.jpg")
    skipped = []
    found = collect_inputs([str(tmp_path / "given.txt"), str(folder)], skipped)
    assert found == [tmp_path / "given.txt", folder / "a.png", folder / "b.jpg", folder / "deeper" / "c.mp4"]
    assert skipped == [(folder / "pipe.jpg", "not a regular file (a FIFO, socket or device)")]
