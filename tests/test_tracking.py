"""FaceTracker: the same person keeps one track id across a video's analysed frames."""

import numpy as np
import pytest

from facial_emotion.tracking import FaceTracker

SIDE = 60  # px: a face box's width and height in these tests


def box(x, y, side=SIDE):
    return [x, y, side, side]


def keypoints_of(face_box, tilt=0.0):
    """Five keypoints placed in the box as a detector places them: eyes, nose, mouth corners.
    `tilt` moves them vertically in opposite directions on the two sides (a tilted head)."""
    x, y, w, h = face_box
    layout = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    points = np.array([x, y]) + layout * np.array([w, h])
    points[:, 1] += np.where(layout[:, 0] < 0.5, tilt, -tilt) * h
    return points


def run(tracker, frames, with_keypoints=False):
    """The ids the tracker returns for each frame (a list of boxes)."""
    return [tracker.update(boxes, [keypoints_of(b) for b in boxes] if with_keypoints else None)
            for boxes in frames]


@pytest.mark.parametrize("with_keypoints", [False, True])
def test_faces_crossing_in_opposite_directions_keep_their_ids(with_keypoints):
    # A moves right and B moves left, 30 px per frame; at frame 6 each stands nearer to the
    # other's previous box than to its own, so only the velocity keeps them apart.
    frames = [[box(30 * t, 100), box(315 - 30 * t, 110)] for t in range(11)]
    ids = run(FaceTracker(), frames, with_keypoints)
    assert ids == [[1, 2]] * 11


def test_face_missing_for_two_frames_keeps_its_id():
    tracker = FaceTracker()
    frames = [[box(100, 100)], [box(105, 100)], [], [], [box(115, 100)]]
    assert run(tracker, frames) == [[1], [1], [], [], [1]]


def test_moving_face_missing_within_the_grace_is_found_where_it_went():
    # 40 px per frame is two thirds of its width: after 4 missed frames it is 200 px further on,
    # nowhere near its last box, but where its velocity says it is; and its velocity afterwards
    # is still 40 px per frame, not the 200 px between its last two sightings.
    tracker = FaceTracker(max_missed_frames=4)
    frames = [[box(40 * t, 100)] if t < 2 or t > 5 else [] for t in range(10)]
    assert run(tracker, frames) == [[1], [1], [], [], [], [], [1], [1], [1], [1]]


@pytest.mark.parametrize("grace", [1, 3, 5])
def test_grace_ends_after_max_missed_frames(grace):
    kept = run(FaceTracker(max_missed_frames=grace), [[box(100, 100)]] + [[]] * grace + [[box(100, 100)]])
    lost = run(FaceTracker(max_missed_frames=grace), [[box(100, 100)]] + [[]] * (grace + 1) + [[box(100, 100)]])
    assert kept[-1] == [1]
    assert lost[-1] == [2]


def test_default_grace_is_a_few_frames():
    tracker = FaceTracker()
    missing = [[]] * (tracker.max_missed_frames + 1)
    assert run(tracker, [[box(100, 100)]] + missing + [[box(100, 100)]])[-1] == [2]


def test_a_new_face_gets_the_next_id():
    frames = [[box(0, 100)], [box(0, 100), box(300, 100)], [box(300, 100), box(600, 100), box(0, 100)]]
    assert run(FaceTracker(), frames) == [[1], [1, 2], [2, 3, 1]]


def test_ids_are_never_reused():
    # Person 2, then person 1, leave for good; whoever comes later, even at the same place, is
    # someone new: neither the freed id nor one past the highest id still in use.
    tracker = FaceTracker(max_missed_frames=1)
    a, b, c = box(100, 100), box(300, 100), box(500, 100)
    frames = [[a, b], [a], [a], [a], [a, b], [b], [b], [b], [a, b, c]]
    ids = run(tracker, frames)
    assert ids == [[1, 2], [1], [1], [1], [1, 3], [3], [3], [3], [4, 3, 5]]


def test_new_faces_of_one_frame_get_their_ids_largest_first():
    assert FaceTracker().update([box(0, 0, 40), box(200, 0, 80), box(400, 0, 60)]) == [3, 1, 2]


def test_order_of_boxes_in_a_frame_does_not_change_the_ids():
    # Four people drifting, two of them close together; each frame's boxes in a random order.
    rng = np.random.default_rng(0)
    starts = np.array([[50, 50], [120, 60], [400, 300], [600, 80]], dtype=float)
    steps = np.array([[6, 2], [-5, 3], [0, -7], [-8, 0]], dtype=float)
    sides = [64, 58, 70, 50]
    frames = [[[*(starts[p] + t * steps[p]), sides[p], sides[p]] for p in range(4) if (t + p) % 5]
              for t in range(12)]
    reference = run(FaceTracker(), frames)
    for _ in range(5):
        tracker = FaceTracker()
        for boxes, expected in zip(frames, reference):
            perm = rng.permutation(len(boxes))
            ids = tracker.update([boxes[i] for i in perm])
            assert ids == [expected[i] for i in perm]


def test_keypoints_tell_apart_faces_whose_boxes_are_alike():
    # Two overlapping faces, one tilted; in the next frame both boxes are the same, so overlap
    # alone cannot say which is which, the keypoints can.
    tracker = FaceTracker()
    a, b = box(100, 100), box(130, 100)
    assert tracker.update([a, b], [keypoints_of(a, tilt=0.15), keypoints_of(b)]) == [1, 2]
    same = box(115, 100)
    tilted, level = keypoints_of(same, tilt=0.15), keypoints_of(same)
    assert tracker.update([same, same], [level, tilted]) == [2, 1]


def test_faces_with_and_without_keypoints_in_one_video():
    tracker = FaceTracker()
    assert tracker.update([box(100, 100), box(300, 100)], [keypoints_of(box(100, 100)), None]) == [1, 2]
    assert tracker.update([box(305, 100), box(105, 100)]) == [2, 1]
    assert tracker.update([box(110, 100), box(310, 100)],
                          [None, keypoints_of(box(310, 100))[:3]]) == [1, 2]


def test_an_empty_frame():
    tracker = FaceTracker()
    assert tracker.update([]) == []
    assert tracker.update([], []) == []
    assert tracker.update([box(10, 10)]) == [1]
    assert tracker.update([]) == []
    assert tracker.update([box(10, 10)]) == [1]


def test_a_fast_move_keeps_the_id_when_nobody_else_is_near():
    # 72 px per frame: 1.2 widths, no overlap with the previous box.
    frames = [[box(72 * t, 100)] for t in range(5)]
    assert run(FaceTracker(), frames) == [[1]] * 5


def test_a_face_far_from_any_track_is_someone_new():
    tracker = FaceTracker()
    assert run(tracker, [[box(0, 100)], [], [box(5 * SIDE, 100)]]) == [[1], [], [2]]


def test_reset_starts_the_ids_again():
    tracker = FaceTracker()
    run(tracker, [[box(0, 0), box(200, 0)]])
    tracker.reset()
    assert tracker.update([box(200, 0)]) == [1]


@pytest.mark.parametrize("boxes, keypoints", [
    ([[1, 2, 3]], None),
    ([[1, 2, 3, float("nan")]], None),
    ([box(0, 0)], []),
    ([box(0, 0)], [np.zeros((5, 3))]),
])
def test_bad_input_is_refused(boxes, keypoints):
    with pytest.raises(ValueError):
        FaceTracker().update(boxes, keypoints)


@pytest.mark.parametrize("settings", [{"max_missed_frames": -1}, {"max_missed_frames": 1.5},
                                      {"min_iou": 0}, {"max_centre_distance": -1}])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ValueError):
        FaceTracker(**settings)


def test_a_box_s_centre_and_size():
    from facial_emotion.tracking import _centre, _size

    np.testing.assert_array_equal(_centre(np.array([10.0, 20.0, 30.0, 40.0])), [25.0, 40.0])
    assert _size(np.array([0.0, 0.0, 4.0, 9.0])) == 6.0  # the side of a square of the same area
    assert _size(np.array([0.0, 0.0, 0.5, 4.0])) == 2.0 and _size(np.array([0.0, 0.0, 4.0, 0.5])) == 2.0
    assert _size(np.array([0.0, 0.0, 0.0, 0.0])) == 1.0


@pytest.mark.parametrize("boxes, keypoints, message", [
    ([[1, 2, 3]], None, "a face box is [x, y, w, h], 4 finite numbers, not [1.0, 2.0, 3.0]"),
    ([box(0, 0)], [], "0 keypoint sets for 1 face boxes"),
    ([box(0, 0)], [np.zeros((5, 3))], "keypoints are a [k, 2] array of finite pixels, not shape (5, 3)"),
])
def test_bad_input_is_named(boxes, keypoints, message):
    with pytest.raises(ValueError) as caught:
        FaceTracker().update(boxes, keypoints)
    assert str(caught.value) == message


def test_the_velocity_counts_the_missed_frames_since_the_last_match():
    # 10-px faces moving 19 px a frame, missed for two frames: the track's speed is the distance
    # over three frames, not two, so it is predicted where it is, and not near someone new.
    tracker = FaceTracker()
    assert run(tracker, [[box(0, 0, 10)], [box(19, 0, 10)], [], [], [box(76, 0, 10)]]) == [[1], [1], [], [], [1]]
    assert tracker.update([box(95, 0, 10), box(88, 0, 10)]) == [1, 2]


def test_keypoints_are_predicted_to_move_with_the_face():
    # A face moving right; next, two faces with one box, one whose keypoints moved on with it and
    # one whose keypoints stayed behind: the first is the same person.
    tracker = FaceTracker()
    for x in (100, 110):
        tracker.update([box(x, 100)], [keypoints_of(box(x, 100))])
    ahead, behind = keypoints_of(box(120, 100)), keypoints_of(box(100, 100))
    assert tracker.update([box(120, 100), box(120, 100)], [behind, ahead]) == [2, 1]


@pytest.mark.parametrize("settings", [{"max_missed_frames": 0}, {"min_iou": 1}, {"max_centre_distance": 0},
                                      {"max_centre_distance": 0.5}, {"keypoint_weight": 0}, {"keypoint_weight": 0.5}])
def test_settings_at_their_limits_are_taken(settings):
    FaceTracker(**settings).update([box(0, 0)])


@pytest.mark.parametrize("settings, message", [
    ({"max_missed_frames": 1.5}, "max_missed_frames must be a whole number >= 0, not 1.5"),
    ({"min_iou": 1.5}, "min_iou must be in (0, 1], not 1.5"),
    ({"keypoint_weight": -1}, "max_centre_distance and keypoint_weight must be >= 0"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError) as caught:
        FaceTracker(**settings)
    assert str(caught.value) == message


def test_a_face_exactly_the_farthest_distance_away_is_the_same_person_and_further_is_someone_new():
    # 10-px faces that do not overlap: 20 px between centres is 2 face sizes, the limit.
    assert run(FaceTracker(), [[box(0, 0, 10)], [box(20, 0, 10)]]) == [[1], [1]]
    assert run(FaceTracker(), [[box(0, 0, 10)], [box(21, 0, 10)]]) == [[1], [2]]


@pytest.mark.parametrize("offset, ids", [(12, [1, 2]), (24, [2, 1])])
def test_keypoints_weigh_against_overlap_by_their_distance_in_face_sizes(offset, ids):
    # The same box with keypoints `offset` px off (cost offset / 60) against a box 10 px away
    # (IoU 50/70, cost 0.286) with the track's own keypoints: 12 px off still wins, 24 px does not.
    tracker = FaceTracker()
    tracker.update([box(100, 100)], [keypoints_of(box(100, 100))])
    same_box = keypoints_of(box(100, 100)) + [offset, 0]
    assert tracker.update([box(100, 100), box(110, 100)], [same_box, keypoints_of(box(100, 100))]) == ids


def test_new_faces_are_numbered_by_area_not_by_height():
    assert FaceTracker().update([[0, 0, 10, 40], [100, 0, 30, 30]]) == [2, 1]
