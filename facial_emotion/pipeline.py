"""Detect, crop, classify: one pipeline for photos and video frames alike, with typed results.

Photos are read one by one and their faces classified in batches across photos; a video's
frames are classified one frame at a time, so results come out as they are done. Either way a
picture goes through `Pipeline.find` (detect and crop) and `Pipeline.classify` (one model call
for many faces).
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facial_emotion.detection import find_faces
from facial_emotion.console import quiet_native_stderr
from facial_emotion.errors import OutOfResources, UserError
from facial_emotion.files import walk_files
from facial_emotion.images import check_size, is_image_file, is_video_file, read_image, to_rgb
from facial_emotion.saved_model import PREDICT_BATCH_SIZE, model_temperature, predict_probabilities
from facial_emotion.video import open_video, read_timed_frames

# Faces are classified in batches of up to PREDICT_BATCH_SIZE, but a batch is finished once its
# first image has waited this long, so results keep coming from a slow disk or a folder of
# large photos (detection takes 20-100 ms a photo).
FLUSH_SECONDS = 1.0
# A video whose frames end before this share of the count its header gives is truncated or
# damaged: an error at the end. Headers that estimate the count (from the duration) are off by a
# frame or two, never by 5%.
TRUNCATED_SHARE = 0.95
# When a sink needs the pictures (annotated copies), the images of a batch wait in memory until
# their faces are classified; a batch is finished once they hold this many pixels (150 MB as
# RGB), whatever their number.
MAX_PIXELS_HELD = 50_000_000


@dataclass
class Face:
    """One face: its box [x, y, w, h] in the picture's pixels, the emotion with the highest score,
    that score (calibrated probability, 0..1), every class's score, and in a video the person it
    belongs to (`person`, numbered from 1 in order of appearance)."""
    box: list
    emotion: str
    confidence: float
    scores: dict
    person: int = None

    def to_dict(self):
        record = {"box": self.box, "emotion": self.emotion, "confidence": self.confidence, "scores": self.scores}
        if self.person is not None:
            record["person"] = self.person
        return record


@dataclass
class Result:
    """What one photo or one analysed video frame gave: its faces, largest first, or the error
    that stopped it. A video's results carry the frame's index and time (seconds), the rate of
    the analysed frames and the video's frame count (0: unknown); a video that could not be read
    gives one result with its error and frame None. `picture` (RGB uint8) is attached only when
    a sink asked for pixels; `annotated` names the annotated copy once one is written."""
    file: str
    faces: list = field(default_factory=list)
    error: str = None
    video: bool = False
    frame: int = None
    time: float = None
    annotated: str = None
    fps: float = field(default=None, repr=False)
    frames_total: int = field(default=None, repr=False)
    picture: object = field(default=None, repr=False, compare=False)

    @property
    def analysed(self):
        """Its faces were looked for (an annotated copy that could not be written still counts)."""
        return self.error is None or bool(self.faces)

    def to_dict(self):
        record = {"file": self.file}
        if self.video:
            record.update(frame=self.frame, time=self.time)
        record.update(faces=[face.to_dict() for face in self.faces], error=self.error)
        if self.annotated is not None:
            record["annotated"] = self.annotated
        return record


class Classifier:
    """The model with its class names and temperature; classifies faces in batches."""

    def __init__(self, model, metadata, tta=False):
        self.model = model
        self.class_names = list(metadata["class_names"])
        self.temperature = model_temperature(metadata, tta)
        self.tta = tta

    def scores(self, faces):
        """Calibrated probabilities [n, classes] of a list of model inputs."""
        if not faces:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        scores = predict_probabilities(self.model, np.stack(faces), self.temperature, self.tta)
        if scores.shape[1] != len(self.class_names):
            raise UserError(f"the model answered {scores.shape[1]} scores a face for {len(self.class_names)} classes")
        return scores

    def face(self, box, scores):
        best = int(np.argmax(scores))
        return Face([int(value) for value in box], self.class_names[best], round(float(scores[best]), 4),
                    {name: round(float(score), 4) for name, score in zip(self.class_names, scores)})


class Pipeline:
    """Detector, classifier and, for videos, a tracker that tells people apart."""

    def __init__(self, classifier, detector=None, make_tracker=None):
        self.classifier, self.detector, self.make_tracker = classifier, detector, make_tracker

    @property
    def class_names(self):
        return self.classifier.class_names

    def find(self, image, video=False):
        """Detect and crop: [(Detection, model input)] of one upright PIL image or video frame."""
        return find_faces(image, self.detector, video)

    def read_photo(self, path):
        """A photo file read, checked and searched: (its upright image, [(Detection, model input)])."""
        image = read_image(path)
        check_size(path, image.width, image.height)
        return image, self.find(image)

    def classify(self, pending):
        """Fill in the faces of many results with one model call: pending is
        [(result, [(Detection, model input)])]."""
        scores = iter(self.classifier.scores([face for _, found in pending for _, face in found]))
        for result, found in pending:
            result.faces = [self.classifier.face(detection.box, next(scores)) for detection, _ in found]

    def images(self, paths, pictures=False):
        """Yields one Result per image path, in order; a bad file gets its error, not an exception.
        With `pictures`, each result carries its image as an RGB array.

        A batch is finished when it holds PREDICT_BATCH_SIZE faces, when its first image has
        waited FLUSH_SECONDS, or, with pictures, when they hold MAX_PIXELS_HELD.
        """
        waiting, pending = [], []
        faces_held = pixels_held = 0
        started = None
        for path in paths:
            result = Result(str(path))
            waiting.append(result)
            started = started or time.monotonic()
            try:
                image, found = self.read_photo(path)
            except OutOfResources:
                raise  # the process's, not the file's: the run stops here
            except UserError as error:
                result.error = str(error)
            else:
                pending.append((result, found))
                faces_held += len(found)
                if pictures:
                    result.picture = np.asarray(to_rgb(image))
                    pixels_held += image.width * image.height
            image = None  # held as the result's picture if a sink draws on it; otherwise done with
            if (not pending or faces_held >= PREDICT_BATCH_SIZE or pixels_held >= MAX_PIXELS_HELD
                    or time.monotonic() - started >= FLUSH_SECONDS):
                self.classify(pending)
                yield from self._hand_over(waiting, pending)
                faces_held = pixels_held = 0
                started = None
        self.classify(pending)
        yield from self._hand_over(waiting, pending)

    @staticmethod
    def _hand_over(waiting, pending):
        batch = waiting[:]
        waiting.clear()
        pending.clear()
        yield from batch

    def frames(self, frames, every=1):
        """Yields (index, RGB frame, faces) for every `every`-th frame of an iterable of RGB frames,
        each face with its `person` when the pipeline has a tracker: the loop shared by video
        files and the webcam."""
        tracker = self.make_tracker() if self.make_tracker else None
        for index, rgb in enumerate(frames):
            if index % every:
                continue
            result = Result("", video=True, frame=index)
            found = self.find(Image.fromarray(rgb), video=True)
            self.classify([(result, found)])
            if tracker is not None:
                tracks = tracker.update([face.box for face in result.faces],
                                        [detection.keypoints for detection, _ in found])
                for face, track in zip(result.faces, tracks):
                    face.person = int(track)
            yield index, rgb, result.faces

    def video(self, path, every=1, pictures=False):
        """Yields one Result per analysed frame (with its RGB frame as `picture` when asked); a
        video that cannot be read, or stops being readable, ends with one result with its error."""
        path = Path(path)
        try:
            capture, fps, frames_total = open_video(path)
        except UserError as error:
            yield Result(str(path), error=str(error), video=True)
            return
        analysed, problem, read, time = 0, None, [0], [0.0]

        def counted(frames):  # frames are read one at a time: time[0] is the latest frame's
            for frame, time[0] in frames:
                read[0] += 1
                yield frame

        try:
            for index, rgb, faces in self.frames(counted(read_timed_frames(capture, fps)), every):
                analysed += 1
                yield Result(str(path), faces, video=True, frame=index, time=round(time[0], 3),
                             fps=fps / every, frames_total=frames_total, picture=rgb if pictures else None)
        except UserError as error:
            problem = str(error)
        finally:
            with quiet_native_stderr():
                capture.release()
        if problem is None and analysed and read[0] < frames_total * TRUNCATED_SHARE - 1:
            problem = (f"{path}: ended after {read[0]} of its {frames_total} frames (truncated or damaged); "
                       "the frames read were analysed")
        if problem is not None or not analysed:
            yield Result(str(path), error=problem or f"{path}: no frames could be read", video=True)

    def inputs(self, paths, every=1, pictures=False):
        """Images in batches, videos frame by frame, in the order given: one result at a time."""
        images = []
        for path in [*paths, None]:
            if path is None or is_video_file(path):
                yield from self.images(images, pictures)
                images = []
                if path is not None:
                    yield from self.video(path, every, pictures)
            else:
                images.append(path)


def collect_inputs(paths, skipped=None):
    """Files as given; folders walked recursively for image and video files. What a walk passes
    over (FIFOs and the like) is appended to `skipped` as (path, reason)."""
    inputs = []
    for path in map(Path, paths):
        if os.path.isdir(path):
            inputs += walk_files(path, lambda name: is_image_file(name) or is_video_file(name), skipped=skipped)
        else:
            inputs.append(path)
    return inputs
