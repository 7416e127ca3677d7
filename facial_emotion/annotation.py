"""Annotated copies: boxes and labels drawn on photos and video frames, written to a folder as
the AnnotateSink of outputs.OUTPUTS (the one sink that needs the pictures)."""

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facial_emotion.errors import UserError
from facial_emotion.files import create_new_file, describe_oserror
from facial_emotion.video import VideoWriter


def unused_path(folder, source, suffix=None):
    """folder/<name>_annotated<suffix>, numbered if taken: never writes over anything."""
    folder = Path(folder)
    suffix = suffix or source.suffix
    candidate = folder / f"{source.stem}_annotated{suffix}"
    index = 2
    # lexists: a dangling symlink counts as taken; a name too long reads as free and fails to open.
    while os.path.lexists(candidate) or candidate.resolve() == source.resolve():
        candidate = folder / f"{source.stem}_annotated_{index}{suffix}"
        index += 1
    return candidate


def draw_faces(rgb, faces):
    """Boxes and labels (emotion, confidence, and the person in a video) drawn on an RGB uint8
    array (returned)."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 40)))
    for face in faces:
        x, y, w, h = face.box
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 255, 0), width=line)
        label = (f"person {face.person}: " if face.person is not None else "") + f"{face.emotion} {face.confidence:.0%}"
        left, top, right, bottom = draw.textbbox((x, y), label, font=font)
        top_edge = y - (bottom - top) - 2 * line if y - (bottom - top) - 2 * line >= 0 else y + h
        draw.rectangle([x, top_edge, x + (right - left) + 2 * line, top_edge + (bottom - top) + 2 * line],
                       fill=(0, 255, 0))
        draw.text((x + line, top_edge + line - (top - y)), label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


class AnnotateSink:
    """Annotated copies in a folder: photos in their own format where Pillow writes it, videos as
    .mp4 at the rate of the analysed frames; each appears whole or not at all and never over
    another file. A copy that cannot be written is its file's problem; the next file still gets
    one."""

    def __init__(self, folder, run):
        self.folder, self.report = Path(folder), run.report
        self.video, self.writer, self.failed = None, None, set()

    def add(self, result):
        if self.video is not None and result.file != self.video:
            problem = self._finish_video(keep=True)
            if problem:  # the last video's, not this result's
                self.report(problem)
        if result.video:
            return self._frame(result)
        if result.picture is not None:
            return self._photo(result)
        return None

    def _photo(self, result):
        source = Path(result.file)
        # The input's own format where Pillow can write it (a file named "face" or "x.dat" cannot be).
        image_format = Image.registered_extensions().get(source.suffix.lower())
        writable = image_format in Image.SAVE
        try:
            path = unused_path(self.folder, source, source.suffix if writable else ".png")
        except OSError as error:
            return f"{self.folder}: cannot write annotated image ({describe_oserror(error)})"
        drawn = Image.fromarray(draw_faces(result.picture.copy(), result.faces))
        try:
            path = create_new_file(path, lambda partial: save_checked(drawn, partial, image_format if writable else "PNG"),
                                   "annotated image", renumber=True)  # another run may have taken the name
        except UserError as error:
            return str(error)
        except ValueError as error:  # Pillow cannot write this mode in this format
            return f"{path}: cannot write annotated image ({error})"
        result.annotated = str(path)
        return None

    def _frame(self, result):
        if result.frame is None:  # the video could not be read, or stopped being readable
            if self.video == result.file:
                self._finish_video(keep=False)
            return None
        if result.file in self.failed:
            return None
        try:
            if self.writer is None:
                self.video = result.file
                path = unused_path(self.folder, Path(result.file), ".mp4")
                self.writer = VideoWriter(path, result.fps, result.picture.shape)
            self.writer.write(bgr_with_faces(result.picture, result.faces))
        except (UserError, OSError) as error:
            self._finish_video(keep=False)
            self.failed.add(result.file)  # said once; the video's later frames are not drawn
            return str(error) if isinstance(error, UserError) else f"{self.folder}: {describe_oserror(error)}"
        return None

    def _finish_video(self, keep):
        writer, self.writer, self.video = self.writer, None, None
        if writer is None:
            return None
        try:
            writer.close(keep=keep)
        except UserError as error:
            return str(error)
        return None

    def close(self):
        problem = self._finish_video(keep=True)
        if problem:
            raise UserError(problem)


def save_checked(image, path, image_format):
    """Save, then read the file back whole: Pillow's save can return normally on a full disk
    and leave a truncated file."""
    image.save(path, format=image_format)
    try:
        with Image.open(path) as saved:
            saved.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError and others for a truncated file
        raise OSError(f"it did not read back whole: {error}") from None


def bgr_with_faces(rgb, faces):
    """draw_faces on a copy of a frame, in OpenCV's BGR order (video files, the webcam)."""
    import cv2

    return cv2.cvtColor(draw_faces(rgb.copy(), faces), cv2.COLOR_RGB2BGR)
