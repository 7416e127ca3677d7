"""Prediction from Python.

    from facial_emotion import detect_emotion, find_emotions
    detect_emotion("face.png")        # ('happy', 95.4): the whole image taken as the face
    find_emotions("group.jpg")        # [Face(box=[x, y, w, h], emotion='happy', confidence=0.93, ...)]

Both run on ONNX Runtime, without TensorFlow, when the model's ONNX export matches it. The model
and detector are loaded once and reloaded when a model file changes.
"""

import functools
import os
from pathlib import Path

from facial_emotion.detection import FaceDetector
from facial_emotion.images import load_face
from facial_emotion.pipeline import Classifier, Pipeline, Result
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, load_model, metadata_path, onnx_path


def file_stamp(path):
    """What tells a changed file from the one cached: modification time and size."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


@functools.lru_cache(maxsize=4)
def _cached_model(model_path, runtime, file_stamps):
    return load_model(model_path, runtime=runtime)


@functools.lru_cache(maxsize=2)
def _cached_detector(kind):
    return FaceDetector(kind)


def load_classifier(model_path=DEFAULT_MODEL_PATH, runtime="auto", tta=False):
    """The Classifier of a saved model, from the cache unless its .h5, .json or .onnx changed."""
    model_path = Path(model_path).resolve()
    stamps = tuple(file_stamp(path) for path in (model_path, metadata_path(model_path), onnx_path(model_path)))
    return Classifier(*_cached_model(str(model_path), runtime, stamps), tta=tta)


def detect_emotion(image_path, model_path=DEFAULT_MODEL_PATH, runtime="auto"):
    """The emotion of the face in an image file, taken whole: (emotion, confidence in percent)."""
    classifier = load_classifier(model_path, runtime)
    face = classifier.face([0, 0, 0, 0], classifier.scores([load_face(image_path)])[0])
    return face.emotion, round(face.confidence * 100, 1)


def find_emotions(image_path, model_path=DEFAULT_MODEL_PATH, detector="blazeface", runtime="auto", tta=False):
    """Every face in a photo, largest first: a list of Face records (box [x, y, w, h] in the
    photo's pixels, emotion, confidence 0..1, scores of every class). A photo with no face gives
    an empty list; a file that cannot be read raises facial_emotion.errors.UserError."""
    pipeline = Pipeline(load_classifier(model_path, runtime, tta), _cached_detector(detector))
    result = Result(str(image_path))
    pipeline.classify([(result, pipeline.read_photo(image_path)[1])])
    return result.faces
