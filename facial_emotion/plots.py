"""Charts, drawn with matplotlib's Figure API (no pyplot: no window, no global state): the
prediction charts of `predict.py --plot` and the training run's charts. Every chart is written
whole or not at all."""

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from facial_emotion.errors import UserError, first_line
from facial_emotion.files import create_new_file, replace_atomically

# What matplotlib writes, by suffix; anything else is refused before any work.
PLOT_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}
# --plot's video lines are a centred rolling mean over this long: frame-to-frame jitter goes,
# a change of expression (about a second) stays.
SMOOTHING_SECONDS = 0.5
# A person gets a timeline of their own when present in at least this share of the analysed
# frames: fewer are passers-by or detector false alarms.
MIN_PERSON_SHARE = 0.1
# At most this many people's panels in one chart; more would be unreadable.
MAX_PERSONS = 6
# Confusion matrices with more classes than this get colours only: a number in each of n^2 cells
# is unreadable, and 250 classes took 5 GB and 96 s to draw.
MAX_ANNOTATED_CLASSES = 30


def use_a_writable_matplotlib_folder():
    """matplotlib warns in two lines when MPLCONFIGDIR cannot be written (then it makes a
    temporary one itself): this process uses a temporary one of its own instead, quietly."""
    folder = os.environ.get("MPLCONFIGDIR")
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="matplotlib-")


use_a_writable_matplotlib_folder()  # before matplotlib is first imported


def plain_text(text):
    """Text matplotlib draws as written: a `$` would start mathtext (and a lone one raises)."""
    return str(text).replace("$", r"\$")


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _save_figure(figure, path, new=False):
    """Write a figure whole: to a new file that is never written over (`new`), or replacing a run
    folder's older chart."""
    path = Path(path)
    image_format = PLOT_FORMATS.get(path.suffix.lower(), "png")
    write = lambda partial: figure.savefig(partial, format=image_format, dpi=100)  # noqa: E731
    try:
        if new:
            create_new_file(path, write, "--plot file")
        else:
            replace_atomically(path, write)
    except (ValueError, RuntimeError) as error:  # matplotlib could not draw it
        raise UserError(f"{path}: cannot be drawn ({first_line(error)})") from None


# ---------------------------------------------------------------------------------------------
# Prediction: --plot
# ---------------------------------------------------------------------------------------------
def smooth(values, times, seconds=SMOOTHING_SECONDS):
    """Centred rolling mean over about `seconds`; frames without a face stay gaps."""
    values = np.asarray(values, dtype=float)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    window = max(1, min(round(seconds / step) if step > 0 else 1, len(values)))  # at most the clip
    window -= 1 - window % 2  # odd, so that it is centred on its frame
    present = ~np.isnan(values)
    kernel = np.ones(window)
    sums = np.convolve(np.where(present, values, 0.0), kernel, mode="same")
    counts = np.convolve(present.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = sums / counts
    return np.where(present, smoothed, np.nan)


def first_video(results):
    """The analysed frames of the first video among `results`, in order (empty if none)."""
    start = next((index for index, result in enumerate(results) if result.frame is not None), None)
    if start is None:
        return []
    video = [results[start]]
    for result in results[start + 1:]:
        if result.frame is None or result.file != video[0].file or result.frame <= video[-1].frame:
            break
        video.append(result)
    return video


def person_timelines(video, class_names):
    """One timeline per person of a video's frames (`person`; without tracks, the largest face of
    each frame is one person), for the people in at least MIN_PERSON_SHARE of the frames, most
    present first. Each: person, time, scores (per class, NaN where absent), led (per class, the
    share of the frames present that it led), present (share of all frames)."""
    times = np.array([result.time for result in video], dtype=float)
    people = {}
    for position, result in enumerate(video):
        for rank, face in enumerate(result.faces):
            person = face.person if face.person is not None else (1 if rank == 0 else None)
            if person is not None and position not in people.setdefault(person, {}):
                people[person][position] = face
    timelines = []
    for person, faces in sorted(people.items(), key=lambda item: (-len(item[1]), item[0])):
        if len(faces) < MIN_PERSON_SHARE * len(video):
            continue
        leaders = [face.emotion for face in faces.values()]
        timelines.append({
            "person": person, "time": times,
            "scores": {name: np.array([faces[i].scores[name] if i in faces else np.nan for i in range(len(video))])
                       for name in class_names},
            "led": {name: leaders.count(name) / len(leaders) for name in class_names},
            "present": len(faces) / len(video)})
    return timelines[:MAX_PERSONS]


def emotion_counts(results, class_names):
    """How many faces of the photos among `results` got each emotion, every class listed."""
    counts = dict.fromkeys(class_names, 0)
    for result in results:
        if not result.video:
            for face in result.faces:
                counts[face.emotion] += 1
    return counts


def class_colours(count):
    """One colour a class: matplotlib's tab10 for up to 10 classes, else evenly spaced hues.
    Prediction's charts use matplotlib alone: seaborn comes with the train extra only."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    return [colormaps["hsv"](index / count) for index in range(count)]


def save_plot(results, class_names, path):
    """For the first video with analysed frames, each person's emotions over time, one panel a
    person; with no video, a bar chart of how many faces in the photos got each emotion. Never
    writes over a file."""
    video = first_video(results)
    photos = [result for result in results if not result.video and result.analysed]
    if not video and not photos:
        raise UserError(f"{path}: nothing to plot: no image or video frame was analysed")
    colours = class_colours(len(class_names))
    labels = [plain_text(name) for name in class_names]
    if video:
        figure = _plot_timelines(video, class_names, labels, colours)
    else:
        counts = emotion_counts(photos, class_names)
        figure = _figure(figsize=(10, 5))
        axes = figure.subplots()
        axes.bar(labels, [counts[name] for name in class_names], color=colours)
        for container in axes.containers:
            axes.bar_label(container)
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.set(xlabel="emotion", ylabel="faces", ylim=(0, max(1, *counts.values()) * 1.12),
                 title=f"emotions of the faces in {len(photos)} images: {sum(counts.values())} faces")
    _save_figure(figure, path, new=True)


def _plot_timelines(video, class_names, labels, colours):
    timelines = person_timelines(video, class_names)
    figure = _figure(figsize=(10, 1.5 + 3 * max(1, len(timelines))))
    axes = np.atleast_1d(figure.subplots(max(1, len(timelines)), 1, sharex=True, squeeze=False)[:, 0])
    name = plain_text(Path(video[0].file).name)
    figure.suptitle(f"{name}: emotions over time, {len(video)} frames analysed")
    if not timelines:
        axes[0].set(title="no face in enough of the frames to follow", xlabel="time (s)")
    for axis, timeline in zip(axes, timelines):
        for class_name, label, colour in zip(class_names, labels, colours):
            axis.plot(timeline["time"], smooth(timeline["scores"][class_name], timeline["time"]), color=colour,
                      linewidth=1.8, label=f"{label} ({timeline['led'][class_name]:.0%})")
        axis.set(ylabel="probability", ylim=(0, 1),
                 title=f"person {timeline['person']}: in {timeline['present']:.0%} of the frames")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="share of frames led", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    return figure


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------
def save_confusion_matrix(labels, predictions, class_names, path):
    """Two seaborn heatmaps side by side: raw counts, and rows normalised to recall."""
    import seaborn as sns
    from sklearn import metrics as skm

    counts = skm.confusion_matrix(labels, predictions, labels=list(range(len(class_names))))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    names = [plain_text(name) for name in class_names]
    figure = _figure(figsize=(15, 6))
    for axis, data, fmt, title in zip(figure.subplots(1, 2), (counts, normalised), ("d", ".2f"),
                                      ("counts", "normalised by true class")):
        sns.heatmap(data, annot=len(class_names) <= MAX_ANNOTATED_CLASSES, fmt=fmt, cmap="Blues", xticklabels=names, yticklabels=names, ax=axis, cbar=False)
        axis.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({title})")
    _save_figure(figure, path)


def save_training_curves(history, path):
    """Loss and accuracy by epoch (train and validation), and validation accuracy by minutes of
    training: what a CPU user waits for."""
    figure = _figure(figsize=(17, 4.5))
    axes = figure.subplots(1, 3)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for axis, key in ((axes[0], "loss"), (axes[1], "accuracy")):
        axis.plot(epochs, history.get(key, []), label=f"train {key}")
        axis.plot(epochs, history.get(f"val_{key}", []), label=f"validation {key}")
        axis.set(xlabel="epoch", ylabel=key, title=key.capitalize())
        axis.grid(alpha=0.3)
        axis.legend()
    minutes = np.asarray(history.get("elapsed_seconds", [])) / 60
    if len(minutes) == len(history.get("val_accuracy", [])):
        axes[2].plot(minutes, history["val_accuracy"], marker=".")
    axes[2].set(xlabel="minutes of training", ylabel="validation accuracy",
                title=f"Validation accuracy against time ({os.cpu_count()} CPU cores)")
    axes[2].grid(alpha=0.3)
    _save_figure(figure, path)


def save_face_grid(faces, titles, colours, title, path):
    """Up to 25 faces in a grid, each with its title in its colour."""
    columns = 5
    rows = max(1, math.ceil(len(faces) / columns))
    figure = _figure(figsize=(columns * 2, rows * 2.3 + 0.4))
    axes = np.ravel(figure.subplots(rows, columns))
    for axis in axes:
        axis.axis("off")
    for axis, face, text, colour in zip(axes, faces, titles, colours):
        axis.imshow(face[:, :, 0], cmap="gray", vmin=0, vmax=255)
        axis.set_title(plain_text(text), fontsize=8, color=colour)
    figure.suptitle(title)
    _save_figure(figure, path)


def save_sample_grid(x, labels, class_names, path, count=25, seed=0):
    picks = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)
    save_face_grid(x[picks], [class_names[labels[i]] for i in picks], ["black"] * len(picks),
                   "Training samples", path)


def save_prediction_grid(x, labels, probabilities, class_names, path, count=25, seed=0):
    """Faces with predicted label and confidence; wrong ones in red with the truth."""
    picks = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)
    titles, colours = [], []
    for i in picks:
        predicted = int(probabilities[i].argmax())
        wrong = predicted != labels[i]
        titles.append(f"{class_names[predicted]} {probabilities[i, predicted]:.0%}"
                      + (f"\n(true: {class_names[labels[i]]})" if wrong else ""))
        colours.append("red" if wrong else "green")
    save_face_grid(x[picks], titles, colours, "Predictions (red: wrong)", path)
