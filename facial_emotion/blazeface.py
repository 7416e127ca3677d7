"""Face detection with Google's BlazeFace (MediaPipe's short-range model) on ONNX Runtime.

No TensorFlow or Keras here: numpy, OpenCV and ONNX Runtime only.

    from facial_emotion import blazeface
    detector = blazeface.BlazeFaceDetector()          # reads models/face_detection_short_range.onnx
    faces = detector.detect(rgb)                       # RGB uint8 [h, w, 3], largest face first
    crop = detection.align_crop(gray, faces[0], detection.FACE_MARGIN, size=48)

The model file is made by `python -m facial_emotion.convert_blazeface` (see models/FACE_DETECTOR.md).

How it finds small faces. BlazeFace was trained on 128x128 pictures in which a face fills a good
part of the frame, so on a whole photo shrunk to 128 px a small face is a few pixels wide and is
lost. But the network is fully convolutional: the converted model accepts any input size (a
multiple of 16), and each output cell still finds a face 30-130 px wide around it. So the
detector runs the network on the whole picture at two to four scales (no tiles, no seams): the
finest brings the smallest wanted face to about 28 px, the coarsest is the picture in 128 px as
the model was trained; the boxes are merged with weighted non-maximum suppression, as MediaPipe
does. The cost follows the pixels fed in, and the finest pass is most of it.

Measured (tests/benchmarks/face_scenes.py, 120 synthetic 640x480 scenes per variant with pasted
FER-2013 faces 30-300 px, scenes not used for tuning): faces found 87% (Haar 58%), 30-45 px
faces 78% (37%), tilted 15-30 degrees 84% (21%), half covered 28% (11%); false boxes 0.03 a
scene without faces (0.17); CPU time per frame 48 ms (93). Without the second look at
half-scoring boxes (see CANDIDATE_SCORE): 79%, 67%, 76%, 12%, 0.03 and 42 ms. With the video
setting (faces of 48 px and up, one look): 12.5 ms.

Boxes are returned in Haar's framing (side about 0.95 of a FER-2013 face's side, centred), so
code written for Haar's boxes and its crop margin (detection.FACE_MARGIN) works unchanged.
"""

import math
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

from facial_emotion.boxes import (MAX_SHARE_INSIDE, MIN_FACE_FRACTION, MIN_FACE_SIDE, NMS_IOU,
                                  Detection, clip_box, largest_first, merge, overlap_matrices)
from facial_emotion.errors import UserError, first_line
from facial_emotion.files import shipped_file

MODEL_PATH = shipped_file("face_detection_short_range.onnx")

# The network's geometry, from MediaPipe's face_detection_short_range.pbtxt (SsdAnchorsCalculator
# and TensorsToDetectionsCalculator): two heads, stride 8 with 2 anchors a cell and stride 16
# with 6 (three layers merged); anchors of fixed size 1.0 centred in their cell; regressions in
# pixels of the 128-px input, so in pixels of any input since the network is convolutional.
HEADS = ((8, 2), (16, 6))  # (stride in input px, anchors per cell)
TRAINED_SIDE = 128  # the input side BlazeFace was trained on: the coarsest pass uses it
INPUT_MULTIPLE = 16  # the largest stride: an input side must be a multiple of it
# MediaPipe's keypoint order; "right" is the person's right, on the image's left when unmirrored.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")

# Scores. MediaPipe keeps 0.5: 1.8 false boxes per cluttered 640x480 scene in one 1x pass. On
# the benchmark's tuning scenes (382 pasted FER-2013 faces) 0.6 kept 92% of the faces with 0.45
# false boxes per scene without faces, 0.65 88% with 0.17, 0.7 83% with 0.05 (Haar: 55%, 0.07).
# Real faces score higher than pasted FER crops (0.92-0.96 in the two test photos, 0.74-0.80
# half covered) and the false boxes in them 0.5-0.66, so 0.7: Haar's false alarm rate.
MIN_SCORE = 0.7

# The pyramid, from recall per BlazeFace box side in input px, one pass at a time at 0.2-1.25x
# (tuning scenes, MIN_SCORE 0.7): under 24 px 15-18%, 24-32 px about 60%, 40-96 px 70-90%,
# above 128 px falling fast except in the coarsest pass, where the face fills the frame.
SMALLEST_FACE_IN_INPUT = 28  # px of BlazeFace box: the finest pass brings the smallest wanted face here
LARGEST_FACE_IN_INPUT = 160  # px: bigger boxes from a finer pass are dropped (a coarser pass frames them)
MAX_SCALE_STEP = 2.5  # recall is >= 70% over a 2.4x band (40-96 px), so each face gets one good pass
MAX_UPSCALE = 1.25  # 640x480 at 1.25x finds 68% of 30-45 px faces against 59% at 1x, for 1.4x the work
# The finest pass's pixels at most: 640x480 at 1.25x. Bounds the time for any picture (a 12 MP
# photo's finest pass is then 800x600, its smallest face about 160 px, near Haar's 1/20 rule).
MAX_FINEST_PIXELS = 800 * 600
# For video (pass it as min_face): faces under 48 px are rare in a webcam frame, and leaving them
# out makes the finest pass on 640x480 0.67x instead of 1.25x, about a third of the work. On the
# benchmark's scenes 48 px found 62% of all faces (Haar 58%) at 12 ms a frame; 40 px, 69% at 19 ms
# (tests/benchmarks/face_scenes.py), too slow to analyse every frame at twice Haar's speed.
VIDEO_MIN_FACE_SIDE = 48

# The second look, for faces partly covered by a hand, a mask or a cup: they score 0.5-0.7 where
# an uncovered face scores over 0.7, but so do the false boxes of a cluttered picture. On the
# tuning scenes (seeds 0-149) 225 half-covered faces scored 0.5-0.7 in one look, and so did 907
# false boxes. So a box scoring CANDIDATE_SCORE..MIN_SCORE is looked at again, alone: the square
# around it, SECOND_LOOK_CONTEXT times its side, brought to the 128 px the network was trained
# on, as it is and mirrored. Each look takes the best anchor near the centre, counted only when
# its box is the size the face should have there (SECOND_LOOK_SIZES); the box is kept when the
# two looks average CONFIRM_SCORE. That kept 70 of the 225 faces and none of the 907 false boxes
# (the best of the two looks at 0.7, sizes unchecked, kept 69 and 11).
# Photos only: a video frame has no time for it (VIDEO_MIN_FACE_SIDE's detector skips it).
CANDIDATE_SCORE = 0.5
CONFIRM_SCORE = 0.65
SECOND_LOOK_CONTEXT = 1.6  # crop side / box side (Haar framing): the face is then about 70 px of 128
SECOND_LOOK_RADIUS = 0.3  # of the face's side in the crop: how near the centre a confirming anchor lies
SECOND_LOOK_SIZES = (0.7, 1.4)  # the confirming box's side over the side the face should have
MAX_SECOND_LOOKS = 8  # candidates looked at again per picture, best first: bounds the time

# Framing. BlazeFace's own box is tighter and lower than Haar's: on the benchmark's scenes (611
# faces, 30-300 px, alike at every size) its side is a median 0.835 of the FER-2013 face's side
# (quartiles 0.76-0.92; Haar's 0.87-1.03) and its centre 0.079 of that side lower. These two
# turn it into Haar's framing: side 0.953 of FER's, centred (tests/benchmarks/haar_framing.py).
BOX_SCALE = 0.953 / 0.835  # Haar's box side / BlazeFace's, both over the FER-2013 side
BOX_SHIFT_UP = 0.079 / 0.835  # of BlazeFace's box side: how far its centre sits below FER's

# ONNX Runtime threads: one. On the 2-core machine this was measured on (a training job beside
# it) one thread ran a 640x480 pass in 18.6 ms and two in 38 ms; the classifier needs a core too.
THREADS = 1
# A photo's detection runs alone (the classifier waits for its boxes) and is most of the photo's
# own work: on 2 idle cores two threads took the test photo's detection, second look included,
# from 41.7 to 28.5 ms (40 interleaved rounds). FaceDetector's photo detector uses them.
PHOTO_THREADS = 2


def load_session(model_path, threads=THREADS):
    """An ONNX Runtime session for the converted model; a missing, corrupt or fixed-size model
    file raises ValueError with one line, so a caller can report it without a traceback."""
    path = Path(model_path)
    if not path.is_file():
        raise ValueError(f"{path}: face detector model missing "
                         "(make it with python -m facial_emotion.convert_blazeface)")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the file's problems are reported below
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ValueError(f"{path}: not a usable ONNX face detector ({first_line(error)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shapes_ok = (len(inputs) == 1 and len(outputs) == 2 and len(inputs[0].shape) == 4
                 and inputs[0].shape[3] == 3 and outputs[0].shape[-1] == 16 and outputs[1].shape[-1] == 1)
    if not shapes_ok:
        raise ValueError(f"{path}: not a BlazeFace model "
                         "(expected input [n, h, w, 3], outputs [n, k, 16] and [n, k, 1])")
    if any(isinstance(side, int) for side in inputs[0].shape[1:3]):
        raise ValueError(f"{path}: the model has a fixed input size; convert it again with "
                         "python -m facial_emotion.convert_blazeface")
    return session


def anchor_centres(height, width):
    """Centres (x, y) in input pixels of every anchor of an input of this size, in the order of
    the network's outputs: the stride-8 head then the stride-16 head, row by row, anchors of a
    cell side by side."""
    centres = []
    for stride, per_cell in HEADS:
        rows, columns = np.mgrid[0:height // stride, 0:width // stride]
        cells = np.stack([(columns + 0.5) * stride, (rows + 0.5) * stride], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def pyramid_scales(height, width, min_face):
    """Scales (input px per picture px), finest first: the finest brings a `min_face`-px face to
    SMALLEST_FACE_IN_INPUT px (within MAX_UPSCALE and MAX_FINEST_PIXELS), the coarsest fits the
    picture in TRAINED_SIDE, and the steps between are equal and at most MAX_SCALE_STEP."""
    coarsest = TRAINED_SIDE / max(height, width)
    finest = min(SMALLEST_FACE_IN_INPUT * BOX_SCALE / min_face, MAX_UPSCALE,
                 math.sqrt(MAX_FINEST_PIXELS / (height * width)))
    if finest <= coarsest:
        return [coarsest]
    steps = math.ceil(math.log(finest / coarsest) / math.log(MAX_SCALE_STEP))
    return [finest * (coarsest / finest) ** (index / steps) for index in range(steps + 1)]


def to_network_input(picture, width, height):
    """The picture resized to width x height, in [-1, 1] as BlazeFace expects, padded on the
    right and bottom to a multiple of INPUT_MULTIPLE with 0 (mid-grey: no edge to see)."""
    shrinking = width < picture.shape[1]
    resized = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    padded_height = -(-height // INPUT_MULTIPLE) * INPUT_MULTIPLE
    padded_width = -(-width // INPUT_MULTIPLE) * INPUT_MULTIPLE
    network_input = np.zeros((1, padded_height, padded_width, 3), np.float32)
    network_input[0, :height, :width] = resized * np.float32(1 / 127.5) - 1
    return resized, network_input


def decode(regressions, logits, anchors, min_score):
    """Boxes [x, y, w, h], scores and keypoints [n, 6, 2] of the anchors scoring >= min_score, in
    input pixels: centre = anchor + offset, size as regressed (MediaPipe's decoding with scale
    128 and anchor size 1, in pixels)."""
    keep = logits >= math.log(min_score / (1 - min_score))  # sigmoid(logit) >= min_score
    regressions, anchors = regressions[keep], anchors[keep]
    scores = 1 / (1 + np.exp(-logits[keep]))  # only logits above a finite bound: exp() cannot overflow
    centres = anchors + regressions[:, 0:2]
    sizes = regressions[:, 2:4]
    boxes = np.concatenate([centres - sizes / 2, sizes], axis=1)
    keypoints = regressions[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    return boxes, scores, keypoints


def to_haar_framing(boxes):
    """BlazeFace's boxes moved up and enlarged to Haar's framing (see BOX_SCALE)."""
    sides = boxes[:, 2:4]
    centres = boxes[:, :2] + sides / 2 - np.stack([np.zeros(len(boxes)), sides[:, 1] * BOX_SHIFT_UP], axis=1)
    sides = sides * BOX_SCALE
    return np.concatenate([centres - sides / 2, sides], axis=1)


def second_look_input(rgb, box):
    """The network input of a second look at a box [x, y, w, h]: the square of SECOND_LOOK_CONTEXT
    times its side around its centre, edge pixels repeated past the picture, at 128x128."""
    side = max(1, round(SECOND_LOOK_CONTEXT * max(box[2], box[3])))
    left, top = round(box[0] + box[2] / 2 - side / 2), round(box[1] + box[3] / 2 - side / 2)
    height, width = rgb.shape[:2]
    window = rgb[min(max(0, top), height - 1):min(height, max(1, top + side)),
                 min(max(0, left), width - 1):min(width, max(1, left + side))]
    window = cv2.copyMakeBorder(window, max(0, -top), max(0, top + side - height), max(0, -left),
                                max(0, left + side - width), cv2.BORDER_REPLICATE)
    return to_network_input(window, TRAINED_SIDE, TRAINED_SIDE)[1]


class BlazeFaceDetector:
    """BlazeFace over an image pyramid; `detect` gives Detection objects, largest box first.

    `min_face` is the smallest face side (picture px) looked for; None means Haar's rule
    (MIN_FACE_SIDE, or MIN_FACE_FRACTION of the shorter side). A larger value makes the finest
    pass smaller, so faster: VIDEO_MIN_FACE_SIDE (48 px) on a 640x480 frame costs less than
    half of 24 px. `threads`: ONNX Runtime's intra-op threads; `min_score`: see MIN_SCORE.
    """

    def __init__(self, model_path=MODEL_PATH, min_face=None, threads=THREADS, min_score=MIN_SCORE,
                 second_look=True):
        self.session, self.model_path = load_session(model_path, threads), model_path
        self.input_name = self.session.get_inputs()[0].name
        self.min_face = min_face
        self.min_score = min_score
        self.second_look = second_look
        self.look_anchors = anchor_centres(TRAINED_SIDE, TRAINED_SIDE)

    def detect(self, rgb):
        """Faces in an RGB uint8 array [h, w, 3] of any size, largest box first."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
            raise ValueError(f"expected an RGB picture [h, w, 3], got an array of shape {rgb.shape}")
        height, width = rgb.shape[:2]
        min_face = self.min_face or max(MIN_FACE_SIDE, MIN_FACE_FRACTION * min(height, width))
        scales = pyramid_scales(height, width, min_face)
        found, source = [], rgb
        for scale in scales:  # finest first: each pass shrinks the last one's picture, not the original
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            source, network_input = to_network_input(source, *size)
            found.append(self.run_pass(network_input, scale, coarsest=scale == scales[-1]))
        all_boxes, all_scores, all_points = (np.concatenate(part) for part in zip(*found))
        sure = all_scores >= self.min_score
        boxes, scores, keypoints = merge(all_boxes[sure], all_scores[sure], all_points[sure])
        if self.second_look and not sure.all():
            candidates = merge(all_boxes[~sure], all_scores[~sure], all_points[~sure])
            boxes, scores, keypoints = self.add_confirmed(rgb, (boxes, scores, keypoints), candidates)
        boxes = to_haar_framing(boxes)
        detections = [Detection(clip_box(box, width, height), float(score), points.astype(np.float32))
                      for box, score, points in zip(boxes, scores, keypoints) if box[2] >= min_face]
        return largest_first(face for face in detections if face.box[2] > 0 and face.box[3] > 0)

    @property
    def pass_score(self):
        """The score a pass keeps: candidates for a second look too, when it is on."""
        return min(CANDIDATE_SCORE, self.min_score) if self.second_look else self.min_score

    def add_confirmed(self, rgb, sure, candidates):
        """The sure faces (merged boxes, scores, keypoints, in BlazeFace's framing) plus the
        candidates (merged apart, so that they do not move a sure face's box) that overlap no sure
        face and that a second look confirms (see CANDIDATE_SCORE), best first, at most
        MAX_SECOND_LOOKS of them; a confirmed one takes its second look's score."""
        boxes, scores, keypoints = sure
        apart = np.argsort(-candidates[1])
        if len(boxes):
            union, sure_inside = overlap_matrices(candidates[0][apart], boxes)  # [candidate, sure face]
            candidate_inside = overlap_matrices(boxes, candidates[0][apart])[1].T
            overlapping = (union >= NMS_IOU) | (sure_inside >= MAX_SHARE_INSIDE) | (candidate_inside >= MAX_SHARE_INSIDE)
            apart = apart[~overlapping.any(axis=1)]
        apart = apart[:MAX_SECOND_LOOKS]
        looks = self.look_again(rgb, to_haar_framing(candidates[0][apart])) if len(apart) else []
        confirmed = [(index, score) for index, score in zip(apart, looks) if score >= CONFIRM_SCORE]
        if not confirmed:
            return sure
        chosen = [index for index, _ in confirmed]
        return (np.concatenate([boxes, candidates[0][chosen]]),
                np.concatenate([scores, np.float32([score for _, score in confirmed])]),
                np.concatenate([keypoints, candidates[2][chosen]]))

    def look_again(self, rgb, boxes):
        """The second look's score of each box [x, y, w, h] (Haar framing): the mean, over the
        square around it (SECOND_LOOK_CONTEXT times its side, edge pixels repeated past the
        picture) at 128 px and its mirror image, of the best score near the centre whose box has
        the face's size. One network run for all boxes."""
        looks = [second_look_input(rgb, box) for box in boxes]
        looks = np.concatenate([face for look in looks for face in (look, look[:, :, ::-1])])
        regressions, logits = self.run_network(looks, self.look_anchors)
        face_side = TRAINED_SIDE / SECOND_LOOK_CONTEXT / BOX_SCALE  # BlazeFace's box side for this face
        distance = np.linalg.norm(self.look_anchors + regressions[:, :, :2] - TRAINED_SIDE / 2, axis=2)
        near = distance < SECOND_LOOK_RADIUS * face_side * BOX_SCALE
        scores = np.zeros(len(looks), np.float32)
        for index in np.flatnonzero(near.any(axis=1)):  # each look: as it is, then mirrored
            best = np.flatnonzero(near[index])[np.argmax(logits[index, near[index], 0])]
            if SECOND_LOOK_SIZES[0] <= regressions[index, best, 2] / face_side <= SECOND_LOOK_SIZES[1]:
                scores[index] = 1 / (1 + math.exp(-float(np.clip(logits[index, best, 0], -50, 50))))
        return scores.reshape(-1, 2).mean(axis=1)

    def run_network(self, network_input, anchors):
        """The network's (regressions [n, anchors, 16], logits [n, anchors, 1]), checked: a
        detector file swapped for another, one that fails while running or runs out of memory,
        or answers of the wrong shape or not finite, are a UserError for this picture, not a
        crash of the batch."""
        try:
            regressions, logits = self.session.run(None, {self.input_name: network_input})[:2]
            regressions, logits = np.asarray(regressions, np.float32), np.asarray(logits, np.float32)
        except Exception as error:  # ONNX Runtime's own types: Fail, InvalidArgument, allocation failures
            raise UserError(f"{self.model_path}: the face detector failed ({first_line(error)})") from None
        expected = (len(network_input), len(anchors))
        if regressions.shape != (*expected, 16) or logits.shape != (*expected, 1):
            raise UserError(f"{self.model_path}: the face detector answered shapes {regressions.shape} and "
                            f"{logits.shape}, not {(*expected, 16)} and {(*expected, 1)}")
        if not (np.all(np.isfinite(regressions)) and np.all(np.isfinite(logits))):
            raise UserError(f"{self.model_path}: the face detector answered NaN or infinite values")
        return regressions, logits

    def run_pass(self, network_input, scale, coarsest):
        """Candidates of one pass, in picture pixels. Boxes over LARGEST_FACE_IN_INPUT are left
        to a coarser pass (unless this is the coarsest), which frames them better and more
        surely."""
        anchors = anchor_centres(*network_input.shape[1:3])
        regressions, logits = self.run_network(network_input, anchors)
        boxes, scores, keypoints = decode(regressions[0], logits[0, :, 0], anchors, self.pass_score)
        if not coarsest:
            keep = boxes[:, 2] <= LARGEST_FACE_IN_INPUT
            boxes, scores, keypoints = boxes[keep], scores[keep], keypoints[keep]
        return boxes / scale, scores, keypoints / scale
