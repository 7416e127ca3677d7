"""What FaceDetector makes of each detector's raw answer: MTCNN's dictionaries (its confidence
rule, its keypoints' order and type), Haar's box on a known photo, and the crop's margin at the
picture's edge."""

import numpy as np
import pytest
from PIL import Image

from facial_emotion import detection
from facial_emotion.detection import MTCNN_MIN_CONFIDENCE, FaceDetector, crop_face
from facial_emotion.images import preprocess_face

from conftest import PROJECT_DIR

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class FakeMTCNN:
    def __init__(self, faces):
        self.faces, self.seen = faces, []

    def detect_faces(self, rgb):
        self.seen.append(rgb.shape)
        return self.faces


def mtcnn_detector(faces):
    detector = FaceDetector.__new__(FaceDetector)  # MTCNN itself needs TensorFlow: its answers stood in
    detector.kind, detector.threads, detector.mtcnn = "mtcnn", None, FakeMTCNN(faces)
    return detector


def keypoints(offset=0):
    return {name: (10 + offset + index, 20 + index) for index, name in enumerate(ORDER)}


def test_mtcnn_faces_keep_their_confidence_and_their_five_keypoints_in_order_as_floats():
    rgb = np.zeros((300, 400, 3), np.uint8)
    found = mtcnn_detector([{"box": [10.7, 20.2, 60, 80], "confidence": 0.97, "keypoints": keypoints()}]).detect(rgb)
    [face] = found
    assert face.box == [10, 20, 60, 80] and face.score == pytest.approx(0.97)
    assert face.keypoints.dtype == np.float32
    np.testing.assert_array_equal(face.keypoints, [[10, 20], [11, 21], [12, 22], [13, 23], [14, 24]])


def test_an_mtcnn_face_without_every_keypoint_has_none_and_without_confidence_counts_as_sure():
    rgb = np.zeros((300, 400, 3), np.uint8)
    partial = dict(keypoints())
    del partial["nose"]
    found = mtcnn_detector([{"box": [0, 0, 50, 50], "keypoints": partial},
                            {"box": [100, 100, 40, 40]}]).detect(rgb)
    assert [(face.box, face.score, face.keypoints) for face in found] == [([0, 0, 50, 50], 1.0, None),
                                                                          ([100, 100, 40, 40], 1.0, None)]


def test_mtcnn_faces_below_its_confidence_floor_are_dropped_and_the_floor_itself_kept():
    rgb = np.zeros((300, 400, 3), np.uint8)
    faces = [{"box": [0, 0, 60, 60], "confidence": MTCNN_MIN_CONFIDENCE},
             {"box": [100, 0, 50, 50], "confidence": MTCNN_MIN_CONFIDENCE - 0.001},
             {"box": [200, 0, 40, 40], "confidence": 0.2}]
    found = mtcnn_detector(faces).detect(rgb)
    assert [face.box for face in found] == [[0, 0, 60, 60]]


def test_mtcnn_runs_on_a_copy_no_larger_than_1024_and_its_keypoints_come_back_to_the_photo_s_pixels():
    rgb = np.zeros((1000, 2048, 3), np.uint8)
    detector = mtcnn_detector([{"box": [100, 50, 60, 60], "confidence": 0.99, "keypoints": keypoints()}])
    [face] = detector.detect(rgb)
    assert detector.mtcnn.seen == [(500, 1024, 3)]
    assert face.box == [200, 100, 120, 120]
    np.testing.assert_allclose(face.keypoints[0], [20, 40])


def test_haar_boxes_the_astronaut_s_face_as_opencv_s_cascade_does_with_our_settings():
    pytest.importorskip("cv2")
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    [face] = FaceDetector("haar").detect(rgb)
    # scaleFactor 1.1 gives [177, 66, 95, 95]; a coarser step (2.1) gives [171, 62, 106, 106].
    assert np.abs(np.subtract(face.box, [177, 66, 95, 95])).max() <= 3


def test_the_crop_s_margin_stops_at_the_picture_s_top_and_left_edges():
    gray = Image.fromarray(np.add.outer(np.arange(100) * 2, np.arange(100)).astype(np.uint8))
    # A 40-px box at the corner: its 1-px margin (2.5%) would start at -1; the crop starts at 0.
    np.testing.assert_array_equal(crop_face(gray, [0, 0, 40, 40]), preprocess_face(gray.crop((0, 0, 41, 41))))
    np.testing.assert_array_equal(crop_face(gray, [20, 30, 40, 40]), preprocess_face(gray.crop((19, 29, 61, 71))))
    assert detection.FACE_MARGIN == 0.025



# Sides under DETECTION_MAX_SIDE (1024), so that the picture reaches Haar unscaled; 610 / 20 = 30.5
# rounds to 30.
@pytest.mark.parametrize("height, width, smallest", [(1000, 1020, 50), (300, 400, 24), (610, 700, 30)])
def test_haar_looks_for_faces_of_at_least_a_twentieth_of_the_shorter_side(height, width, smallest):
    """Haar finds no face under about 50 px in the test photo, so its cascade is asked directly."""
    asked = []

    class Cascade:
        def detectMultiScale(self, gray, **options):  # noqa: N802 (OpenCV's name)
            asked.append((gray.shape, options["minSize"]))
            return [(10, 20, 60, 60)]

    detector = FaceDetector("haar")
    detector.cascade = Cascade()
    assert [face.box for face in detector.detect(np.zeros((height, width, 3), np.uint8))] == [[10, 20, 60, 60]]
    assert asked == [((height, width), (smallest, smallest))]
