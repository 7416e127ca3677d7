"""facial_emotion.annotation.AnnotateSink, without a model: where each copy goes, in which
format, and what happens to a video's copy when its video or its writer fails. Each test here was
written against a mutation of the code that the suite let through."""

import os

import numpy as np
import pytest
from PIL import Image

from facial_emotion import annotation, video
from facial_emotion.annotation import AnnotateSink
from facial_emotion.errors import UserError
from facial_emotion.outputs import Run
from facial_emotion.pipeline import Face, Result

PICTURE = np.full((60, 80, 3), 90, np.uint8)
FACE = Face([10, 10, 30, 30], "happy", 0.8, {"happy": 0.8, "sad": 0.2})


def sink(folder, reported=None):
    return AnnotateSink(folder, Run(["happy", "sad"], report=(reported.append if reported is not None else print)))


def frame(name, index):
    return Result(name, [FACE], video=True, frame=index, time=index / 5, fps=5, picture=PICTURE)


def test_a_photo_in_a_format_pillow_cannot_write_is_annotated_as_png(tmp_path):
    photo = Result(str(tmp_path / "face.dat"), [FACE], picture=PICTURE)
    (tmp_path / "out").mkdir()
    assert sink(tmp_path / "out").add(photo) is None
    assert photo.annotated == str(tmp_path / "out" / "face_annotated.png")
    with Image.open(photo.annotated) as saved:
        assert saved.format == "PNG" and saved.size == (80, 60)


def test_a_photo_s_name_taken_at_the_last_moment_gives_way_to_a_free_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken.jpg").write_text("another run's")
    monkeypatch.setattr(annotation, "unused_path", lambda folder, source, suffix: out / "taken.jpg")
    photo = Result(str(tmp_path / "a.jpg"), [FACE], picture=PICTURE)
    assert sink(out).add(photo) is None
    assert photo.annotated == str(out / "taken_2.jpg") and (out / "taken.jpg").read_text() == "another run's"


def test_a_video_that_stops_being_readable_loses_its_copy(tmp_path):
    annotate = sink(tmp_path)
    for index in range(3):
        assert annotate.add(frame("clip.mp4", index)) is None
    assert annotate.add(Result("clip.mp4", video=True, error="ended after 3 of its 9 frames")) is None
    annotate.close()
    assert os.listdir(tmp_path) == []  # neither the copy nor its hidden partial file


def test_a_video_whose_copy_cannot_start_says_so_once(tmp_path):
    annotate = sink(tmp_path / "missing")
    assert annotate.add(frame("clip.mp4", 0)) == (f"{tmp_path / 'missing' / 'clip_annotated.mp4'}: cannot write "
                                                   "annotated video (No such file or directory)")
    assert annotate.add(frame("clip.mp4", 1)) is None  # said once; the later frames are not drawn


def test_a_copy_that_fails_when_closed_is_reported_for_its_own_video(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "readable_frames", lambda path: 0)  # as a full disk leaves it
    reported = []
    annotate = sink(tmp_path, reported)
    annotate.add(frame("one.mp4", 0))
    assert annotate.add(frame("two.mp4", 0)) is None  # this frame is fine: the problem is one.mp4's
    assert reported == [f"{tmp_path / 'one_annotated.mp4'}: cannot write annotated video "
                        "(it did not read back whole: a full disk?)"]
    with pytest.raises(UserError, match="two_annotated.mp4: cannot write annotated video"):
        annotate.close()
