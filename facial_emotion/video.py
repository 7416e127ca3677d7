"""Video files and cameras in, annotated video out, through OpenCV's FFmpeg build."""

import contextlib
import math
import os
import tempfile
from pathlib import Path

from facial_emotion.console import quiet_native_stderr
from facial_emotion.errors import UserError
from facial_emotion.files import check_regular_file, give_name, remove_quietly, temporary_path
from facial_emotion.images import MAX_IMAGE_PIXELS, check_size

# Containers that do not know their frame rate report 0 or nonsense; 25 is the PAL default.
DEFAULT_FPS = 25.0
# A frame rate above this is a broken header, not a camera.
MAX_FPS = 1000.0


def open_video(path):
    """An open cv2.VideoCapture of a video file, its frame rate and its frame count (0: unknown).

    FFmpeg writes its own complaints about a broken file ("moov atom not found") straight to
    file descriptor 2; they are muted, and the UserError says what is wrong in one line.
    """
    import cv2

    path = Path(path)
    check_regular_file(path)
    with ffmpeg_safe_path(path) as safe, quiet_native_stderr():
        capture = cv2.VideoCapture(safe, cv2.CAP_FFMPEG)
        opened = capture.isOpened()
    if not opened:
        raise UserError(f"{path}: not a video file OpenCV can read")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps <= MAX_FPS else DEFAULT_FPS
    frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width > 0 and height > 0:
        try:
            check_size(path, width, height)
            if width * height > MAX_IMAGE_PIXELS:  # a 2 MB file of 12000x12000 frames takes 4 GB
                raise UserError(f"{path}: {width}x{height} frames are more than "
                                f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; refused")
        except UserError:
            capture.release()
            raise
    return capture, fps, frame_count


@contextlib.contextmanager
def ffmpeg_safe_path(path):
    """A name FFmpeg reads as this very file: absolute, so that `concat:a|b`, `http:x.mp4` or
    `pipe:0.mp4` are file names and not protocols; and, when the name is not plain printable
    ASCII (non-UTF-8 bytes crashed OpenCV, and so did any non-ASCII name under LC_ALL=C), a
    link with a plain name to it, in a temporary folder removed once the file is open."""
    absolute = os.path.abspath(path)
    if absolute.isascii() and absolute.isprintable():
        yield absolute
        return
    with tempfile.TemporaryDirectory(prefix="video-") as folder:
        link = os.path.join(folder, "video" + "".join(c for c in Path(absolute).suffix if c.isascii() and c.isalnum()
                                                      or c == "."))
        os.symlink(os.fsencode(absolute), link)
        yield link


def open_camera(index):
    """An open cv2.VideoCapture of a camera; OpenCV's V4L2 and FFmpeg warnings muted."""
    import cv2

    with quiet_native_stderr():
        capture = cv2.VideoCapture(index)
        opened = capture.isOpened()
    if not opened:
        raise UserError(f"camera {index}: cannot be opened")
    return capture


def read_frames(capture):
    """RGB frames of an open capture until it ends, FFmpeg's decoding noise muted."""
    import cv2

    while True:
        with quiet_native_stderr():
            ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def read_timed_frames(capture, fps):
    """(RGB frame, its time in seconds) of an open video file until it ends. The time is the
    stream's own timestamp, so that a variable-frame-rate video (a phone's) is timed right,
    where index / average frame rate drifts by seconds; a frame whose timestamp is missing or
    does not advance is placed 1 / fps after the one before."""
    import cv2

    previous = None
    for rgb in read_frames(capture):
        stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000  # the frame just read
        if not math.isfinite(stamp) or stamp < 0 or (previous is not None and stamp <= previous):
            stamp = 0.0 if previous is None else previous + 1 / fps
        previous = stamp
        yield rgb, stamp


class VideoWriter:
    """An annotated copy of a video, written as frames come and named only when it is whole: it
    is written to a hidden partial file and given its name when closed, never over a file."""

    def __init__(self, path, fps, shape):
        import cv2

        self.path, self.frames = Path(path), 0
        try:
            self.partial = temporary_path(path)
        except OSError as error:
            raise UserError(f"{self.path}: cannot write annotated video ({error.strerror or error})") from None
        with quiet_native_stderr():
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                          (shape[1], shape[0]))
            opened = self.writer.isOpened()
        if not opened:
            self.writer.release()
            remove_quietly(self.partial)
            raise UserError(f"{self.path}: cannot write annotated video (OpenCV cannot open it for writing)")

    def write(self, bgr):
        with quiet_native_stderr():  # FFmpeg's "Failed to write frame" on a full disk: close() says it once
            self.writer.write(bgr)
        self.frames += 1

    def close(self, keep=True):
        """Finish the file and name it (`keep`) once it reads back with every frame written
        (OpenCV's writer says nothing of a full disk), or throw it away."""
        with quiet_native_stderr():
            self.writer.release()
        if keep and readable_frames(self.partial) < self.frames:
            remove_quietly(self.partial)
            raise UserError(f"{self.path}: cannot write annotated video (it did not read back whole: a full disk?)")
        if keep:
            self.path = give_name(self.partial, self.path, "annotated video", renumber=True)
        else:
            remove_quietly(self.partial)


def readable_frames(path):
    """How many frames a video file reads back."""
    import cv2

    with quiet_native_stderr():
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        count = 0
        while capture.isOpened() and capture.grab():
            count += 1
        capture.release()
    return count
