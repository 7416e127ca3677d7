"""facial_emotion.boxes: clipping, the order of faces, the overlap measures and the merge, each
with boxes that are not square (so that width and height cannot stand in for each other) and
figures worked out by hand."""

import numpy as np
import pytest

from facial_emotion import boxes
from facial_emotion.boxes import Detection


@pytest.mark.parametrize("box, clipped", [
    ([10.4, 20.6, 20, 5], [10, 21, 20, 5]),  # rounded; width and height kept apart
    ([0, 0, 5, 7], [0, 0, 5, 7]),  # at the corner: nothing moves
    ([-5, -3, 20, 10], [0, 0, 15, 7]),  # over the top-left edges
    ([90, 95, 20, 10], [90, 95, 10, 5]),  # over the bottom-right edges
    ([150, 10, 20, 20], [150, 10, 0, 20]),  # right of the picture: no width
    ([10, 150, 20, 20], [10, 150, 20, 0]),  # below it: no height
])
def test_a_box_is_rounded_and_clipped_to_the_picture(box, clipped):
    assert boxes.clip_box(box, 100, 100) == clipped


def faces(*rectangles):
    return [Detection(list(rectangle), 0.9) for rectangle in rectangles]


@pytest.mark.parametrize("rectangles, order", [
    (([0, 0, 3, 4], [0, 0, 8, 2]), [1, 0]),  # area 12 against 16, though 4 is taller than 2
    (([7, 1, 4, 4], [5, 9, 4, 4]), [1, 0]),  # equal areas: leftmost first, whatever the height
    (([5, 9, 2, 8], [5, 1, 4, 4]), [1, 0]),  # equal areas and x: topmost first, whatever the width
])
def test_faces_come_largest_first_then_left_to_right_then_top_to_bottom(rectangles, order):
    detections = faces(*rectangles)
    assert boxes.largest_first(detections) == [detections[index] for index in order]


def test_overlaps_are_worked_out_by_hand():
    first = np.array([[0, 0, 4, 2], [0, 0, 10, 10]], float)
    second = np.array([[2, 1, 4, 6], [2, 2, 2, 6], [20, 20, 3, 3]], float)
    iou, share_inside_second = boxes.overlap_matrices(first, second)
    # [0,0,4,2] and [2,1,4,6]: 2 x 1 in common, union 8 + 24 - 2; [2,2,2,6] lies inside [0,0,10,10]
    expected_intersection = np.array([[2, 0, 0], [24, 12, 0]], float)
    expected_union = np.array([[30, 8 + 12, 8 + 9], [100 + 24 - 24, 100, 109]], float)
    np.testing.assert_allclose(iou, expected_intersection / expected_union)
    np.testing.assert_allclose(share_inside_second, expected_intersection / [24, 12, 9])
    np.testing.assert_allclose(boxes.iou_matrix(first, second), iou)


def test_overlaps_of_boxes_smaller_than_a_pixel():
    # in normalised units (0-1), as a detector's raw boxes are: nothing is rounded up to 1
    small = np.array([[0.1, 0.1, 0.2, 0.1]])
    other = np.array([[0.2, 0.1, 0.2, 0.1]])
    iou, share = boxes.overlap_matrices(small, other)
    np.testing.assert_allclose(iou, [[0.01 / 0.03]])
    np.testing.assert_allclose(share, [[0.5]])


def merged(rectangles, scores):
    points = np.array([[[x, y], [x + w, y + h]] for x, y, w, h in rectangles], float)
    return boxes.merge(np.array(rectangles, float), np.array(scores, float), points)


def test_merge_blends_a_face_s_boxes_by_score_and_keeps_faces_apart():
    # two boxes of one face (IoU 0.82), and a face beside it that overlaps it a little (IoU 0.05)
    found, scores, points = merged([[0, 0, 10, 10], [1, 0, 10, 10], [9, 0, 10, 10]], [0.75, 0.25, 0.5])
    np.testing.assert_allclose(found, [[0.25, 0, 10, 10], [9, 0, 10, 10]])
    np.testing.assert_allclose(scores, [0.75, 0.5])
    np.testing.assert_allclose(points[0], [[0.25, 0], [10.25, 10]])  # keypoints blended alike


def test_merge_blends_boxes_whose_overlap_is_exactly_the_threshold():
    # [0,0,3,2] and [1.5,0,3.5,2]: 3 in common, union 6 + 7 - 3 = 10, IoU 0.3 = NMS_IOU
    assert boxes.NMS_IOU == 0.3
    found, _, _ = merged([[0, 0, 3, 2], [1.5, 0, 3.5, 2]], [0.5, 0.5])
    assert len(found) == 1 or np.allclose(found[0], found[1]), "each blended with the other"


def test_merge_drops_a_box_mostly_inside_a_better_one_and_keeps_an_empty_answer_empty():
    # [12,12,10,10] lies 0.64 inside [0,0,20,20] (IoU 0.16, so the suppression keeps it)
    found, scores, _ = merged([[0, 0, 20, 20], [12, 12, 10, 10]], [0.9, 0.6])
    np.testing.assert_allclose(found, [[0, 0, 20, 20]])
    # exactly MAX_SHARE_INSIDE inside (6 x 10 of 100) counts as inside
    assert boxes.MAX_SHARE_INSIDE == 0.6
    found, scores, _ = merged([[0, 0, 20, 20], [14, 10, 10, 10]], [0.9, 0.6])
    np.testing.assert_allclose(found, [[0, 0, 20, 20]])
    # the same box less inside (0.49) is another face
    found, scores, _ = merged([[0, 0, 20, 20], [13, 13, 10, 10]], [0.9, 0.6])
    assert len(found) == 2
    empty = boxes.merge(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)))
    assert [len(part) for part in empty] == [0, 0, 0]
