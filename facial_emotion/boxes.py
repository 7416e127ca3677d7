"""Face boxes: the geometry both detectors share. A Detection, boxes clipped to the picture,
the order of results, the smallest face looked for, and the overlap rules that merge a
detector's boxes (non-maximum suppression)."""

from dataclasses import dataclass, field

import numpy as np

# Haar's smallest face: 24 px (its window) and at least 1/20 of the detection copy's shorter
# side. Smaller Haar hits in large photos were false alarms on textures (tests/benchmarks/
# detectors.py: 1/25 let one through at 3072 px). BlazeFace keeps the same smallest face.
MIN_FACE_SIDE = 24
MIN_FACE_FRACTION = 1 / 20
# Merging BlazeFace's boxes (merge).
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold: boxes this close are one face
MAX_SHARE_INSIDE = 0.6  # a box with this share of its area inside a better one is part of that face


@dataclass
class Detection:
    """A face found in a picture: its box [x, y, w, h] in the picture's pixels, the detector's
    confidence, and landmarks ([k, 2] pixels; eyes first) where the detector gives them."""
    box: list
    score: float = 1.0
    keypoints: np.ndarray = field(default=None, repr=False)


def clip_box(box, width, height):
    """A box [x, y, w, h] (floats or ints) rounded to whole pixels and clipped to the picture."""
    x0, y0 = max(0, round(box[0])), max(0, round(box[1]))
    x1, y1 = min(width, round(box[0] + box[2])), min(height, round(box[1] + box[3]))
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


def largest_first(detections):
    """Detections sorted largest box first (then left to right, top to bottom): the order of
    every result."""
    return sorted(detections, key=lambda d: (-d.box[2] * d.box[3], d.box[0], d.box[1]))


def overlap_matrices(first, second):
    """Intersection over union, and intersection over the area of the `second` box, of every
    box [x, y, w, h] of `first` with every one of `second`."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, :2] + first[:, None, 2:], second[None, :, :2] + second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    first_areas, second_areas = first[:, 2] * first[:, 3], second[:, 2] * second[:, 3]
    union = first_areas[:, None] + second_areas[None, :] - intersection
    return intersection / np.maximum(union, 1e-9), intersection / np.maximum(second_areas[None, :], 1e-9)


def iou_matrix(first, second):
    """Intersection over union of every box [x, y, w, h] of `first` with every one of `second`."""
    return overlap_matrices(first, second)[0]


def merge(boxes, scores, keypoints):
    """Weighted non-maximum suppression, as MediaPipe's: OpenCV picks the best box of each
    group, then every box overlapping it by NMS_IOU or more is blended in, weighted by score,
    which steadies boxes and keypoints from frame to frame. Last, a box lying mostly inside a
    better-scoring one is dropped: a face does not hold a face, but an eye and a cheek can look
    like one to a finer pass."""
    if len(boxes) == 0:
        return boxes, scores, keypoints
    import cv2

    best = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.0, NMS_IOU), int).reshape(-1)
    weights = (iou_matrix(boxes[best], boxes) >= NMS_IOU) * scores[None, :]
    weights /= weights.sum(axis=1, keepdims=True)
    boxes, scores, keypoints = weights @ boxes, scores[best], np.einsum("kn,nij->kij", weights, keypoints)
    inside = overlap_matrices(boxes, boxes)[1] >= MAX_SHARE_INSIDE  # [i, j]: j mostly inside i
    better = scores[:, None] > scores[None, :]
    keep = ~np.any(inside & better, axis=0)
    return boxes[keep], scores[keep], keypoints[keep]
