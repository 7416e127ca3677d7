"""Prediction from Python.

    from facial_emotion import detect_emotion, find_emotions, track_emotions
    detect_emotion("face.png")        # ('happy', 0.954): the whole image taken as the face
    find_emotions("group.jpg")        # [Face(box=[x, y, w, h], emotion='happy', confidence=0.93, ...)]
    find_emotions(array)              # a numpy array: H x W grayscale or H x W x 3 RGB, uint8
    find_emotions(Image.open(...))    # a PIL image
    for frame in track_emotions("clip.mp4", every=5):
        print(frame.time, [(face.person, face.emotion, face.confidence) for face in frame.faces])

Confidence is a calibrated probability from 0 to 1 everywhere in Python; the command line prints
it as a percentage. All run on ONNX Runtime, without TensorFlow, when the model's ONNX export
matches it. The model and detector are loaded once and reloaded when a model file changes.
Bad arguments raise ValueError or TypeError; a file that cannot be read raises
facial_emotion.errors.UserError, whose message names the file and says why in one line.
"""

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facial_emotion.detection import DETECTORS, FaceDetector
from facial_emotion.errors import UserError
from facial_emotion.images import check_size, preprocess_face, read_image, to_grayscale, to_rgb
from facial_emotion.pipeline import Classifier, Pipeline, Result
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, RUNTIMES, load_model, metadata_path, onnx_path
from facial_emotion.tracking import FaceTracker


@dataclass
class Frame:
    """One analysed frame of a video: its index (from 0), its time in seconds, and its faces, each
    with the `person` it belongs to (numbered from 1, the same person across frames)."""
    index: int
    time: float
    faces: list = field(default_factory=list)


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


def check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r}: choose one of {', '.join(choices)}")


def load_classifier(model_path=DEFAULT_MODEL_PATH, runtime="auto", tta=False):
    """The Classifier of a saved model, from the cache unless its .h5, .json or .onnx changed."""
    check_choice(runtime, "runtime", RUNTIMES)
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a path, not {type(model_path).__name__}")
    model_path = Path(model_path).resolve()
    stamps = tuple(file_stamp(path) for path in (model_path, metadata_path(model_path), onnx_path(model_path)))
    return Classifier(*_cached_model(str(model_path), runtime, stamps), tta=tta)


def as_image(image):
    """A path, a numpy array (H x W grayscale or H x W x 3 RGB, uint8) or a PIL image -> (a name
    for messages, an upright PIL image of at least MIN_IMAGE_SIDE pixels a side)."""
    if isinstance(image, (str, os.PathLike)):
        name, picture = str(image), read_image(image)
    elif isinstance(image, Image.Image):
        name, picture = "image", image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"an image array must be uint8 (0..255), not {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"an image array must be H x W (grayscale) or H x W x 3 (RGB), not {image.shape}")
        name, picture = "array", Image.fromarray(np.ascontiguousarray(image))
    else:
        raise TypeError(f"image must be a path, a numpy array or a PIL image, not {type(image).__name__}")
    try:
        check_size(name, picture.width, picture.height)
    except UserError as error:  # for an array or a PIL image it is the caller's argument
        if name in ("image", "array"):
            raise ValueError(str(error).removeprefix(f"{name}: ")) from None
        raise
    return name, picture


def detect_emotion(image, model_path=DEFAULT_MODEL_PATH, runtime="auto"):
    """The emotion of the face in an image taken whole (a path, an array or a PIL image, as for
    find_emotions): (emotion, confidence 0..1)."""
    classifier = load_classifier(model_path, runtime)
    _, picture = as_image(image)
    face = classifier.face([0, 0, 0, 0], classifier.scores([preprocess_face(to_grayscale(picture))])[0])
    return face.emotion, face.confidence


def find_emotions(image, model_path=DEFAULT_MODEL_PATH, detector="blazeface", runtime="auto", tta=False):
    """Every face in a photo, largest first: a list of Face records (box [x, y, w, h] in the
    photo's pixels, emotion, confidence 0..1, scores of every class). `image` is a path, a numpy
    array (H x W grayscale or H x W x 3 RGB, uint8) or a PIL image. A photo with no face gives
    an empty list."""
    check_choice(detector, "detector", DETECTORS)
    pipeline = Pipeline(load_classifier(model_path, runtime, tta), _cached_detector(detector))
    name, picture = as_image(image)
    result = Result(name)
    pipeline.classify([(result, pipeline.find(to_rgb(picture)))])
    return result.faces


def track_emotions(video, every=1, model_path=DEFAULT_MODEL_PATH, detector="blazeface", runtime="auto", tta=False):
    """Yields a Frame (index, time in seconds, faces) for every `every`-th frame of a video file,
    in order; each face carries its `person`. A video that cannot be read raises UserError."""
    check_choice(detector, "detector", DETECTORS)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r}: must be a whole number of at least 1")
    if not isinstance(video, (str, os.PathLike)):
        raise TypeError(f"video must be a path, not {type(video).__name__}")
    pipeline = Pipeline(load_classifier(model_path, runtime, tta), _cached_detector(detector),
                        make_tracker=FaceTracker)
    return _frames(pipeline.video(video, every))  # the checks above run at the call, not at the first frame


def _frames(results):
    for result in results:
        if result.error is not None:
            raise UserError(result.error)
        yield Frame(result.frame, result.time, result.faces)
