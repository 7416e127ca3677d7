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


# What the charts draw, read back from the figure before it is saved, and the saved file decoded:
# a chart that exists but shows the wrong numbers fails here.
@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions save, kept, and each file checked as a whole picture."""
    from PIL import Image

    figures = []
    save = plots._save_figure

    def keep(figure, path, new=False):
        figures.append(figure)
        save(figure, path, new)
        with Image.open(path) as picture:
            width, height = figure.get_size_inches() * 100
            assert picture.format == "PNG" and abs(picture.width - width) <= 1 and abs(picture.height - height) <= 1
            assert np.asarray(picture.convert("L")).std() > 5, "not a blank picture"

    monkeypatch.setattr(plots, "_save_figure", keep)
    return figures


def test_the_confusion_matrix_draws_true_classes_in_rows_and_both_panels(tmp_path, drawn):
    # true 0 -> 0, 1 -> 2 twice, 2 -> 2, 2 -> 1: not symmetric, so swapping rows and columns shows
    plots.save_confusion_matrix([0, 1, 1, 2, 2], [0, 2, 2, 2, 1], ["a", "b", "c"], tmp_path / "confusion.png")
    counts, normalised = drawn[0].axes
    assert [text.get_text() for text in counts.texts] == ["1", "0", "0", "0", "0", "2", "0", "1", "1"]
    assert [text.get_text() for text in normalised.texts] == ["1.00", "0.00", "0.00", "0.00", "0.00", "1.00",
                                                             "0.00", "0.50", "0.50"]
    assert counts.get_ylabel() == "true" and counts.get_xlabel() == "predicted"
    assert [label.get_text() for label in counts.get_yticklabels()] == ["a", "b", "c"]


def test_the_photo_chart_counts_each_emotion_s_faces(tmp_path, drawn):
    photos = [Result("a.jpg", [face("sad"), face("$happy")]), Result("b.jpg", [face("sad")]),
              Result("c.mp4", [face("a$^^$b")], video=True, frame=None, error="unreadable")]
    plots.save_plot(photos, CLASSES, tmp_path / "counts.png")
    [axes] = drawn[0].axes
    assert [bar.get_height() for bar in axes.patches] == [1, 2, 0]
    assert "in 2 images: 3 faces" in axes.get_title()


def test_the_video_chart_has_a_panel_per_person_with_the_share_each_emotion_led(tmp_path, drawn):
    frames = [Result("v.mp4", [face("sad", person=1)] + ([face("$happy", person=2)] if index % 2 else []),
                     video=True, frame=index, time=index / 10) for index in range(20)]
    plots.save_plot(frames, CLASSES, tmp_path / "video.png")
    first, second = drawn[0].axes
    assert first.get_title() == "person 1: in 100% of the frames"
    assert second.get_title() == "person 2: in 50% of the frames"
    assert [text.get_text() for text in first.get_legend().get_texts()] == [r"\$happy (0%)", "sad (100%)",
                                                                            r"a\$^^\$b (0%)"]
    happy_line = second.get_lines()[0]
    np.testing.assert_allclose(happy_line.get_xdata(), np.arange(20) / 10)
    assert np.isnan(happy_line.get_ydata()[0]) and happy_line.get_ydata()[1] == pytest.approx(0.8)


def test_the_training_curves_draw_the_history(tmp_path, drawn):
    history = {"loss": [1.5, 1.2, 1.1], "val_loss": [1.4, 1.3, 1.25], "accuracy": [0.3, 0.5, 0.6],
               "val_accuracy": [0.35, 0.45, 0.5], "elapsed_seconds": [60, 120, 240]}
    plots.save_training_curves(history, tmp_path / "curves.png")
    loss, accuracy, by_time = drawn[0].axes
    assert [list(line.get_ydata()) for line in loss.get_lines()] == [history["loss"], history["val_loss"]]
    assert [list(line.get_ydata()) for line in accuracy.get_lines()] == [history["accuracy"],
                                                                         history["val_accuracy"]]
    [line] = by_time.get_lines()
    assert list(line.get_xdata()) == [1, 2, 4] and list(line.get_ydata()) == history["val_accuracy"]


def test_the_prediction_grid_names_the_answer_and_marks_wrong_ones_red(tmp_path, drawn):
    faces = np.stack([np.full((48, 48, 1), 60 * index, np.float32) for index in range(3)])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    plots.save_prediction_grid(faces, np.array([0, 2, 2]), probabilities, ["a", "b", "c"], tmp_path / "grid.png")
    shown = {}
    for axis in drawn[0].axes:
        if axis.get_images():
            level = int(axis.get_images()[0].get_array()[0, 0]) // 60
            shown[level] = (axis.get_title(), axis.title.get_color())
    assert shown == {0: ("a 90%", "green"), 1: ("b 70%\n(true: c)", "red"), 2: ("c 60%", "green")}
