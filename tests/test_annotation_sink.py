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


GREEN = (0, 255, 0)


def drawn(box, person=None, size=(300, 200)):
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    face = Face(list(box), "happy", 0.8, {"happy": 0.8}, person)
    out = annotation.draw_faces(rgb, [face])
    assert not rgb.any(), "the input is not drawn on"
    return out


def is_green(pixel):
    return tuple(int(value) for value in pixel) == GREEN


def green_run(row, start):
    """How many green pixels follow `start` along `row`."""
    end = start
    while end < len(row) and is_green(row[end]):
        end += 1
    return end - start


def test_the_box_is_drawn_on_the_face_s_edges_two_pixels_wide():
    out = drawn([100, 80, 60, 50])
    middle = 105
    assert [is_green(out[middle, x]) for x in (99, 100, 101, 102)] == [False, True, True, False]
    assert [is_green(out[middle, x]) for x in (157, 158, 159, 160)] == [False, True, True, False]
    assert [is_green(out[y, 130]) for y in (127, 128, 129, 130)] == [False, True, True, False]
    assert not out[90:120, 103:157].any(), "inside the box nothing is drawn"


def test_the_lines_grow_with_the_picture():
    out = drawn([400, 300, 200, 200], size=(1200, 900))  # 1200 / 300 = 4 px
    assert green_run(out[400], 400) == 4 and green_run(out[400], 596) == 4


def green_rows(out, x):
    return [y for y in range(out.shape[0]) if is_green(out[y, x])]


def test_the_label_sits_on_a_band_above_the_box_or_below_it_at_the_top():
    above = drawn([100, 80, 60, 50])
    band = [y for y in green_rows(above, 101) if y < 80]  # its left margin; a 12-px font and 2-px margins: about 16 rows
    assert band == list(range(band[0], 80)) and 60 <= band[0] <= 68
    band_end = 100 + green_run(above[band[0]], 100)
    text = above[band[0]:80, 100:band_end]
    assert (text[:, :, 1] < 128).sum() > 100, "dark text on the green band"
    right = max(np.nonzero((text[:, :, 1] < 128).any(axis=0))[0]) + 100
    assert band_end - right >= 3, "a margin of the line's width after the text"
    assert not above[:band[0]].any() and not above[130:].any(), "nothing else is drawn"
    below = drawn([100, 5, 60, 50])  # no room above: the band hangs under the box, from its bottom
    assert not below[:5].any()
    band = [y for y in green_rows(below, 101) if y >= 54]
    assert band == list(range(54, band[-1] + 1)) and 66 <= band[-1] <= 74


def test_a_person_s_label_names_the_person():
    alone, followed = drawn([100, 80, 60, 50]), drawn([100, 80, 60, 50], person=3)
    top = green_rows(alone, 101)[0]  # the band's first row is green from end to end
    assert green_run(followed[top], 100) > green_run(alone[top], 100) + 30  # "person 3: " is longer
    assert 40 < green_run(alone[top], 100) < 100  # "happy 80%" at 12 px, with its margins


@pytest.mark.parametrize("name, image_format", [("face.jpg", "JPEG"), ("FACE.JPG", "JPEG"), ("face.webp", "WEBP"),
                                                ("face.png", "PNG")])
def test_a_photo_is_annotated_in_its_own_format_with_the_box_drawn(tmp_path, name, image_format):
    (tmp_path / "out").mkdir()
    picture = np.zeros((60, 80, 3), np.uint8)
    photo = Result(str(tmp_path / name), [FACE], picture=picture)
    assert sink(tmp_path / "out").add(photo) is None
    stem, suffix = name.rsplit(".", 1)
    assert photo.annotated == str(tmp_path / "out" / f"{stem}_annotated.{suffix}")
    with Image.open(photo.annotated) as saved:
        assert saved.format == image_format and saved.size == (80, 60)
        edge = np.asarray(saved.convert("RGB"))[25, 10]  # the box's left edge, halfway down
    assert edge[1] > 200 and edge[0] < 60 and edge[2] < 60, edge
    assert not picture.any(), "the picture handed in is not drawn on"


def test_a_video_copy_whose_writer_fails_midway_is_not_kept_and_is_said_once(tmp_path, monkeypatch):
    written = []

    def fail_on_second(self, bgr):
        written.append(bgr.copy())
        if len(written) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(video.VideoWriter, "write", fail_on_second)
    annotate = sink(tmp_path)
    assert annotate.add(frame("clip.mp4", 0)) is None
    assert annotate.add(frame("clip.mp4", 1)) == f"{tmp_path}: No space left on device"
    assert annotate.add(frame("clip.mp4", 2)) is None and len(written) == 2  # not drawn after the failure
    annotate.close()
    assert os.listdir(tmp_path) == []
    assert written[0].shape == PICTURE.shape and is_green(written[0][25, 10])  # the face's box, drawn
