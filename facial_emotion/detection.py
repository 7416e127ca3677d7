"""Finding faces in a picture and cutting them out as the model's input.

Detectors: BlazeFace (blazeface.py; its ONNX file ships in models/, runs on ONNX Runtime), the
default; OpenCV's Haar cascade (ships inside the opencv-python-headless 4.x wheel); and MTCNN
(weights inside the mtcnn wheel, runs on TensorFlow). Nothing is downloaded. Boxes are
[x, y, w, h] in the picture's pixels, largest first, all in Haar's framing, so that one crop
margin gives FER-2013's framing whichever detector found the face.
"""

import math
import os
import cv2
import numpy as np
from PIL import Image

from facial_emotion.boxes import MIN_FACE_FRACTION, MIN_FACE_SIDE, Detection, clip_box, largest_first
from facial_emotion.console import quiet_native_stderr
from facial_emotion.errors import UserError, require_extra
from facial_emotion.images import preprocess_face, to_grayscale, to_rgb

DETECTORS = ("blazeface", "haar", "mtcnn")
# Images no larger than this on both sides are taken to be face crops already (FER-2013 is 48
# px; people's crops of it or similar data sets go up to about 96 px) and are classified whole.
MAX_CROP_SIDE = 96
# Face detection runs on a copy no larger than this on its longer side: a 12-megapixel phone
# photo would take seconds in the Haar cascade; boxes are scaled back to original pixels.
DETECTION_MAX_SIDE = 1024
# Margin added on each side of a detected face before cropping, as a share of the box's size,
# so that the crop frames the face as FER-2013 does: on 700 FER-2013 validation faces placed in
# larger pictures, Haar's box side was a median 0.953 of the face's (quartiles 0.885-1.005,
# centred), which takes 2.5% a side (tests/benchmarks/haar_framing.py).
FACE_MARGIN = 0.025
# MTCNN's own confidence below which a face is dropped: lower let hands and patterns through.
MTCNN_MIN_CONFIDENCE = 0.9


class FaceDetector:
    """One of DETECTORS, loaded once; `detect(rgb)` finds the faces of an RGB uint8 array.
    `threads`: ONNX Runtime's threads for BlazeFace (default: blazeface.PHOTO_THREADS for
    photos, THREADS for video); a Ray actor passes the CPUs it holds."""

    def __init__(self, kind="blazeface", threads=None):
        self.kind, self.threads = kind, threads
        if kind == "blazeface":
            from facial_emotion import blazeface

            try:
                self.photo_detector = blazeface.BlazeFaceDetector(threads=threads or blazeface.PHOTO_THREADS)
            except ValueError as error:
                raise UserError(str(error)) from None
            self.video_detector = None  # made for the first video frame: a photo needs none
        elif kind == "haar":
            import cv2

            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            self.cascade = cv2.CascadeClassifier(path)
            if self.cascade.empty():
                raise UserError(f"{path}: OpenCV's face cascade is missing (is opencv-python-headless<5 installed?)")
        elif kind == "mtcnn":
            require_extra("tensorflow", "--detector mtcnn", "train")
            require_extra("mtcnn", "--detector mtcnn", "train")
            with quiet_native_stderr():
                from facial_emotion import keras_runtime  # noqa: F401  TensorFlow, quietly
                from mtcnn import MTCNN
            self.mtcnn = MTCNN()
        else:
            raise UserError(f"unknown detector {kind!r} (choose from {', '.join(DETECTORS)})")

    def detect(self, rgb, video=False):
        """Detections in an RGB uint8 array [h, w, 3], in its pixels, largest first; `video`: a
        frame of a video, where BlazeFace looks for faces of 48 px and more only."""
        if self.kind == "blazeface":  # it brings the picture to its own scales
            if not video:
                return self.photo_detector.detect(rgb)
            if self.video_detector is None:
                from facial_emotion import blazeface

                # Video frames skip faces under 48 px, a third of the work (blazeface.VIDEO_MIN_FACE_SIDE),
                # and the second look at half-scoring boxes (blazeface.CANDIDATE_SCORE).
                self.video_detector = blazeface.BlazeFaceDetector(min_face=blazeface.VIDEO_MIN_FACE_SIDE,
                                                                  threads=self.threads or blazeface.THREADS,
                                                                  second_look=False)
            return self.video_detector.detect(rgb)
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECTION_MAX_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(size) < MIN_FACE_SIDE:  # a sliver (40000x16): no face fits once it is brought down
            return []
        small = rgb if scale == 1.0 else np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        found = self._detect_haar(small) if self.kind == "haar" else self._detect_mtcnn(small)
        detections = []
        for detection in found:
            box = clip_box([round(value / scale) for value in detection.box], width, height)
            if box[2] > 0 and box[3] > 0:
                keypoints = None if detection.keypoints is None else detection.keypoints / scale
                detections.append(Detection(box, detection.score, keypoints))
        return largest_first(detections)

    def _detect_haar(self, rgb):
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(MIN_FACE_SIDE, round(min(gray.shape) * MIN_FACE_FRACTION))
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return [Detection(list(map(int, box))) for box in found]

    def _detect_mtcnn(self, rgb):
        with quiet_native_stderr():
            found = self.mtcnn.detect_faces(rgb)
        order = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
        return [Detection(list(map(int, face["box"])), float(face.get("confidence", 1.0)),
                          np.array([face["keypoints"][name] for name in order], dtype=np.float32)
                          if set(order) <= set(face.get("keypoints", {})) else None)
                for face in found if face.get("confidence", 1.0) >= MTCNN_MIN_CONFIDENCE]


def crop_face(gray, box, margin=FACE_MARGIN):
    """The face in `box` with a margin, from a grayscale PIL image, preprocessed for the model."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    region = (max(0, x - dx), max(0, y - dy), min(gray.width, x + w + dx), min(gray.height, y + h + dy))
    return preprocess_face(gray.crop(region))


def face_input(gray, detection, margin=FACE_MARGIN):
    """The model input of a detected face: with eye keypoints, the face turned upright by its eye
    line (BlazeFace, MTCNN; +3.8 points on faces tilted 15-30 degrees, +0.4 on upright ones:
    tests/benchmarks/alignment.py), else the box's crop."""
    if detection.keypoints is None:
        return crop_face(gray, detection.box, margin)
    return preprocess_face(Image.fromarray(align_crop(np.asarray(gray), detection, margin)))


def find_faces(image, detector, video=False):
    """The faces of one upright PIL image (any mode): [(Detection, model input)], largest first.

    A small image is a face crop already; with no detector (--no-detect) every image is taken
    whole.
    """
    gray = to_grayscale(image)
    if detector is None or max(image.size) <= MAX_CROP_SIDE:
        return [(Detection([0, 0, image.width, image.height]), preprocess_face(gray))]
    detections = detector.detect(np.asarray(to_rgb(image)), video)
    return [(detection, face_input(gray, detection)) for detection in detections]


def eye_angle(detection):
    """The eye line's angle in degrees, -90..90, from the eye on the image's left to the other;
    positive when the line runs down to the right, i.e. the head tilts clockwise. Taken modulo
    180 so that a mirrored picture (a selfie camera), where the person's right eye is on the
    image's right, is not turned upside down. 0 for a detection without keypoints (Haar's)."""
    if detection.keypoints is None:
        return 0.0
    (first_x, first_y), (second_x, second_y) = detection.keypoints[0], detection.keypoints[1]
    angle = math.degrees(math.atan2(second_y - first_y, second_x - first_x))
    return (angle + 90) % 180 - 90


def align_crop(image, detection, margin=FACE_MARGIN, size=None):
    """The face upright: a square around the box centre, side = box side * (1 + 2 * margin),
    rotated about that centre so the eye line is level. Gray [h, w] or RGB [h, w, 3]; pixels
    beyond the picture repeat its edge. With `size`, resized to size x size (INTER_AREA)."""
    x, y, width, height = detection.box
    centre = (x + width / 2, y + height / 2)
    side = max(1, round(max(width, height) * (1 + 2 * margin)))
    matrix = cv2.getRotationMatrix2D(centre, eye_angle(detection), 1.0)
    matrix[:, 2] += (side / 2 - centre[0], side / 2 - centre[1])
    crop = cv2.warpAffine(np.asarray(image), matrix, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if size is not None and size != side:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if size < side else cv2.INTER_LINEAR)
    return crop
