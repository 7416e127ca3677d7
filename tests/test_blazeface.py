"""The BlazeFace detector (facial_emotion/blazeface.py) on the test photo, pasted FER-2013 faces
and pictures without a face; its anchor grid and decoding; align_crop; a broken model file.

    python -m pytest -q tests/test_blazeface.py
"""

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from facial_emotion import blazeface, boxes, detection

PROJECT_DIR = Path(__file__).resolve().parent.parent
ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"  # NASA, public domain (see tests/data/README.md)
HAAR_BOX = [177, 66, 95, 95]  # predict.py's Haar box on her face
SAMPLE_FACES = sorted((PROJECT_DIR / "dataset" / "validation" / "happy").iterdir())[:3]


def iou(first, second):
    return float(boxes.iou_matrix(np.array([first], float), np.array([second], float))[0, 0])


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def gradient(height=480, width=640):
    """A smooth colour gradient: nothing a face detector should fire on."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def detector():
    return blazeface.BlazeFaceDetector()


@pytest.fixture(scope="module")
def astronaut_face(detector):
    return detector.detect(read_rgb(ASTRONAUT))


def test_finds_the_face_in_the_test_photo_where_haar_does(astronaut_face):
    [face] = astronaut_face
    assert iou(face.box, HAAR_BOX) > 0.5
    assert face.score > 0.9
    assert all(isinstance(value, int) for value in face.box)


def test_keypoints_lie_in_the_box_with_the_eyes_above_the_mouth(astronaut_face):
    [face] = astronaut_face
    x, y, w, h = face.box
    assert face.keypoints.shape == (6, 2)
    eyes_nose_mouth = face.keypoints[:4]
    assert np.all((eyes_nose_mouth >= [x, y]) & (eyes_nose_mouth <= [x + w, y + h]))
    right_eye, left_eye, nose, mouth = eyes_nose_mouth
    assert right_eye[0] < left_eye[0], "the person's right eye is on the image's left"
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]


@pytest.mark.parametrize("kind", ["gradient", "gradient with shapes", "texture"])
def test_finds_no_face_where_there_is_none(detector, kind):
    picture = gradient()
    if kind == "gradient with shapes":
        cv2.rectangle(picture, (60, 50), (200, 120), (20, 160, 40), -1)
        cv2.ellipse(picture, (450, 300), (80, 110), 0, 0, 360, (200, 170, 150), -1)
    elif kind == "texture":
        low = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        picture = cv2.GaussianBlur(cv2.resize(low, (640, 480), interpolation=cv2.INTER_CUBIC), (0, 0), 2)
    assert detector.detect(picture) == []


@pytest.mark.parametrize("face_path", SAMPLE_FACES, ids=lambda path: path.name)
def test_finds_a_small_fer_face_in_a_video_frame(detector, face_path):
    side, x, y = 60, 410, 290
    picture = gradient()
    face = cv2.resize(cv2.imread(str(face_path), cv2.IMREAD_GRAYSCALE), (side, side), interpolation=cv2.INTER_CUBIC)
    picture[y:y + side, x:x + side] = face[..., None]
    found = detector.detect(picture)
    assert len(found) == 1 and iou(found[0].box, [x, y, side, side]) >= 0.5


def test_boxes_are_clipped_to_the_picture(detector):
    photo = read_rgb(ASTRONAUT)[40:, 200:]  # her face runs off the left edge
    found = detector.detect(photo)
    assert found
    for face in found:
        x, y, w, h = face.box
        assert 0 <= x and 0 <= y and x + w <= photo.shape[1] and y + h <= photo.shape[0]


def covered_astronaut(scale):
    """The test photo with the lower 55% of her face under a dark band (a hand, a mask), shrunk
    by `scale`; returns it and her uncovered face's box at that scale."""
    photo = read_rgb(ASTRONAUT)
    x, y, side = 164, 57, 119  # the detector's box on the uncovered face
    photo[y + round(0.45 * side):y + side, x:x + side] = (40, 40, 40)
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, [round(value * scale) for value in (x, y, side, side)]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_second_look_finds_a_half_covered_face_that_one_look_misses(detector, scale):
    photo, box = covered_astronaut(scale)
    assert blazeface.BlazeFaceDetector(second_look=False).detect(photo) == []
    [face] = detector.detect(photo)  # and none of the half-scoring false boxes elsewhere
    assert iou(face.box, box) >= 0.5
    assert face.score >= blazeface.CONFIRM_SCORE
    assert face.keypoints.shape == (6, 2)


def test_only_candidates_apart_from_sure_faces_get_a_second_look_and_at_most_so_many(monkeypatch):
    detector = blazeface.BlazeFaceDetector()
    looked = []
    monkeypatch.setattr(detector, "look_again", lambda rgb, boxes: looked.extend(boxes) or np.full(len(boxes), 0.9))
    sure = (np.float32([[100, 100, 50, 50]]), np.float32([0.9]), np.zeros((1, 6, 2), np.float32))
    overlapping = [[105, 102, 50, 50], [110, 110, 20, 20], [90, 90, 80, 80]]  # IoU, inside it, holding it
    apart = [[300 + 30 * index, 300, 25, 25] for index in range(blazeface.MAX_SECOND_LOOKS + 2)]
    boxes = np.float32(overlapping + apart)
    scores = np.linspace(0.69, 0.5, len(boxes)).astype(np.float32)  # the overlapping ones best
    candidates = (boxes, scores, np.zeros((len(boxes), 6, 2), np.float32))
    boxes_out, scores_out, keypoints_out = detector.add_confirmed(np.zeros((480, 640, 3), np.uint8), sure, candidates)
    assert len(looked) == blazeface.MAX_SECOND_LOOKS
    assert boxes_out.tolist() == sure[0].tolist() + apart[:blazeface.MAX_SECOND_LOOKS]
    assert scores_out.tolist() == pytest.approx([0.9] * (1 + blazeface.MAX_SECOND_LOOKS))
    assert len(keypoints_out) == len(boxes_out)
    monkeypatch.setattr(detector, "look_again",  # none confirmed
                        lambda rgb, boxes: np.full(len(boxes), blazeface.CONFIRM_SCORE - 0.01))
    assert detector.add_confirmed(np.zeros((480, 640, 3), np.uint8), sure, candidates)[0].tolist() == sure[0].tolist()


def test_video_frames_get_no_second_look(monkeypatch):
    looks = []
    second_look = blazeface.BlazeFaceDetector.look_again
    monkeypatch.setattr(blazeface.BlazeFaceDetector, "look_again",
                        lambda self, rgb, boxes: looks.extend(boxes) or second_look(self, rgb, boxes))
    faces = detection.FaceDetector("blazeface")
    photo, _ = covered_astronaut(0.5)
    faces.detect(photo, video=True)
    assert looks == []
    assert len(faces.detect(photo)) == 1 and looks


def test_anchor_grid_of_the_trained_input_size():
    anchors = blazeface.anchor_centres(128, 128)
    assert anchors.shape == (896, 2)  # 16 x 16 x 2 + 8 x 8 x 6
    normalised = anchors / 128
    np.testing.assert_allclose(normalised[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(normalised[1], normalised[0])  # two anchors per stride-8 cell
    np.testing.assert_allclose(normalised[2], [1.5 / 16, 0.5 / 16])  # then the next cell to the right
    np.testing.assert_allclose(normalised[32], [0.5 / 16, 1.5 / 16])  # a row is 16 cells x 2
    np.testing.assert_allclose(normalised[512], [0.5 / 8, 0.5 / 8])  # first stride-16 cell
    np.testing.assert_allclose(normalised[512:518], np.repeat(normalised[512:513], 6, axis=0))
    np.testing.assert_allclose(normalised[-1], [7.5 / 8, 7.5 / 8])
    assert blazeface.anchor_centres(96, 160).shape == (12 * 20 * 2 + 6 * 10 * 6, 2)


def test_decoding_adds_offsets_to_anchors_and_keeps_only_confident_ones():
    anchors = np.array([[4.0, 4.0], [12.0, 4.0]], np.float32)
    regressions = np.zeros((2, 16), np.float32)
    regressions[0, :4] = [10, -2, 20, 30]  # centre offset x, y; width, height
    regressions[0, 4:6] = [-5, 1]  # first keypoint's offset
    logits = np.array([2.0, 0.0], np.float32)  # scores 0.88 and 0.5
    boxes, scores, keypoints = blazeface.decode(regressions, logits, anchors, min_score=0.7)
    np.testing.assert_allclose(boxes, [[4, -13, 20, 30]])
    np.testing.assert_allclose(scores, [1 / (1 + math.exp(-2))], rtol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [-1, 5])
    np.testing.assert_allclose(keypoints[0, 1], [4, 4])


def test_pyramid_goes_from_the_smallest_face_to_the_picture_in_128_px():
    scales = blazeface.pyramid_scales(480, 640, 24)
    assert scales[0] == blazeface.MAX_UPSCALE and scales[-1] == pytest.approx(128 / 640)
    assert all(1 < first / second <= blazeface.MAX_SCALE_STEP for first, second in zip(scales, scales[1:]))
    assert blazeface.pyramid_scales(48, 48, 24) == [128 / 48]  # a face crop: one pass, as trained


def tilted(photo, angle):
    """The photo turned `angle` degrees counter-clockwise about her face."""
    matrix = cv2.getRotationMatrix2D((224, 113), angle, 1.0)
    return cv2.warpAffine(photo, matrix, (photo.shape[1], photo.shape[0]), borderMode=cv2.BORDER_REFLECT)


def test_align_crop_turns_a_tilted_face_upright(detector):
    photo = tilted(read_rgb(ASTRONAUT), 25)
    [face] = detector.detect(photo)
    assert detection.eye_angle(face) == pytest.approx(-25, abs=6)
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    upright = detection.align_crop(gray, face, detection.FACE_MARGIN, size=128)
    plain = detection.align_crop(gray, boxes.Detection(face.box, face.score, None), detection.FACE_MARGIN, size=128)
    assert upright.shape == plain.shape == (128, 128)
    # Read the crops again: the aligned one's eye line is level, the plain one's still tilted.
    [again] = detector.detect(np.stack([upright] * 3, axis=-1))
    [plain_again] = detector.detect(np.stack([plain] * 3, axis=-1))
    assert abs(detection.eye_angle(again)) < 5
    assert abs(detection.eye_angle(plain_again)) > 15


def test_eye_angle_ignores_mirroring():
    keypoints = np.zeros((6, 2))
    keypoints[0], keypoints[1] = [60, 50], [20, 40]  # the eyes in a mirrored picture
    assert detection.eye_angle(boxes.Detection([0, 0, 80, 80], 0.9, keypoints)) == pytest.approx(14.04, abs=0.01)


@pytest.mark.parametrize("content", [None, b"", b"not an onnx model at all" * 10])
def test_a_missing_or_corrupt_model_is_a_value_error(tmp_path, content):
    path = tmp_path / "face_detection_short_range.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="face_detection_short_range.onnx") as raised:
        blazeface.BlazeFaceDetector(path)
    assert "\n" not in str(raised.value)


def test_a_picture_that_is_not_rgb_is_a_value_error(detector):
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((48, 48), np.uint8))


def tiny_detector_onnx(path, input_shape=("N", "H", "W", 3), outputs=(("N", 896, 16), ("N", 896, 1))):
    """An ONNX graph shaped like a detector (or not): its outputs are zeros of the declared shapes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, output_infos = [], [], []
    for index, shape in enumerate(outputs):
        name = f"out{index}"
        initializers.append(numpy_helper.from_array(np.zeros([1, 896, shape[-1]], np.float32), f"zeros{index}"))
        nodes.append(helper.make_node("Identity", [f"zeros{index}"], [name]))
        output_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            list(input_shape))],
                              output_infos, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_each_broken_detector_file_is_one_line_saying_what_is_wrong(tmp_path):
    missing = tmp_path / "gone.onnx"
    with pytest.raises(ValueError) as raised:
        blazeface.load_session(missing)
    assert str(raised.value) == (f"{missing}: face detector model missing (make it with python -m "
                                 "facial_emotion.convert_blazeface)")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf of a model")
    with pytest.raises(ValueError, match=rf"^{corrupt}: not a usable ONNX face detector \(.*\S.*\)$"):
        blazeface.load_session(corrupt)
    not_blazeface = "(expected input [n, h, w, 3], outputs [n, k, 16] and [n, k, 1])"
    for name, kwargs in (("gray.onnx", dict(input_shape=("N", "H", "W", 1))),
                         ("three_d.onnx", dict(input_shape=("N", "H", "W"))),
                         ("boxes15.onnx", dict(outputs=(("N", 896, 15), ("N", 896, 1)))),
                         ("scores2.onnx", dict(outputs=(("N", 896, 16), ("N", 896, 2)))),
                         ("one_output.onnx", dict(outputs=(("N", 896, 16),))),
                         ("three.onnx", dict(outputs=(("N", 896, 16), ("N", 896, 1), ("N", 896, 1))))):
        path = tiny_detector_onnx(tmp_path / name, **kwargs)
        with pytest.raises(ValueError) as raised:
            blazeface.load_session(path)
        assert str(raised.value) == f"{path}: not a BlazeFace model {not_blazeface}", name
    for name, shape in (("fixed.onnx", ("N", 128, 128, 3)), ("fixed_width.onnx", ("N", "H", 128, 3)),
                        ("fixed_height.onnx", ("N", 128, "W", 3))):
        path = tiny_detector_onnx(tmp_path / name, input_shape=shape)
        with pytest.raises(ValueError) as raised:
            blazeface.load_session(path)
        assert str(raised.value) == (f"{path}: the model has a fixed input size; convert it again with "
                                     "python -m facial_emotion.convert_blazeface")
    session = blazeface.load_session(tiny_detector_onnx(tmp_path / "fine.onnx", input_shape=(1, "H", "W", 3)))
    assert session.get_inputs()[0].name == "image"  # a fixed batch is fine: one picture at a time


def test_the_detector_keeps_its_settings_and_runs_on_the_threads_asked_for():
    detector = blazeface.BlazeFaceDetector(min_face=40, threads=3, min_score=0.8, second_look=False)
    assert (detector.min_face, detector.min_score, detector.second_look) == (40, 0.8, False)
    options = detector.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert detector.model_path == blazeface.MODEL_PATH


# ---------------------------------------------------------------------------------------------
# The second look: the square it looks at, and how it scores what it sees there
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("box", [
    [150, 60, 40, 30],    # wider than tall, running past the right and bottom edges
    [-6, -4, 30, 44],     # taller than wide, past the left and top edges
    [80, 30, 36, 36],     # well inside
])
def test_the_second_look_sees_the_square_around_the_box_with_edges_repeated(box):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    side = round(blazeface.SECOND_LOOK_CONTEXT * max(box[2], box[3]))
    left, top = round(box[0] + box[2] / 2 - side / 2), round(box[1] + box[3] / 2 - side / 2)
    rows = np.clip(np.arange(top, top + side), 0, 99)  # edge pixels repeated past the picture
    columns = np.clip(np.arange(left, left + side), 0, 199)
    expected = blazeface.to_network_input(rgb[rows][:, columns], 128, 128)[1]
    np.testing.assert_array_equal(blazeface.second_look_input(rgb, box), expected)


class Looks:
    """Stands in for the network on second looks: every anchor answers nothing (logit -100)
    except the one nearest `where` (128-px crop coordinates), moved by `offset`, with box `size`
    and `logits` (the look, then its mirror image)."""

    def __init__(self, where, offset=(0.0, 0.0), size=(50.0, 50.0), logits=(2.0, 2.0)):
        self.where, self.offset, self.size, self.logits = where, offset, size, logits

    def __call__(self, looks, anchors):
        regressions = np.zeros((len(looks), len(anchors), 16), np.float32)
        logits = np.full((len(looks), len(anchors), 1), -100.0, np.float32)
        nearest = int(np.argmin(np.linalg.norm(anchors - np.array(self.where) + np.array(self.offset), axis=1)))
        regressions[:, nearest, :2] = self.offset
        regressions[:, nearest, 2:4] = self.size
        logits[:, nearest, 0] = np.resize(self.logits, len(looks))
        return regressions, logits


FACE_SIDE = blazeface.TRAINED_SIDE / blazeface.SECOND_LOOK_CONTEXT / blazeface.BOX_SCALE  # about 70 px
NEAR = blazeface.SECOND_LOOK_RADIUS * FACE_SIDE * blazeface.BOX_SCALE  # about 24 px from the centre


def second_look_score(detector, monkeypatch, network):
    monkeypatch.setattr(detector, "run_network", network)
    return detector.look_again(np.zeros((200, 200, 3), np.uint8), [[60, 60, 80, 80]])


def sigmoid(logit):
    return 1 / (1 + math.exp(-logit))


def test_a_second_look_scores_the_face_it_finds_at_the_centre_averaged_with_its_mirror(detector, monkeypatch):
    [score] = second_look_score(detector, monkeypatch, Looks((64, 64), size=(FACE_SIDE, FACE_SIDE)))
    assert score == pytest.approx(sigmoid(2.0))
    [score] = second_look_score(detector, monkeypatch, Looks((64, 64), size=(FACE_SIDE,) * 2, logits=(2.0, -1.0)))
    assert score == pytest.approx((sigmoid(2.0) + sigmoid(-1.0)) / 2)


def test_a_second_look_counts_an_anchor_by_where_its_box_is_centred(detector, monkeypatch):
    # The anchor itself lies 40 px off the centre; its regressed centre is at the centre.
    [score] = second_look_score(detector, monkeypatch, Looks((64, 64), offset=(40.0, 0.0), size=(FACE_SIDE,) * 2))
    assert score == pytest.approx(sigmoid(2.0))
    for distance, counted in ((0.8 * NEAR, True), (1.2 * NEAR, False)):
        [score] = second_look_score(detector, monkeypatch, Looks((64 + distance, 64), size=(FACE_SIDE,) * 2))
        assert bool(score > 0) is counted, distance


@pytest.mark.parametrize("ratio, counted", [(0.7, True), (1.4, True), (0.68, False), (1.42, False), (1.0, True)])
def test_a_second_look_counts_only_a_box_of_the_face_s_size(detector, monkeypatch, ratio, counted):
    # Just inside each bound (0.7 + 1e-4, 1.4 - 1e-4): the float32 ratio lands exactly on neither.
    network = Looks((64, 64), size=(FACE_SIDE * ratio + (1e-4 if ratio == 0.7 else -1e-4), FACE_SIDE * 3))
    [score] = second_look_score(detector, monkeypatch, network)  # the width is the side: the height is ignored
    assert bool(score > 0) is counted


def test_a_second_look_s_extreme_logits_give_scores_not_overflows(detector, monkeypatch):
    [score] = second_look_score(detector, monkeypatch, Looks((64, 64), size=(FACE_SIDE,) * 2, logits=(-1000.0,) * 2))
    assert score == pytest.approx(sigmoid(-50.0), rel=1e-3)  # clipped to -50
    [score] = second_look_score(detector, monkeypatch, Looks((64, 64), size=(FACE_SIDE,) * 2, logits=(1000.0,) * 2))
    assert score == 1.0


# ---------------------------------------------------------------------------------------------
# Which unsure candidates are looked at again, and which are confirmed
# ---------------------------------------------------------------------------------------------
def with_candidate(detector, monkeypatch, sure_box, candidate_box, look=0.9):
    """The sure face plus the candidate if add_confirmed keeps it; every second look says `look`."""
    looked = []
    monkeypatch.setattr(detector, "look_again", lambda rgb, boxes: looked.append(boxes) or np.full(len(boxes), look))
    sure = (np.array([sure_box], float), np.array([0.9], np.float32), np.zeros((1, 6, 2)))
    candidates = (np.array([candidate_box], float), np.array([0.3], np.float32), np.ones((1, 6, 2)))
    return detector.add_confirmed(np.zeros((50, 50, 3), np.uint8), sure, candidates), looked


@pytest.mark.parametrize("sure_box, candidate_box, kept", [
    ([0, 0, 13, 10], [7, 0, 13, 10], False),       # intersection over union exactly NMS_IOU (0.3)
    ([0, 0, 13, 10], [7.5, 0, 13, 10], True),      # 0.27: apart
    ([0, 0, 100, 100], [40, 0, 400, 400], False),  # exactly 60% of the sure face inside the candidate
    ([4, 0, 400, 400], [0, 0, 10, 100], False),    # exactly 60% of the candidate inside the sure face
    ([0, 0, 100, 100], [45, 0, 400, 400], True),   # 55% inside
    ([0, 0, 10, 10], [50, 50, 10, 10], True),
])
def test_a_candidate_that_overlaps_a_sure_face_is_never_looked_at_again(detector, monkeypatch, sure_box,
                                                                        candidate_box, kept):
    (boxes, scores, keypoints), looked = with_candidate(detector, monkeypatch, sure_box, candidate_box)
    assert (len(boxes) == 2) is kept and bool(looked) is kept
    if kept:
        np.testing.assert_array_equal(boxes[1], candidate_box)
        assert scores.tolist() == pytest.approx([0.9, 0.9]) and keypoints[1].tolist() == [[1, 1]] * 6


@pytest.mark.parametrize("look, kept", [(blazeface.CONFIRM_SCORE, True), (blazeface.CONFIRM_SCORE - 0.01, False)])
def test_a_second_look_confirms_from_confirm_score_up_and_gives_its_score(detector, monkeypatch, look, kept):
    (boxes, scores, _), _ = with_candidate(detector, monkeypatch, [0, 0, 10, 10], [50, 50, 10, 10], look)
    assert (len(boxes) == 2) is kept
    if kept:
        assert scores[1] == pytest.approx(look)


def test_an_empty_picture_is_refused_and_a_one_pixel_one_is_no_error(detector):
    with pytest.raises(ValueError, match=r"got an array of shape \(0, 5, 3\)"):
        detector.detect(np.zeros((0, 5, 3), np.uint8))
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_the_smallest_face_looked_for_grows_with_a_large_picture(monkeypatch):
    asked = []
    real = blazeface.pyramid_scales
    monkeypatch.setattr(blazeface, "pyramid_scales", lambda h, w, min_face: asked.append(min_face) or real(h, w, min_face))
    detector = blazeface.BlazeFaceDetector(second_look=False)
    detector.detect(np.zeros((1000, 1200, 3), np.uint8))
    detector.detect(np.zeros((200, 300, 3), np.uint8))
    assert asked == [pytest.approx(1000 * boxes.MIN_FACE_FRACTION), boxes.MIN_FACE_SIDE]


@pytest.mark.parametrize("height, width, min_face, finest", [
    (480, 640, 80, 28 * blazeface.BOX_SCALE / 80),        # the face size binds: 0.40
    (480, 640, 24, blazeface.MAX_UPSCALE),                # the upscale binds: 1.25 of 1.33
    (3000, 4000, 24, math.sqrt(800 * 600 / (3000 * 4000))),  # the pixel budget binds: 0.2
    (600, 9000, 100, math.sqrt(800 * 600 / (600 * 9000))),   # a panorama: 0.298 of 0.32
])
def test_the_finest_scale_is_the_tightest_of_face_size_upscale_and_pixels(height, width, min_face, finest):
    scales = blazeface.pyramid_scales(height, width, min_face)
    assert scales[0] == pytest.approx(finest) and scales[-1] == pytest.approx(128 / max(height, width))
    ratios = [first / second for first, second in zip(scales, scales[1:])]
    np.testing.assert_allclose(ratios, ratios[0])  # equal steps, each at most MAX_SCALE_STEP,
    assert ratios[0] <= blazeface.MAX_SCALE_STEP + 1e-9
    if len(ratios) > 1:  # and as few as that allows: one step fewer would be too long
        assert (finest / scales[-1]) ** (1 / (len(ratios) - 1)) > blazeface.MAX_SCALE_STEP


def test_a_finest_scale_equal_to_the_coarsest_is_one_pass():
    # 128 px picture side, a face that needs exactly scale 1: one pass
    min_face = 28 * blazeface.BOX_SCALE
    assert blazeface.pyramid_scales(100, 128, min_face) == [1.0]


@pytest.mark.parametrize("width, height, interpolation", [
    (64, 40, cv2.INTER_AREA),     # shrinking
    (160, 100, cv2.INTER_LINEAR),  # enlarging
    (100, 80, cv2.INTER_LINEAR),  # the same width, taller: not shrinking (area would be nearest-like)
])
def test_the_network_input_is_resized_by_area_only_when_shrinking(width, height, interpolation):
    rgb = np.random.default_rng(5).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    resized, network_input = blazeface.to_network_input(rgb, width, height)
    np.testing.assert_array_equal(resized, cv2.resize(rgb, (width, height), interpolation=interpolation))
    padded = (-(-height // 16) * 16, -(-width // 16) * 16)
    assert network_input.shape == (1, *padded, 3) and network_input.dtype == np.float32
    np.testing.assert_allclose(network_input[0, :height, :width], resized / 127.5 - 1, atol=1e-6)
    assert not network_input[0, height:].any() and not network_input[0, :, width:].any()


def test_white_and_black_are_plus_and_minus_one():
    _, network_input = blazeface.to_network_input(np.array([[[255, 0, 255]]], np.uint8), 1, 1)
    assert network_input[0, 0, 0].tolist() == [1.0, -1.0, 1.0]


def test_the_network_s_answers_are_float32_whatever_the_file_computes_in(detector, monkeypatch):
    anchors = detector.look_anchors

    class Doubles:
        def run(self, names, feeds):
            return [np.zeros((1, len(anchors), 16)), np.zeros((1, len(anchors), 1))]

    monkeypatch.setattr(detector, "session", Doubles())
    regressions, logits = detector.run_network(np.zeros((1, 128, 128, 3), np.float32), anchors)
    assert regressions.dtype == logits.dtype == np.float32


def test_decode_keeps_a_score_exactly_at_the_minimum():
    anchors = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]], np.float32)
    regressions = np.zeros((3, 16), np.float32)
    _, scores, _ = blazeface.decode(regressions, np.array([0.0, -1e-3, 3.0], np.float32), anchors, 0.5)
    assert scores.tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-3))])


def test_a_finer_pass_leaves_boxes_wider_than_the_largest_face_to_a_coarser_one(detector, monkeypatch):
    """Three faces: 160 px wide (kept), 161 px (left to a coarser pass), 100 wide and 200 tall
    (kept: width is the side)."""
    def network(network_input, anchors):
        regressions = np.zeros((1, len(anchors), 16), np.float32)
        logits = np.full((1, len(anchors), 1), -100.0, np.float32)
        for anchor, size in ((0, (160, 160)), (50, (161, 161)), (100, (100, 200))):
            regressions[0, anchor, 2:4] = size
            logits[0, anchor, 0] = 10.0
        return regressions, logits

    monkeypatch.setattr(detector, "run_network", network)
    finer, _, _ = detector.run_pass(np.zeros((1, 256, 256, 3), np.float32), 2.0, coarsest=False)
    assert sorted(finer[:, 2].tolist()) == [50.0, 80.0]  # in picture pixels: input pixels / scale
    coarsest, _, keypoints = detector.run_pass(np.zeros((1, 256, 256, 3), np.float32), 0.5, coarsest=True)
    assert sorted(coarsest[:, 2].tolist()) == [200.0, 320.0, 322.0]
    anchors = blazeface.anchor_centres(256, 256)
    np.testing.assert_allclose(sorted(keypoints[:, 0, 0].tolist()), sorted((anchors[[0, 50, 100], 0] / 0.5).tolist()))


class Answers:
    """Stands in for the detector's ONNX session: answers `outputs`, or raises `error`."""

    def __init__(self, outputs=None, error=None):
        self.outputs, self.error = outputs, error

    def run(self, names, feeds):
        if self.error:
            raise self.error
        return self.outputs


def network_answer(detector, monkeypatch, session):
    from facial_emotion.errors import UserError

    monkeypatch.setattr(detector, "session", session)
    anchors = detector.look_anchors
    with pytest.raises(UserError) as refused:
        detector.run_network(np.zeros((1, 128, 128, 3), np.float32), anchors)
    return str(refused.value).replace(str(detector.model_path), "MODEL")


def test_a_detector_that_fails_while_running_is_one_line(detector, monkeypatch):
    message = network_answer(detector, monkeypatch, Answers(error=RuntimeError("Failed to allocate memory\ntrace")))
    assert message == "MODEL: the face detector failed (Failed to allocate memory)"


@pytest.mark.parametrize("regressions, logits", [((1, 896, 16), (1, 895, 1)), ((1, 896, 15), (1, 896, 1))])
def test_a_detector_answering_other_shapes_is_one_line(detector, monkeypatch, regressions, logits):
    message = network_answer(detector, monkeypatch, Answers([np.zeros(regressions, np.float32),
                                                             np.zeros(logits, np.float32)]))
    assert message == (f"MODEL: the face detector answered shapes {regressions} and {logits}, not (1, 896, 16) "
                       "and (1, 896, 1)")


@pytest.mark.parametrize("broken", ["regressions", "logits"])
def test_a_detector_answering_nan_anywhere_is_one_line(detector, monkeypatch, broken):
    regressions, logits = np.zeros((1, 896, 16), np.float32), np.zeros((1, 896, 1), np.float32)
    (regressions if broken == "regressions" else logits)[0, 5, 0] = np.nan
    message = network_answer(detector, monkeypatch, Answers([regressions, logits]))
    assert message == "MODEL: the face detector answered NaN or infinite values"
