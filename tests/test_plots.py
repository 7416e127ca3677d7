"""facial_emotion.plots: names drawn as written, charts whole or not at all, smoothing with gaps."""

import numpy as np
import pytest

from facial_emotion import plots
from facial_emotion.errors import UserError
from facial_emotion.pipeline import Face, Result

# Read as mathtext, "$^^$" would not parse: only names drawn as written draw at all.
CLASSES = ["$happy", "sad", "a$^^$b"]
PNG = b"\x89PNG\r\n\x1a\n"


def face(emotion, person=None, classes=CLASSES):
    scores = {name: (0.8 if name == emotion else 0.1) for name in classes}
    return Face([0, 0, 10, 10], emotion, 0.8, scores, person)


def video_results(name="clip $^^$ 5.mp4", frames=30, classes=CLASSES):
    results = []
    for index in range(frames):
        faces = [] if index == 5 else [face(classes[index % len(classes)], person=1, classes=classes)]
        results.append(Result(name, faces, video=True, frame=index, time=index / 25))
    return results


def test_dollar_signs_in_a_video_name_and_class_names_draw(tmp_path):
    path = tmp_path / "video.png"
    plots.save_plot(video_results(), CLASSES, path)
    assert path.read_bytes().startswith(PNG)


def test_dollar_signs_in_class_names_draw_in_the_image_chart_and_the_confusion_matrix(tmp_path):
    photos = [Result("$a.jpg", [face("$happy"), face("a$^^$b")]), Result("b.jpg", [face("sad")])]
    plots.save_plot(photos, CLASSES, tmp_path / "counts.png")
    assert (tmp_path / "counts.png").read_bytes().startswith(PNG)
    plots.save_confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], CLASSES, tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").read_bytes().startswith(PNG)
    faces = np.zeros((3, 48, 48, 1), dtype=np.float32)
    plots.save_prediction_grid(faces, np.array([0, 1, 2]), np.eye(3)[[0, 2, 2]], CLASSES, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG)


def test_a_failed_draw_leaves_no_file(tmp_path, monkeypatch):
    # Without the escaping "$...$" is mathtext, and this one does not parse: matplotlib fails mid-draw.
    monkeypatch.setattr(plots, "plain_text", str)
    path = tmp_path / "video.png"
    with pytest.raises(UserError, match=r"video\.png: cannot be drawn"):
        plots.save_plot(video_results(classes=["a$^^$b", "y"]), ["a$^^$b", "y"], path)
    assert list(tmp_path.iterdir()) == []
    # A run folder's chart, replaced atomically: the old one stays whole.
    old = tmp_path / "confusion_matrix.png"
    old.write_bytes(b"old chart")
    figure = plots._figure()
    figure.subplots().set_title("a$^^$b")
    with pytest.raises(UserError, match="cannot be drawn"):
        plots._save_figure(figure, old)
    assert old.read_bytes() == b"old chart" and list(tmp_path.iterdir()) == [old]


def test_a_plot_never_replaces_a_file(tmp_path):
    path = tmp_path / "video.png"
    path.write_bytes(b"mine")
    with pytest.raises(UserError, match="already exists"):
        plots.save_plot(video_results(), CLASSES, path)
    assert path.read_bytes() == b"mine"


def test_smooth_averages_neighbours_and_keeps_gaps():
    times = np.arange(20) / 10  # 10 frames a second: a 0.5 s window is 5 frames
    values = np.where(np.arange(20) % 2, 1.0, 0.0)
    values[[7, 8]] = np.nan
    smoothed = plots.smooth(values, times)
    assert np.isnan(smoothed[7]) and np.isnan(smoothed[8])
    assert np.isfinite(np.delete(smoothed, [7, 8])).all()
    assert smoothed[12] == pytest.approx((0 + 1 + 0 + 1 + 0) / 5)  # frames 10..14
    assert smoothed[9] == pytest.approx((1 + 0 + 1) / 3)  # frames 9..11: the gap does not count
    constant = plots.smooth(np.full(20, 0.3), times)
    np.testing.assert_allclose(constant, 0.3)
    np.testing.assert_allclose(plots.smooth([0.4], [0.0]), [0.4])


def test_the_video_timeline_follows_each_person_and_leaves_gaps_where_absent():
    results = video_results()
    timeline, = plots.person_timelines(results, CLASSES)
    assert timeline["person"] == 1
    assert np.isnan(timeline["scores"]["sad"][5]) and timeline["scores"]["sad"][4] == 0.8
    assert timeline["present"] == pytest.approx(29 / 30)
    assert timeline["led"]["$happy"] == pytest.approx(10 / 29)


def test_a_video_shorter_than_the_smoothing_window_draws(tmp_path):
    np.testing.assert_allclose(plots.smooth(np.full(10, 0.3), np.arange(10) / 25), 0.3)
    plots.save_plot(video_results(frames=10), CLASSES, tmp_path / "short.png")
