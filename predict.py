"""Find the faces in photos and videos and predict the emotion of each.

    python predict.py photo.jpg                       # photo.jpg: happy (87.3%) at [412, 188, 205, 205]
    python predict.py photos/ --annotate annotated/   # a folder; copies with boxes and labels
    python predict.py clip.mp4 --every 5 --csv emotions.csv
    python predict.py face.png --top-k 3 --json       # machine-readable
    python predict.py --webcam                        # live, q to quit (needs a GUI OpenCV build)

Image loading, preprocessing, model loading and class names all come from emotion_recognition,
the module that trained the model, so prediction sees exactly what training saw.
"""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import emotion_recognition as er

# Images no larger than this on both sides are taken to be face crops already (FER-2013 is 48
# px; people's crops of it or similar data sets go up to about 96 px) and are classified whole.
MAX_CROP_SIDE = 96
# Face detection runs on a copy no larger than this on its longer side: a 12-megapixel phone
# photo would take seconds in the Haar cascade; boxes are scaled back to original pixels.
DETECTION_MAX_SIDE = 1024
# Margin added around a detected face before cropping, as a share of the box's size: Haar
# boxes are tight, FER-2013 faces show some forehead and chin.
FACE_MARGIN = 0.1
# Haar's smallest face: 24 px (its window) and at least 1/20 of the detection copy's shorter
# side. Smaller Haar hits in large photos were false alarms on textures (tests/benchmarks/
# detectors.py: 1/25 let one through at 3072 px); MTCNN is the detector for small faces.
MIN_FACE_SIDE = 24
MIN_FACE_FRACTION = 1 / 20
# Faces are classified in batches of this many: one model call per batch, not per face.
BATCH_SIZE = 256
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def is_video_file(path):
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def collect_inputs(paths):
    """Files as given; folders walked recursively for image and video files, sorted, each real
    folder once (a symlink loop is walked once, not forever)."""
    inputs = []
    for path in map(Path, paths):
        if path.is_dir():
            seen = set()
            for root, directories, files in os.walk(path, followlinks=True):
                real = os.path.realpath(root)
                if real in seen:
                    directories[:] = []
                    continue
                seen.add(real)
                directories.sort()
                inputs.extend(Path(root) / name for name in sorted(files)
                              if er.is_image_file(name) or is_video_file(name))
        else:
            inputs.append(path)
    return inputs


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
        self.temperature = metadata.get("temperature", 1.0)
        self.tta = tta

    def classify(self, faces):
        if not faces:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return er.predict_probabilities(self.model, np.stack(faces), self.temperature, self.tta,
                                        batch_size=BATCH_SIZE)

    def fill(self, pending):
        """Classify the faces of many results in one go: pending is [(result, boxes, faces)]."""
        faces = [face for _, _, batch in pending for face in batch]
        scores = iter(self.classify(faces))
        for result, boxes, batch in pending:
            result["faces"] = [describe_face(box, next(scores), self.class_names) for box in boxes]


# ---------------------------------------------------------------------------------------------
# Images and videos
# ---------------------------------------------------------------------------------------------
def predict_images(paths, classifier, detector, annotate_dir=None, progress=None):
    """One result dict per image path (--json schema); a bad file gets its error, not an exception.

    Faces of up to BATCH_SIZE images are classified together.
    """
    results, pending = [], []
    for path in paths:
        result = {"file": str(path), "faces": [], "error": None}
        results.append(result)
        try:
            image = er.read_image(path)
            boxes, faces = find_faces(image, detector)
        except er.UserError as error:
            result["error"] = str(error)
        else:
            pending.append((result, boxes, faces))
            if annotate_dir is not None:
                result["_image"] = image
        if len(pending) >= BATCH_SIZE:
            _finish(pending, classifier, annotate_dir)
        if progress is not None:
            progress.update(1)
    _finish(pending, classifier, annotate_dir)
    return results


def _finish(pending, classifier, annotate_dir):
    classifier.fill(pending)
    if annotate_dir is not None:
        for result, _, _ in pending:
            image = result.pop("_image")
            path = unused_path(annotate_dir, Path(result["file"]))
            annotated = draw_faces(np.asarray(er.to_rgb(image)).copy(), result["faces"])
            Image.fromarray(annotated).save(path)
            result["annotated"] = str(path)
    pending.clear()


def unused_path(folder, source, suffix=None):
    """folder/<name>_annotated<suffix>, numbered if taken: never writes over anything."""
    folder = Path(folder)
    suffix = suffix or source.suffix
    candidate = folder / f"{source.stem}_annotated{suffix}"
    index = 2
    while candidate.exists() or candidate.resolve() == source.resolve():
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


def analyse_frames(frames, classifier, detector, every=1):
    """The loop shared by video files and the webcam: yields (index, rgb frame, faces) for every
    `every`-th frame of an iterable of RGB frames."""
    for index, rgb in enumerate(frames):
        if index % every:
            continue
        boxes, faces = find_faces(Image.fromarray(rgb), detector)
        scores = classifier.classify(faces)
        yield index, rgb, [describe_face(box, score, classifier.class_names) for box, score in zip(boxes, scores)]


def read_video_frames(capture):
    import cv2

    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def predict_video(path, classifier, detector, every=1, annotate_dir=None):
    """One result per analysed frame: the image schema plus "frame" and "time" (seconds)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        return _video_failure(path, "no such file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        return _video_failure(path, "not a video file OpenCV can read")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, results = None, []
    try:
        for index, rgb, faces in analyse_frames(read_video_frames(capture), classifier, detector, every):
            results.append({"file": str(path), "frame": index, "time": round(index / fps, 3),
                            "faces": faces, "error": None})
            if annotate_dir is not None:
                if writer is None:
                    out_path = unused_path(annotate_dir, path, ".mp4")
                    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"),
                                             fps / every, (rgb.shape[1], rgb.shape[0]))
                writer.write(cv2.cvtColor(draw_faces(rgb.copy(), faces), cv2.COLOR_RGB2BGR))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if not results:
        return _video_failure(path, "no frames could be read")
    return results


def _video_failure(path, problem):
    """The one result of a video that could not be analysed."""
    return [{"file": str(path), "frame": None, "time": None, "faces": [], "error": f"{path}: {problem}"}]


def run_webcam(index, classifier, detector):
    """Live emotions from a camera in a window, q to quit. Shares analyse_frames with videos."""
    import cv2

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise er.UserError(f"camera {index}: cannot be opened")
    try:
        for _, rgb, faces in analyse_frames(read_video_frames(capture), classifier, detector):
            try:
                cv2.imshow("emotions (q to quit)", cv2.cvtColor(draw_faces(rgb.copy(), faces), cv2.COLOR_RGB2BGR))
                key = cv2.waitKey(1) & 0xFF
            except cv2.error:
                raise er.UserError("--webcam needs an OpenCV build with windows: pip install opencv-python<5 "
                                   "(the headless build this project installs has none)") from None
            if key == ord("q"):
                break
    finally:
        capture.release()
        cv2.destroyAllWindows()


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def format_result(result, top_k=1):
    prefix = result["file"] + (f" [frame {result['frame']}, {result['time']:.2f}s]"
                               if result.get("frame") is not None else "")
    if not result["faces"]:
        return f"{prefix}: no face found"
    parts = []
    for face in result["faces"]:
        ranked = sorted(face["scores"].items(), key=lambda item: -item[1])[:top_k]
        parts.append(", ".join(f"{name} ({score:.1%})" for name, score in ranked)
                     + (f" at {face['box']}" if len(result["faces"]) > 1 else ""))
    return f"{prefix}: " + "; ".join(parts)


def write_csv(results, path, class_names):
    """One row per face per frame (images have an empty frame and time)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "frame", "time", "x", "y", "w", "h", "emotion", "confidence", *class_names])
        for result in results:
            for face in result["faces"]:
                writer.writerow([result["file"], result.get("frame", ""), result.get("time", ""), *face["box"],
                                 face["emotion"], face["confidence"], *(face["scores"][name] for name in class_names)])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Find faces in images and videos and predict each one's emotion.",
                                     formatter_class=er.HelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_VIDEO",
                        help="image or video files, or folders of them (walked recursively)")
    parser.add_argument("--model", type=Path, default=er.DEFAULT_MODEL_PATH,
                        help="a model saved by emotion_recognition.py, with its .json beside it")
    parser.add_argument("--top-k", type=int, default=1, help="how many emotions to print per face")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per image or video frame")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write one row per face (per frame) to this CSV")
    parser.add_argument("--detector", choices=("haar", "mtcnn"), default="haar",
                        help="haar: OpenCV's cascade, fast; mtcnn: finds tilted, small and partly covered faces")
    parser.add_argument("--no-detect", action="store_true", help="take every image whole as one face")
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror image")
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
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        model, metadata = er.load_model_bundle(args.model)
        classifier = Classifier(model, metadata, tta=args.tta)
        detector = None if args.no_detect else FaceDetector(args.detector)
        if args.webcam is not None:
            run_webcam(args.webcam, classifier, detector)
            return 0
        inputs = collect_inputs(args.inputs)
        if not inputs:
            raise er.UserError("no image or video files in " + ", ".join(args.inputs))
        if args.csv is not None and args.csv.exists():
            raise er.UserError(f"{args.csv}: already exists; choose another --csv file")
        if args.annotate is not None:
            if args.annotate.exists() and not args.annotate.is_dir():
                raise er.UserError(f"{args.annotate}: exists and is not a folder")
            args.annotate.mkdir(parents=True, exist_ok=True)
        results = run_inputs(inputs, classifier, detector, args)
        if args.csv is not None:
            write_csv(results, args.csv, classifier.class_names)
    except er.UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return er.EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        if args.json:
            print(json.dumps(results, indent=2, ensure_ascii=False))
        else:
            for result in results:
                if not result["error"]:
                    print(format_result(result, args.top_k))
        sys.stdout.flush()
    except BrokenPipeError:  # `predict.py ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    failed = [result for result in results if result["error"]]
    for result in failed:
        print(f"error: {result['error']}", file=sys.stderr)
    return er.EXIT_USER_ERROR if failed else 0


def run_inputs(inputs, classifier, detector, args):
    """Images in batches, videos frame by frame, in the order given, with a progress bar for long runs."""
    from tqdm import tqdm

    results = []
    with tqdm(total=len(inputs), unit="file", disable=None if len(inputs) > 20 else True,
              file=sys.stderr, leave=False) as progress:
        images = []
        for path in inputs + [None]:
            if path is None or is_video_file(path):
                results += predict_images(images, classifier, detector, args.annotate, progress)
                images = []
                if path is not None:
                    results += predict_video(path, classifier, detector, args.every, args.annotate)
                    progress.update(1)
            else:
                images.append(path)
    return results


if __name__ == "__main__":
    sys.exit(main())
