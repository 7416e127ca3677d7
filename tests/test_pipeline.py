"""facial_emotion.pipeline: what reaches the model (the crop of the returned box, the mirror image
with --tta, RGB video frames) and how its answer is named. A recording model stands in for the
network: it keeps every batch it is given and answers fixed scores."""

import json
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
