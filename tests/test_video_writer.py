"""facial_emotion.video's writer and reader, without a model: an annotated copy is named only
when it reads back whole, a failure is one line and leaves no partial file, and frames whose
capture reports no success or no timestamp are handled as documented. Each test here was written
against a mutation of the code that the suite let through."""

import os

import numpy as np
import pytest

from facial_emotion import video
from facial_emotion.errors import UserError

SHAPE = (48, 64, 3)


def frames(count):
    return [np.full(SHAPE, 40 * index % 255, np.uint8) for index in range(count)]


def written(path, count, keep=True):
    writer = video.VideoWriter(path, 5.0, SHAPE)
    for bgr in frames(count):
        writer.write(bgr)
    writer.close(keep=keep)
    return writer


def test_a_finished_copy_holds_every_frame_under_its_name_and_no_partial_file(tmp_path):
    writer = written(tmp_path / "clip.mp4", 5)
    assert writer.frames == 5 and writer.path == tmp_path / "clip.mp4"
    assert video.readable_frames(tmp_path / "clip.mp4") == 5
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_a_copy_not_kept_leaves_nothing(tmp_path):
    written(tmp_path / "clip.mp4", 3, keep=False)
    assert os.listdir(tmp_path) == []


def test_a_name_taken_meanwhile_gives_the_copy_the_next_free_name(tmp_path):
    writer = video.VideoWriter(tmp_path / "clip.mp4", 5.0, SHAPE)
    writer.write(frames(1)[0])
    (tmp_path / "clip.mp4").write_text("another run's")
    writer.close()
    assert writer.path == tmp_path / "clip_2.mp4" and video.readable_frames(writer.path) == 1
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "clip_2.mp4"]


def test_a_copy_that_does_not_read_back_whole_is_an_error_and_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "readable_frames", lambda path: 2)  # what a full disk leaves
    with pytest.raises(UserError) as raised:
        written(tmp_path / "clip.mp4", 3)
    assert str(raised.value) == (f"{tmp_path / 'clip.mp4'}: cannot write annotated video "
                                 "(it did not read back whole: a full disk?)")
    assert os.listdir(tmp_path) == []


def test_a_copy_that_cannot_be_named_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def refused(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "link", refused)
    with pytest.raises(UserError) as raised:
        written(tmp_path / "clip.mp4", 2)
    assert str(raised.value) == f"{tmp_path / 'clip.mp4'}: cannot write annotated video (Permission denied)"
    assert os.listdir(tmp_path) == []


def test_a_copy_that_cannot_be_started_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(UserError) as raised:
        video.VideoWriter(tmp_path / "missing" / "clip.mp4", 5.0, SHAPE)
    assert str(raised.value) == f"{tmp_path / 'missing' / 'clip.mp4'}: cannot write annotated video (No such file or directory)"
    with pytest.raises(UserError) as raised:
        video.VideoWriter(tmp_path / "clip.xyz", 5.0, SHAPE)  # no container OpenCV knows
    assert str(raised.value) == f"{tmp_path / 'clip.xyz'}: cannot write annotated video (OpenCV cannot open it for writing)"
    assert os.listdir(tmp_path) == []


class Capture:
    """A capture that answers the given (ok, frame) reads, then the given timestamps."""

    def __init__(self, reads, stamps=()):
        self.reads, self.stamps = list(reads), list(stamps)

    def read(self):
        return self.reads.pop(0) if self.reads else (False, None)

    def get(self, _):
        return self.stamps.pop(0)


def test_a_read_that_reports_failure_ends_the_frames_even_with_a_picture():
    picture = np.zeros(SHAPE, np.uint8)
    assert len(list(video.read_frames(Capture([(True, picture), (False, picture), (True, picture)])))) == 1


def test_a_first_frame_without_a_timestamp_is_at_zero():
    picture = np.zeros(SHAPE, np.uint8)
    stamped = video.read_timed_frames(Capture([(True, picture)] * 3, [float("nan"), 200, -5]), fps=10)
    assert [time for _, time in stamped] == pytest.approx([0, 0.2, 0.3])


class Opened:
    """What cv2.VideoCapture reports of a file, as set here."""

    def __init__(self, fps=25.0, count=10.0, width=64.0, height=48.0):
        import cv2

        self.properties = {cv2.CAP_PROP_FPS: fps, cv2.CAP_PROP_FRAME_COUNT: count,
                           cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height}
        self.released = False

    def isOpened(self):
        return True

    def get(self, key):
        return self.properties[key]

    def release(self):
        self.released = True


@pytest.fixture
def reported(monkeypatch, tmp_path):
    """open_video on a file whose capture reports what the test sets."""
    import cv2

    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 64)

    def open_with(**properties):
        capture = Opened(**properties)
        monkeypatch.setattr(cv2, "VideoCapture", lambda *args: capture)
        return video.open_video(path)
    return path, open_with


@pytest.mark.parametrize("fps, used", [(0.0, 25.0), (0.5, 0.5), (30.0, 30.0), (1000.0, 1000.0), (1000.5, 25.0),
                                       (float("nan"), 25.0)])
def test_a_frame_rate_is_the_file_s_unless_it_is_nonsense(reported, fps, used):
    _, open_with = reported
    assert open_with(fps=fps)[1] == used


@pytest.mark.parametrize("count, used", [(10.0, 10), (0.0, 0), (-1.0, 0), (None, 0)])
def test_an_unknown_frame_count_is_zero(reported, count, used):
    _, open_with = reported
    assert open_with(count=count)[2] == used


@pytest.mark.parametrize("width, height", [(0.0, 48.0), (64.0, 0.0), (0.0, 0.0)])
def test_frames_of_unknown_size_are_not_refused_for_it(reported, width, height):
    _, open_with = reported
    assert open_with(width=width, height=height)[0].isOpened()


@pytest.mark.parametrize("width, height", [(1.0, 48.0), (64.0, 1.0), (15.0, 15.0)])
def test_frames_too_small_for_a_face_are_refused(reported, width, height):
    path, open_with = reported
    with pytest.raises(UserError) as raised:
        open_with(width=width, height=height)
    assert str(raised.value) == f"{path}: too small to hold a face ({int(width)}x{int(height)} pixels)"


def test_frames_of_more_than_100_megapixels_are_refused(reported):
    path, open_with = reported
    assert open_with(width=10_000.0, height=10_000.0)[0].isOpened()  # exactly 100 MP passes
    with pytest.raises(UserError) as raised:
        open_with(width=12_000.0, height=9_000.0)
    assert str(raised.value) == f"{path}: 12000x9000 frames are more than 100 megapixels; refused"
