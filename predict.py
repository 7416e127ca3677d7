"""Find the faces in photos and videos and predict the emotion of each.

    python predict.py photo.jpg                       # photo.jpg: happy (87.3%)
    python predict.py photos/ --annotate annotated/   # a folder; copies with boxes and labels
    python predict.py clip.mp4 --every 5 --csv emotions.csv
    python predict.py face.png --top-k 3 --json       # machine-readable
    python predict.py clip.mp4 --plot scores.png      # each emotion of the main face over time
    python predict.py photos/ --plot counts.png       # how many faces got each emotion
    python predict.py --webcam                        # live, q to quit (needs a GUI OpenCV build)
    python predict.py photo.jpg --runtime keras       # TensorFlow instead of the ONNX export

Results come out as they are done: a line per image or frame, CSV rows flushed at once. Ctrl-C
or SIGTERM stops after the result in hand, keeps everything written so far, says how far it
got and exits with status 130.

Image loading, preprocessing, model loading and class names all come from emotion_recognition,
the module that trained the model, so prediction sees exactly what training saw.
"""

import argparse
import csv
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import emotion_recognition as er

# Images no larger than this on both sides are taken to be face crops already (FER-2013 is 48
# px; people's crops of it or similar data sets go up to about 96 px) and are classified whole.
MAX_CROP_SIDE = 96
# Images (and video frames) smaller than this on their shorter side are refused: at 16 px a
# FER-2013 face still shows eyes, brows and mouth apart; below, blowing it up to the model's 48
# px invents the expression, and a 1x1 image would still get a confident emotion.
MIN_IMAGE_SIDE = 16
# Face detection runs on a copy no larger than this on its longer side: a 12-megapixel phone
# photo would take seconds in the Haar cascade; boxes are scaled back to original pixels.
DETECTION_MAX_SIDE = 1024
# Margin added on each side of a detected face before cropping, as a share of the box's size,
# so that the crop frames the face as FER-2013 does: on 700 FER-2013 validation faces placed in
# larger pictures, Haar's box side was a median 0.953 of the face's (quartiles 0.885-1.005,
# centred), which takes 2.5% a side (tests/benchmarks/haar_framing.py).
FACE_MARGIN = 0.025
# Haar's smallest face: 24 px (its window) and at least 1/20 of the detection copy's shorter
# side. Smaller Haar hits in large photos were false alarms on textures (tests/benchmarks/
# detectors.py: 1/25 let one through at 3072 px); MTCNN is the detector for small faces.
MIN_FACE_SIDE = 24
MIN_FACE_FRACTION = 1 / 20
# Faces are classified in batches of up to er.PREDICT_BATCH_SIZE, but a batch is finished once
# its first image has waited this long, so results keep coming from a slow disk or a folder of
# large photos (detection takes 20-100 ms a photo).
FLUSH_SECONDS = 1.0
# With --annotate, the images of a batch wait in memory until their faces are classified; a
# batch is finished once they hold this many pixels (150 MB as RGB), whatever their number.
ANNOTATE_MAX_PIXELS = 50_000_000
# --plot's video lines are a centred rolling mean over this long: frame-to-frame jitter goes,
# a change of expression (about a second) stays.
SMOOTHING_SECONDS = 0.5
# Containers that do not know their frame rate report 0 or nonsense; 25 is the PAL default.
DEFAULT_FPS = 25.0
# The video files a folder is searched for: the containers OpenCV's FFmpeg build reads.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# What matplotlib writes, by suffix; anything else is refused before any work.
PLOT_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}
# Control characters in a file name (a newline is legal on Linux) would break the one line per
# result and per error; they are printed escaped. JSON escapes them itself, CSV quotes them.
LINE_ESCAPES = {**{code: f"\\x{code:02x}" for code in [*range(32), 127, 0x85]},
                ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}
# --csv: one row per face per image or frame; every class's score follows these columns.
CSV_COLUMNS = ["file", "frame", "time", "x", "y", "w", "h", "emotion", "confidence"]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def collect_inputs(paths):
    """Files as given; folders walked recursively for image and video files (er.walk_files)."""
    inputs = []
    for path in map(Path, paths):
        if path.is_dir():
            inputs += er.walk_files(path, lambda name: er.is_image_file(name) or is_video_file(name))
        else:
            inputs.append(path)
    return inputs


def read_checked_image(path):
    """er.read_image (which refuses decompression bombs), refusing images too small to hold a face."""
    image = er.read_image(path)
    check_size(path, image.width, image.height)
    return image


def check_size(path, width, height):
    if min(width, height) < MIN_IMAGE_SIDE:
        raise er.UserError(f"{path}: too small to hold a face ({width}x{height} pixels)")


def open_video(path):
    """An open cv2.VideoCapture of a video file, its frame rate and its frame count (0: unknown).

    FFmpeg writes its own complaints about a broken file ("moov atom not found") straight to
    file descriptor 2; they are muted, and the UserError says what is wrong in one line.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise er.UserError(f"{path}: no such file")
    with er.quiet_native_stderr():
        capture = cv2.VideoCapture(str(path))
        opened = capture.isOpened()
    if not opened:
        raise er.UserError(f"{path}: not a video file OpenCV can read")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps <= 1000 else DEFAULT_FPS
    frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width > 0 and height > 0 and min(width, height) < MIN_IMAGE_SIDE:
        capture.release()
        check_size(path, width, height)
    return capture, fps, frame_count


def read_video_frames(capture):
    """RGB frames of an open capture until it ends, FFmpeg's decoding noise muted."""
    import cv2

    while True:
        with er.quiet_native_stderr():
            ok, frame = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# Faces
# ---------------------------------------------------------------------------------------------
class FaceDetector:
    """Haar cascade (ships inside the opencv-python-headless 4.x wheel) or MTCNN (weights ship
    inside the mtcnn wheel). Nothing is downloaded. Boxes are [x, y, w, h], largest first."""

    def __init__(self, kind="haar"):
        import cv2

        self.kind = kind
        if kind == "haar":
            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            self.cascade = cv2.CascadeClassifier(path)
            if self.cascade.empty():
                raise er.UserError(f"{path}: OpenCV's face cascade is missing (is opencv-python-headless<5 installed?)")
        elif kind == "mtcnn":
            try:
                with er.quiet_native_stderr():
                    er.import_keras()
                    from mtcnn import MTCNN
            except ImportError:
                raise er.UserError("--detector mtcnn needs the mtcnn package: pip install mtcnn") from None
            self.mtcnn = MTCNN()
        else:
            raise er.UserError(f"unknown detector {kind!r} (choose haar or mtcnn)")

    def detect(self, rgb):
        """Face boxes in an RGB uint8 array [h, w, 3], in its pixels, largest first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECTION_MAX_SIDE / max(height, width))
        small = rgb if scale == 1.0 else np.asarray(
            Image.fromarray(rgb).resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR))
        boxes = self._detect_haar(small) if self.kind == "haar" else self._detect_mtcnn(small)
        boxes = [[round(value / scale) for value in box] for box in boxes]
        boxes = [clip_box(box, width, height) for box in boxes]
        return sorted((box for box in boxes if box[2] > 0 and box[3] > 0),
                      key=lambda box: (-box[2] * box[3], box[0], box[1]))

    def _detect_haar(self, rgb):
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(MIN_FACE_SIDE, round(min(gray.shape) * MIN_FACE_FRACTION))
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return [list(map(int, box)) for box in found]

    def _detect_mtcnn(self, rgb):
        with er.quiet_native_stderr():
            found = self.mtcnn.detect_faces(rgb)
        return [list(map(int, face["box"])) for face in found if face.get("confidence", 1.0) >= 0.9]


def clip_box(box, width, height):
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


def crop_face(gray, box, margin=FACE_MARGIN):
    """The face in `box` with a margin, from a grayscale PIL image, preprocessed for the model."""
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    region = (max(0, x - dx), max(0, y - dy), min(gray.width, x + w + dx), min(gray.height, y + h + dy))
    return er.preprocess_face(gray.crop(region))


def find_faces(image, detector):
    """Boxes and model inputs for the faces of one upright PIL image (any mode).

    A small image is a face crop already; with no detector (--no-detect) every image is taken whole.
    """
    gray = er.to_grayscale(image)
    if detector is None or max(image.size) <= MAX_CROP_SIDE:
        return [[0, 0, image.width, image.height]], [er.preprocess_face(gray)]
    boxes = detector.detect(np.asarray(er.to_rgb(image)))
    return boxes, [crop_face(gray, box) for box in boxes]


# ---------------------------------------------------------------------------------------------
# Classify: faces in batches; images, videos and the webcam one result at a time
# ---------------------------------------------------------------------------------------------
def describe_face(box, scores, class_names):
    best = int(scores.argmax())
    return {"box": [int(value) for value in box], "emotion": class_names[best],
            "confidence": round(float(scores[best]), 4),
            "scores": {name: round(float(score), 4) for name, score in zip(class_names, scores)}}


class Classifier:
    """The model with its class names and temperature; classifies faces in batches."""

    def __init__(self, model, metadata, tta=False):
        self.model = model
        self.class_names = metadata["class_names"]
        self.temperature = er.model_temperature(metadata, tta)
        self.tta = tta

    def classify(self, faces):
        if not faces:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return er.predict_probabilities(self.model, np.stack(faces), self.temperature, self.tta,
                                        batch_size=er.PREDICT_BATCH_SIZE)

    def fill(self, pending):
        """Classify the faces of many results in one go: pending is [(result, boxes, faces)]."""
        faces = [face for _, _, batch in pending for face in batch]
        scores = iter(self.classify(faces))
        for result, boxes, batch in pending:
            result["faces"] = [describe_face(box, next(scores), self.class_names) for box in boxes]


def predict_images(paths, classifier, detector, annotate_dir=None):
    """One result dict per image path (--json schema), as a list; see iter_images."""
    return list(iter_images(paths, classifier, detector, annotate_dir))


def iter_images(paths, classifier, detector, annotate_dir=None):
    """Yields one result dict per image path, in order; a bad file gets its error, not an exception.

    The faces of several images are classified in one model call. A batch is finished when it
    holds er.PREDICT_BATCH_SIZE faces, when its first image has waited FLUSH_SECONDS, or, with
    annotation, when the images waiting to be drawn on hold ANNOTATE_MAX_PIXELS.
    """
    waiting, pending, images = [], [], {}
    faces_held = pixels_held = 0
    started = None
    for path in paths:
        result = {"file": str(path), "faces": [], "error": None}
        waiting.append(result)
        started = started or time.monotonic()
        try:
            image = read_checked_image(path)
            boxes, faces = find_faces(image, detector)
        except er.UserError as error:
            result["error"] = str(error)
        else:
            pending.append((result, boxes, faces))
            faces_held += len(faces)
            if annotate_dir is not None:
                images[id(result)] = image
                pixels_held += image.width * image.height
        image = None  # held in `images` if it is to be drawn on; otherwise done with
        if (not pending or faces_held >= er.PREDICT_BATCH_SIZE or pixels_held >= ANNOTATE_MAX_PIXELS
                or time.monotonic() - started >= FLUSH_SECONDS):
            yield from _finish_batch(waiting, pending, images, classifier, annotate_dir)
            faces_held = pixels_held = 0
            started = None
    yield from _finish_batch(waiting, pending, images, classifier, annotate_dir)


def _finish_batch(waiting, pending, images, classifier, annotate_dir):
    classifier.fill(pending)
    pending.clear()
    batch = waiting[:]
    waiting.clear()
    for result in batch:
        image = images.pop(id(result), None)
        if image is not None:
            annotate_image(image, result, annotate_dir)
            image = None
        yield result


def predict_video(path, classifier, detector, every=1, annotate_dir=None):
    """One result per analysed frame, as a list; see iter_video."""
    return list(iter_video(path, classifier, detector, every, annotate_dir))


def iter_video(path, classifier, detector, every=1, annotate_dir=None, progress=None):
    """Yields one result per analysed frame: the image schema plus "frame" and "time" (seconds).

    A video that cannot be read, or whose annotated copy cannot be written, yields one result
    with its error instead.
    """
    path = Path(path)
    try:
        capture, fps, frames_total = open_video(path)
    except er.UserError as error:
        yield _video_failure(path, str(error))
        return
    if progress is not None:
        progress.start_video(path, frames_total)
    writer, analysed, problem = None, 0, None
    try:
        for index, rgb, faces in analyse_frames(read_video_frames(capture), classifier, detector, every):
            if annotate_dir is not None:
                if writer is None:
                    writer = open_video_writer(annotate_dir, path, fps / every, rgb.shape)
                writer.write(draw_faces_bgr(rgb, faces))
            analysed += 1
            yield {"file": str(path), "frame": index, "time": round(index / fps, 3), "faces": faces, "error": None}
    except er.UserError as error:
        problem = str(error)
    finally:
        with er.quiet_native_stderr():
            capture.release()
            if writer is not None:
                writer.release()
    if problem is not None or not analysed:
        yield _video_failure(path, problem or f"{path}: no frames could be read")
    elif progress is not None:
        progress.file_done()


def _video_failure(path, problem):
    """The one result of a video that could not be analysed."""
    return {"file": str(path), "frame": None, "time": None, "faces": [], "error": problem}


def analyse_frames(frames, classifier, detector, every=1):
    """The loop shared by video files and the webcam: yields (index, rgb frame, faces) for every
    `every`-th frame of an iterable of RGB frames."""
    for index, rgb in enumerate(frames):
        if index % every:
            continue
        boxes, faces = find_faces(Image.fromarray(rgb), detector)
        scores = classifier.classify(faces)
        yield index, rgb, [describe_face(box, score, classifier.class_names) for box, score in zip(boxes, scores)]


def iter_inputs(inputs, classifier, detector, every=1, annotate_dir=None, progress=None):
    """Images in batches, videos frame by frame, in the order given: one result at a time."""
    images = []
    for path in [*inputs, None]:
        if path is None or is_video_file(path):
            yield from iter_images(images, classifier, detector, annotate_dir)
            images = []
            if path is not None:
                yield from iter_video(path, classifier, detector, every, annotate_dir, progress)
        else:
            images.append(path)


def run_webcam(index, classifier, detector):
    """Live emotions from a camera in a window, q to quit. Shares analyse_frames with videos."""
    import cv2

    with er.quiet_native_stderr():  # OpenCV's V4L2 and FFmpeg warnings about a missing camera
        capture = cv2.VideoCapture(index)
        opened = capture.isOpened()
    if not opened:
        raise er.UserError(f"camera {index}: cannot be opened")
    try:
        for _, rgb, faces in analyse_frames(read_video_frames(capture), classifier, detector):
            try:
                cv2.imshow("emotions (q to quit)", draw_faces_bgr(rgb, faces))
                key = cv2.waitKey(1) & 0xFF
            except cv2.error:
                raise er.UserError("--webcam needs an OpenCV build with windows: pip install opencv-python<5 "
                                   "(the headless build this project installs has none)") from None
            if key == ord("q"):
                break
    finally:
        capture.release()
        try:
            cv2.destroyAllWindows()
        except cv2.error:  # a build without windows (opencv-python-headless) never opened one
            pass


# ---------------------------------------------------------------------------------------------
# Outputs: lines, JSON, CSV, annotated copies, plots
# ---------------------------------------------------------------------------------------------
def one_line(text):
    return str(text).translate(LINE_ESCAPES)


def emit(line, stream):
    """A line on stdout or stderr, past the progress bar if one is showing, flushed at once."""
    from tqdm import tqdm

    tqdm.write(line, file=stream)
    stream.flush()


def print_error(message):
    emit(f"error: {one_line(message)}", sys.stderr)


def was_analysed(result):
    """Its faces were looked for (an annotated copy that could not be written still counts)."""
    return result["error"] is None or bool(result["faces"])


def format_result(result, top_k=1):
    prefix = one_line(result["file"]) + (f" [frame {result['frame']}, {result['time']:.2f}s]"
                                         if result.get("frame") is not None else "")
    if not result["faces"]:
        return f"{prefix}: no face found"
    parts = []
    for face in result["faces"]:
        ranked = sorted(face["scores"].items(), key=lambda item: -item[1])[:top_k]
        parts.append(", ".join(f"{name} ({score:.1%})" for name, score in ranked)
                     + (f" at {face['box']}" if len(result["faces"]) > 1 else ""))
    return f"{prefix}: " + "; ".join(parts)


class Report:
    """Where results go as they are done: a line each on stdout (with --json, one list at the
    end), one CSV row per face flushed at once, each error on stderr. If the run stops, what
    was done is written."""

    def __init__(self, class_names, top_k=1, as_json=False, csv_path=None, keep=False):
        self.class_names, self.top_k, self.as_json = class_names, top_k, as_json
        self.keep = keep or as_json
        self.results, self.failures, self.reader_gone = [], 0, False
        self.csv_file = self.csv_writer = None
        if csv_path is not None:
            try:
                self.csv_file = open(csv_path, "x", newline="", encoding="utf-8")  # "x": never overwrites
            except FileExistsError:
                raise er.UserError(f"{csv_path}: already exists; choose another --csv file") from None
            except OSError as error:
                raise er.UserError(f"{csv_path}: cannot be written ({error.strerror})") from None
            self.csv_writer = csv.writer(self.csv_file)
            self.csv_writer.writerow([*CSV_COLUMNS, *class_names])
            self.csv_file.flush()

    def add(self, result):
        if self.keep:
            self.results.append(result)
        if self.csv_writer is not None:
            for face in result["faces"]:
                self.csv_writer.writerow([result["file"], result.get("frame", ""), result.get("time", ""),
                                          *face["box"], face["emotion"], face["confidence"],
                                          *(face["scores"][name] for name in self.class_names)])
            self.csv_file.flush()
        if not self.as_json and was_analysed(result):
            self._print(format_result(result, self.top_k))
        if result["error"]:
            self.failures += 1
            print_error(result["error"])

    def close(self):
        if self.csv_file is not None:
            self.csv_file.close()
            self.csv_file = None
        if self.as_json:
            self._print(json.dumps(self.results, indent=2, ensure_ascii=False))

    def _print(self, text):
        if self.reader_gone:
            return
        try:
            emit(text, sys.stdout)
        except BrokenPipeError:  # `predict.py ... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.reader_gone = True


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
    """Boxes and labels drawn on an RGB uint8 array (returned)."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 40)))
    for face in faces:
        x, y, w, h = face["box"]
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 255, 0), width=line)
        label = f"{face['emotion']} {face['confidence']:.0%}"
        left, top, right, bottom = draw.textbbox((x, y), label, font=font)
        top_edge = y - (bottom - top) - 2 * line if y - (bottom - top) - 2 * line >= 0 else y + h
        draw.rectangle([x, top_edge, x + (right - left) + 2 * line, top_edge + (bottom - top) + 2 * line],
                       fill=(0, 255, 0))
        draw.text((x + line, top_edge + line - (top - y)), label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def draw_faces_bgr(rgb, faces):
    """draw_faces on a copy of a frame, in OpenCV's BGR order."""
    import cv2

    return cv2.cvtColor(draw_faces(rgb.copy(), faces), cv2.COLOR_RGB2BGR)


def annotate_image(image, result, annotate_dir):
    """Writes the annotated copy of an image; a copy that cannot be written is the result's error."""
    source = Path(result["file"])
    # The input's own format where Pillow can write it (a file named "face" or "x.dat" cannot be).
    writable = Image.registered_extensions().get(source.suffix.lower()) in Image.SAVE
    path = unused_path(annotate_dir, source, source.suffix if writable else ".png")
    try:
        Image.fromarray(draw_faces(np.asarray(er.to_rgb(image)).copy(), result["faces"])).save(path)
    except (OSError, ValueError) as error:
        result["error"] = f"{path}: cannot write annotated image ({getattr(error, 'strerror', None) or error})"
    else:
        result["annotated"] = str(path)


def open_video_writer(annotate_dir, source, fps, shape):
    """An open cv2.VideoWriter for the annotated copy of a video; UserError if it cannot be written
    (OpenCV returns a writer that silently writes nothing)."""
    import cv2

    path = unused_path(annotate_dir, source, ".mp4")
    with er.quiet_native_stderr():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
        opened = writer.isOpened()
    if not opened:
        writer.release()
        if os.path.isfile(path) and os.path.getsize(path) == 0:  # the name was free: this empty file is ours
            path.unlink()
        raise er.UserError(f"{path}: cannot write annotated video (OpenCV cannot open it for writing)")
    return writer


def emotion_counts(results, class_names):
    """How many faces of the images among `results` got each emotion, every class listed."""
    counts = dict.fromkeys(class_names, 0)
    for result in results:
        if "frame" not in result:
            for face in result["faces"]:
                counts[face["emotion"]] += 1
    return counts


def emotion_timeline(results, class_names):
    """The first video among `results` with analysed frames, its main face (the largest box)
    frame by frame, or None when no video frame was analysed.

    Returns file, time (seconds), scores (per class, NaN where no face was found), led (per
    class, the share of analysed frames whose main face it led) and no_face (the share without).
    """
    start = next((index for index, result in enumerate(results) if result.get("frame") is not None), None)
    if start is None:
        return None
    video = [results[start]]
    for result in results[start + 1:]:
        if result.get("frame") is None or result["file"] != video[0]["file"] or result["frame"] <= video[-1]["frame"]:
            break
        video.append(result)
    leaders = [result["faces"][0]["emotion"] for result in video if result["faces"]]
    return {"file": video[0]["file"],
            "time": np.array([result["time"] for result in video], dtype=float),
            "scores": {name: np.array([result["faces"][0]["scores"][name] if result["faces"] else np.nan
                                       for result in video]) for name in class_names},
            "led": {name: leaders.count(name) / len(video) for name in class_names},
            "no_face": 1 - len(leaders) / len(video)}


def smooth(values, times, seconds=SMOOTHING_SECONDS):
    """Centred rolling mean over about `seconds`; frames without a face stay gaps."""
    import pandas

    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    window = max(1, round(seconds / step)) if step > 0 else 1
    window += 1 - window % 2  # odd, so that it is centred on its frame
    smoothed = pandas.Series(values).rolling(window, center=True, min_periods=1).mean().to_numpy()
    return np.where(np.isnan(values), np.nan, smoothed)


def save_plot(results, class_names, path):
    """For the first video with analysed frames, each emotion of its main face over time; with no
    video, a bar chart of how many faces in the images got each emotion. Never overwrites."""
    import seaborn as sns
    from matplotlib.figure import Figure  # no pyplot: no window, no global state; Agg writes files

    path = Path(path)
    timeline = emotion_timeline(results, class_names)
    images = [result for result in results if "frame" not in result and was_analysed(result)]
    if timeline is None and not images:
        raise er.UserError(f"{path}: nothing to plot: no image or video frame was analysed")
    colours = sns.color_palette("tab10" if len(class_names) <= 10 else "husl", len(class_names))
    with sns.axes_style("whitegrid"):
        figure = Figure(figsize=(10, 5), layout="constrained")
        axes = figure.subplots()
    if timeline is not None:
        for name, colour in zip(class_names, colours):
            axes.plot(timeline["time"], smooth(timeline["scores"][name], timeline["time"]), color=colour,
                      linewidth=1.8, label=f"{name} ({timeline['led'][name]:.0%})")
        no_face = f"; no face in {timeline['no_face']:.0%} of them" if timeline["no_face"] else ""
        axes.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1),
                 title=f"{Path(timeline['file']).name}: emotions of the main face (largest box), "
                       f"{len(timeline['time'])} frames analysed{no_face}")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="share of frames led")
    else:
        counts = emotion_counts(images, class_names)
        sns.barplot(x=list(class_names), y=[counts[name] for name in class_names], hue=list(class_names),
                    palette=colours, legend=False, ax=axes)
        for container in axes.containers:
            axes.bar_label(container)
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.set(xlabel="emotion", ylabel="faces", ylim=(0, max(1, *counts.values()) * 1.12),
                 title=f"emotions of the faces in {len(images)} images: {sum(counts.values())} faces")
    try:
        with open(path, "xb") as handle:  # "x": never overwrites, even a file made since the start
            figure.savefig(handle, format=PLOT_FORMATS[path.suffix.lower()], dpi=100)
    except FileExistsError:
        raise er.UserError(f"{path}: already exists; choose another --plot file") from None
    except OSError as error:
        raise er.UserError(f"{path}: cannot be written ({error.strerror})") from None


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Find faces in images and videos and predict each one's emotion.",
                                     formatter_class=er.HelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_VIDEO",
                        help="image or video files, or folders of them (walked recursively)")
    parser.add_argument("--model", type=Path, default=er.DEFAULT_MODEL_PATH,
                        help="a model saved by emotion_recognition.py, with its .json beside it")
    parser.add_argument("--top-k", type=int, default=1, help="how many emotions to print per face")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list at the end, one object per image or video frame")
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="also write one row per face (per frame) to this new CSV, as results come")
    parser.add_argument("--plot", type=Path, metavar="FILE",
                        help="draw a new chart (.png, .pdf, .svg, .jpg): for the first video among the inputs, "
                             "each emotion of the main face over time; with no video, how many faces got each "
                             "emotion")
    parser.add_argument("--detector", choices=("haar", "mtcnn"), default="haar",
                        help="haar: OpenCV's cascade, fast; mtcnn: finds tilted, small and partly covered faces")
    parser.add_argument("--no-detect", action="store_true", help="take every image whole as one face")
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    parser.add_argument("--runtime", choices=("auto", "onnx", "keras"), default="auto",
                        help="auto: ONNX Runtime when the model's .onnx export matches its .h5 (no TensorFlow "
                             "start-up), else Keras; onnx or keras: that one only")
    parser.add_argument("--annotate", type=Path, metavar="OUT_DIR",
                        help="write copies with boxes and labels here (videos as annotated .mp4)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="in videos, analyse every Nth frame")
    parser.add_argument("--webcam", type=int, nargs="?", const=0, metavar="INDEX",
                        help="live from a camera (default 0) in a window; q quits")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.every < 1:
        parser.error("--every must be at least 1")
    if not args.inputs and args.webcam is None:
        parser.error("give at least one image, video or folder (or --webcam)")
    if args.webcam is not None and (args.inputs or args.csv or args.plot or args.annotate or args.json):
        parser.error("--webcam shows its results in a window; it goes with no files, --csv, --plot, "
                     "--annotate or --json")
    return args


def check_outputs(csv_path, plot_path, annotate_dir):
    """Before any work: output files must be new, in folders that exist; never overwrite."""
    for path, option in ((csv_path, "--csv"), (plot_path, "--plot")):
        if path is None:
            continue
        if path.exists() or path.is_symlink():
            raise er.UserError(f"{path}: already exists; choose another {option} file")
        if not path.parent.is_dir():
            raise er.UserError(f"{path}: folder {path.parent} does not exist")
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise er.UserError(f"{plot_path}: name the plot .png, .pdf, .svg or .jpg")
    if csv_path is not None and plot_path is not None and csv_path.resolve() == plot_path.resolve():
        raise er.UserError(f"{csv_path}: --csv and --plot name the same file")
    if annotate_dir is not None and annotate_dir.exists() and not annotate_dir.is_dir():
        raise er.UserError(f"{annotate_dir}: exists and is not a folder")


class Progress:
    """How far a run has got: moves the progress bar, and says where an interrupted run stopped.

    A file or frame counts once its result is recorded, after it was written; the video loop
    says when a video starts and when it is finished.
    """

    def __init__(self, total_files, bar=None):
        self.total_files, self.bar = total_files, bar
        self.files_done = 0
        self.video, self.frames_done, self.frames_total = None, 0, 0

    def start_video(self, path, frames_total):
        self.video, self.frames_done, self.frames_total = path, 0, frames_total

    def record(self, result):
        if result.get("frame") is not None:
            self.frames_done = result["frame"] + 1
        else:  # an image, or a video that could not be read
            self.file_done()

    def file_done(self):
        self.files_done += 1
        self.video = None
        if self.bar is not None:
            self.bar.update(1)

    def describe(self):
        if self.video is None:
            return f"{self.files_done} of {self.total_files} files"
        total = f" of {self.frames_total}" if self.frames_total else ""
        where = f" (file {self.files_done + 1} of {self.total_files})" if self.total_files > 1 else ""
        return f"{self.frames_done}{total} frames of {self.video}{where}"


class StopSignals:
    """Ctrl-C or SIGTERM (kill, a job scheduler) during a run asks it to stop after the result in
    hand: every result is written whole or not at all. A second one stops at once."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, number, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        return False


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except er.UserError as error:
        print_error(error)
        return er.EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return er.EXIT_INTERRUPTED


def run(args):
    """main's work: outputs checked before anything loads, then results streamed to them."""
    inputs = []
    if args.webcam is None:
        inputs = collect_inputs(args.inputs)
        if not inputs:
            raise er.UserError("no image or video files in " + ", ".join(args.inputs))
        check_outputs(args.csv, args.plot, args.annotate)
    model, metadata = er.load_model_bundle(args.model, runtime=args.runtime)
    classifier = Classifier(model, metadata, tta=args.tta)
    detector = None if args.no_detect else FaceDetector(args.detector)
    if args.webcam is not None:
        run_webcam(args.webcam, classifier, detector)
        return 0
    if args.annotate is not None:
        args.annotate.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    report = Report(classifier.class_names, args.top_k, args.json, args.csv, keep=args.plot is not None)
    bar = tqdm(total=len(inputs), unit="file", disable=None if len(inputs) > 20 else True, file=sys.stderr,
               leave=False)
    progress = Progress(len(inputs), bar)
    results = iter_inputs(inputs, classifier, detector, args.every, args.annotate, progress)
    stopped_early = False
    with StopSignals() as stop:
        try:
            for result in results:
                report.add(result)
                progress.record(result)
                if stop.requested:
                    break
                if report.reader_gone and args.csv is None and args.plot is None and args.annotate is None:
                    stopped_early = True
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the result in hand is lost
            stop.requested = True
        finally:
            results.close()  # releases an open video and finishes its annotated copy
            bar.close()
            report.close()
        interrupted = stop.requested
        plot_failed = False
        if args.plot is not None and report.results:
            try:
                save_plot(report.results, classifier.class_names, args.plot)
            except er.UserError as error:
                print_error(error)
                plot_failed = True
    if interrupted:
        kept = f"; results so far are in {args.csv}" if args.csv is not None else ""
        print(one_line(f"interrupted after {progress.describe()}{kept}"), file=sys.stderr)
        return er.EXIT_INTERRUPTED
    if stopped_early:
        return 0
    return er.EXIT_USER_ERROR if report.failures or plot_failed else 0


if __name__ == "__main__":
    sys.exit(main())
