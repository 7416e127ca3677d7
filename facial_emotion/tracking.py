"""Which face is which person in a video: a track id per face that stays the same across frames.

Each analysed frame's faces are matched one to one with the people already followed (tracks):
first by box overlap and keypoints, where they overlap the track's predicted box; then, for the
faces and tracks left over, by centre distance, so that a face that moved more than its own width
between analysed frames (`--every 5`) is still the same person when nobody else is near. Each
track predicts its box with the velocity between its last two matches, so that two people whose
paths cross keep their ids. A track the detector misses keeps its id for a few analysed frames.
No TensorFlow here.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from facial_emotion.boxes import iou_matrix

# A face the detector misses for a moment (a blink, a turned head, motion blur: a Haar cascade
# drops a face for one to three frames at a time) keeps its id for this many analysed frames:
# a sixth of a second at --every 1 and 30 fps, about a second at --every 5, too short for
# someone else to step into the same place in between.
MAX_MISSED_FRAMES = 5
# The least overlap (IoU) of a face with a track's predicted box for the two to be matched by
# overlap: a face moving at ordinary speed overlaps far more; 0.1 still admits, for boxes of the
# same size, a move of 0.8 of the width.
MIN_IOU = 0.1
# The fallback for what overlaps nothing: the farthest a face's centre may lie from a track's
# predicted centre, in face sizes. Someone walking past moves about 1.5 face widths in a sixth of
# a second (--every 5 at 30 fps); 2 leaves room for the first step, before a velocity is known.
MAX_CENTRE_DISTANCE = 2.0
# The weight of the mean keypoint distance (in face sizes) against 1 - IoU: the same scale, so
# that keypoints decide between overlapping faces whose boxes alone are ambiguous.
KEYPOINT_WEIGHT = 1.0
# linear_sum_assignment needs finite costs: a pair above its gate gets this cost, which no allowed
# pair reaches, and is dropped after solving.
_REJECTED = 1e6


def _centre(box):
    return box[:2] + box[2:] / 2


def _size(box):
    """The side of a square of the box's area: a scale for distances that suits tall boxes too.
    At least 1 px, so that a degenerate box does not divide by zero."""
    return float(np.sqrt(max(box[2], 1.0) * max(box[3], 1.0)))


def _iou(a, b):
    """Intersection over union of two [x, y, w, h] boxes."""
    return float(iou_matrix(np.asarray([a], float), np.asarray([b], float))[0, 0])


def _as_box(box):
    box = np.asarray(box, dtype=float)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"a face box is [x, y, w, h], 4 finite numbers, not {box.tolist()}")
    return box


def _as_keypoints(keypoints, count):
    """One [k, 2] array or None per box: None for all when the detector gives no keypoints."""
    if keypoints is None:
        return [None] * count
    if len(keypoints) != count:
        raise ValueError(f"{len(keypoints)} keypoint sets for {count} face boxes")
    arrays = [None if points is None else np.asarray(points, dtype=float) for points in keypoints]
    for points in arrays:
        if points is not None and (points.ndim != 2 or points.shape[1] != 2
                                   or not np.all(np.isfinite(points))):
            raise ValueError(f"keypoints are a [k, 2] array of finite pixels, not shape {points.shape}")
    return arrays


def _match(cost, rows, cols):
    """The cheapest one-to-one pairs (row, col) among `rows` x `cols`, without rejected pairs."""
    if not rows or not cols:
        return []
    sub = cost[np.ix_(rows, cols)]
    chosen_rows, chosen_cols = linear_sum_assignment(sub)
    return [(rows[i], cols[j]) for i, j in zip(chosen_rows, chosen_cols) if sub[i, j] < _REJECTED]


class _Track:
    """One person: the last matched box and keypoints, and the velocity between its last two
    matches (centre pixels per analysed frame), from which its next box is predicted."""

    def __init__(self, track_id, box, keypoints):
        self.id, self.box, self.keypoints = track_id, box, keypoints
        self.velocity = np.zeros(2)
        self.missed = 0

    def _shift(self):
        # Constant velocity over the frames since the last match, missed ones included.
        return self.velocity * (self.missed + 1)

    def predicted_box(self):
        box = self.box.copy()
        box[:2] += self._shift()
        return box

    def predicted_keypoints(self):
        return None if self.keypoints is None else self.keypoints + self._shift()

    def hit(self, box, keypoints):
        self.velocity = (_centre(box) - _centre(self.box)) / (self.missed + 1)
        self.box, self.keypoints, self.missed = box, keypoints, 0


class FaceTracker:
    """Gives each face of a video's analysed frames a track id: the same integer for the same
    person from frame to frame. Ids start at 1, in order of first appearance, and are never
    reused; one tracker per video (or `reset()` between videos)."""

    def __init__(self, max_missed_frames=MAX_MISSED_FRAMES, min_iou=MIN_IOU,
                 max_centre_distance=MAX_CENTRE_DISTANCE, keypoint_weight=KEYPOINT_WEIGHT):
        if int(max_missed_frames) != max_missed_frames or max_missed_frames < 0:
            raise ValueError(f"max_missed_frames must be a whole number >= 0, not {max_missed_frames}")
        if not 0 < min_iou <= 1:
            raise ValueError(f"min_iou must be in (0, 1], not {min_iou}")
        if max_centre_distance < 0 or keypoint_weight < 0:
            raise ValueError("max_centre_distance and keypoint_weight must be >= 0")
        self.max_missed_frames = int(max_missed_frames)
        self.min_iou = float(min_iou)
        self.max_centre_distance = float(max_centre_distance)
        self.keypoint_weight = float(keypoint_weight)
        self.reset()

    def reset(self):
        """Forgets every track and starts the ids at 1 again: for the next video."""
        self._tracks = []
        self._next_id = 1

    def _overlap_cost(self, track, box, points):
        predicted = track.predicted_box()
        iou = _iou(predicted, box)
        if iou < self.min_iou:
            return _REJECTED
        cost = 1.0 - iou
        expected = track.predicted_keypoints()
        if expected is not None and points is not None and expected.shape == points.shape:
            scale = (_size(predicted) + _size(box)) / 2
            cost += self.keypoint_weight * float(np.linalg.norm(expected - points, axis=1).mean()) / scale
        return cost

    def _centre_cost(self, track, box):
        predicted = track.predicted_box()
        distance = np.linalg.norm(_centre(predicted) - _centre(box)) / ((_size(predicted) + _size(box)) / 2)
        return float(distance) if distance <= self.max_centre_distance else _REJECTED

    def update(self, boxes, keypoints=None):
        """Matches one analysed frame's faces ([x, y, w, h] boxes, any order; keypoints: None, or
        one [k, 2] pixel array or None per box) to the tracks and returns each box's track id,
        in the order of `boxes`. Call it for every analysed frame, those without faces too: a
        frame without a person counts towards the end of that person's track."""
        boxes = [_as_box(box) for box in boxes]
        points = _as_keypoints(keypoints, len(boxes))
        # A canonical order, largest face first: the ids do not depend on the order of `boxes`,
        # and new faces of one frame get their ids largest first.
        order = sorted(range(len(boxes)), key=lambda i: (-boxes[i][2] * boxes[i][3], *boxes[i]))
        tracks = self._tracks
        overlap = np.array([[self._overlap_cost(t, boxes[d], points[d]) for d in range(len(boxes))]
                            for t in tracks]).reshape(len(tracks), len(boxes))
        pairs = _match(overlap, list(range(len(tracks))), order)
        # The fallback only among what overlap left unmatched: a face near its track wins first.
        centre = np.array([[self._centre_cost(t, box) for box in boxes] for t in tracks])
        centre = centre.reshape(len(tracks), len(boxes))
        matched_tracks, matched_boxes = {t for t, _ in pairs}, {d for _, d in pairs}
        pairs += _match(centre, [t for t in range(len(tracks)) if t not in matched_tracks],
                        [d for d in order if d not in matched_boxes])
        ids = [None] * len(boxes)
        for t, d in pairs:
            tracks[t].hit(boxes[d], points[d])
            ids[d] = tracks[t].id
        for t in set(range(len(tracks))) - {t for t, _ in pairs}:
            tracks[t].missed += 1
        self._tracks = [track for track in tracks if track.missed <= self.max_missed_frames]
        for d in order:
            if ids[d] is None:
                self._tracks.append(_Track(self._next_id, boxes[d], points[d]))
                ids[d] = self._next_id
                self._next_id += 1
        return ids
