"""--webcam's loop (batch.run_webcam) with a camera and a window stood in: which camera opens, what
is shown, q ends it (whatever modifier bits the key carries), and a build without windows says so
in one line. No camera or screen is needed."""

import cv2
import numpy as np
import pytest

from facial_emotion import batch
from facial_emotion.errors import UserError
from facial_emotion.pipeline import Face


class Camera:
    """A capture of `count` BGR frames, each filled with its index."""

    def __init__(self, count):
        self.frames = [np.full((40, 60, 3), index, np.uint8) for index in range(count)]
        self.read_count = 0
        self.released = False

    def read(self):
        if self.read_count == len(self.frames):
            return False, None
        self.read_count += 1
        return True, self.frames[self.read_count - 1]

    def release(self):
        self.released = True


class Pipeline:
    """Pipeline.frames' shape: (index, rgb, faces) for each frame read, one face on frame 1."""

    def frames(self, rgb_frames):
        for index, rgb in enumerate(rgb_frames):
            faces = [Face([10, 5, 20, 20], "happy", 0.9, {"happy": 0.9})] if index == 1 else []
            yield index, rgb, faces


class Window:
    """cv2.imshow, waitKey and destroyAllWindows: keys[i] is pressed after frame i is shown."""

    def __init__(self, keys, fail_show=False, fail_destroy=False):
        self.keys, self.fail_show, self.fail_destroy = list(keys), fail_show, fail_destroy
        self.shown, self.waits, self.destroyed = [], [], False

    def imshow(self, title, image):
        if self.fail_show:
            raise cv2.error("The function is not implemented. Rebuild the library with GTK+ support")
        self.shown.append((title, image.copy()))

    def waitKey(self, delay):  # noqa: N802 (OpenCV's name)
        self.waits.append(delay)
        return self.keys.pop(0) if self.keys else -1

    def destroyAllWindows(self):  # noqa: N802
        self.destroyed = True
        if self.fail_destroy:
            raise cv2.error("no window")


@pytest.fixture
def webcam(monkeypatch):
    def setup(frames, keys, **window_options):
        camera, window, opened = Camera(frames), Window(keys, **window_options), []
        monkeypatch.setattr(batch, "open_camera", lambda index: opened.append(index) or camera)
        for name in ("imshow", "waitKey", "destroyAllWindows"):
            monkeypatch.setattr(cv2, name, getattr(window, name))
        return camera, window, opened
    return setup


def test_each_frame_is_shown_with_its_faces_until_q(webcam):
    camera, window, opened = webcam(frames=5, keys=[-1, ord("a"), ord("q"), -1])
    batch.run_webcam(Pipeline(), index=2)
    assert opened == [2]
    assert [title for title, _ in window.shown] == ["emotions (q to quit)"] * 3
    assert camera.read_count == 3 and window.waits == [1, 1, 1]  # q after the third frame ends it
    assert camera.released and window.destroyed
    plain, boxed = window.shown[0][1], window.shown[1][1]
    assert plain.shape == (40, 60, 3) and (plain == 0).all()  # no face: the frame as read
    assert (boxed[15, 10] != 1).any() and (boxed[15, 20] == 1).all()  # frame 1's box: its left edge drawn, inside kept


def test_the_first_camera_is_the_default(webcam):
    _, _, opened = webcam(frames=1, keys=[])
    batch.run_webcam(Pipeline())
    assert opened == [0]


def test_q_with_modifier_bits_above_the_low_byte_ends_it_and_other_keys_do_not(webcam):
    camera, window, _ = webcam(frames=6, keys=[ord("Q"), 0x100 | ord("a"), 0x100000 | ord("q"), -1])
    batch.run_webcam(Pipeline())
    assert camera.read_count == 3 and len(window.shown) == 3


def test_the_loop_ends_with_the_camera_and_releases_it(webcam):
    camera, window, _ = webcam(frames=4, keys=[])
    batch.run_webcam(Pipeline())
    assert len(window.shown) == 4 and camera.released and window.destroyed


def test_a_build_without_windows_is_one_line_naming_the_package_to_install(webcam):
    camera, window, _ = webcam(frames=3, keys=[], fail_show=True, fail_destroy=True)
    with pytest.raises(UserError) as caught:
        batch.run_webcam(Pipeline())
    assert str(caught.value) == ("--webcam needs an OpenCV build with windows: pip install opencv-python<5 "
                                 "(the headless build this project installs has none)")
    assert camera.released and window.destroyed  # the failing destroyAllWindows is swallowed
