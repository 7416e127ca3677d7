"""The prediction command line: `facial-emotion` when installed, `python predict.py` in a clone.

    facial-emotion photo.jpg                       # photo.jpg: happy (87.3%)
    facial-emotion photos/ --annotate annotated/   # a folder; copies with boxes and labels
    facial-emotion clip.mp4 --every 5 --csv emotions.csv
    facial-emotion face.png --top-k 3 --json       # machine-readable
    facial-emotion clip.mp4 --plot scores.png      # each person's emotions over time
    facial-emotion photos/ --plot counts.png       # how many faces got each emotion
    facial-emotion --webcam                        # live, q to quit (needs a GUI OpenCV build)
    facial-emotion photo.jpg --runtime keras       # TensorFlow instead of the ONNX export

Results come out as they are done: a line per image or frame, CSV rows flushed at once. Ctrl-C
or SIGTERM stops after the result in hand, keeps everything written so far, says how far it
got and exits with status 130.

Everything here but the arguments and the checks on output paths is the `facial_emotion`
package's, which training uses too: prediction sees exactly what training saw, and never
imports TensorFlow unless the Keras runtime or MTCNN is asked for.
"""

import argparse
import os
import sys
from pathlib import Path

from facial_emotion import batch
from facial_emotion.detection import DETECTORS, FaceDetector
from facial_emotion.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, HelpFormatter, UserError, quiet_python_warnings
from facial_emotion.pipeline import Classifier, Pipeline, collect_inputs
from facial_emotion.plots import PLOT_FORMATS
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, RUNTIMES, load_model
from facial_emotion.tracking import FaceTracker
from facial_emotion.writers import print_error, print_note


# Camera indexes OpenCV accepts: a negative one crashed it (segmentation fault).
MAX_CAMERA_INDEX = 99


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Find faces in images and videos and predict each one's emotion.",
                                     formatter_class=HelpFormatter, allow_abbrev=False)
    add = parser.add_argument
    add("inputs", nargs="*", metavar="IMAGE_OR_VIDEO", help="image or video files, or folders of them (walked recursively)")
    add("--model", type=Path, default=DEFAULT_MODEL_PATH,
        help="a model saved by emotion_recognition.py, with its .json beside it")
    add("--top-k", type=int, default=1, help="how many emotions to print per face")
    add("--json", action="store_true", help="print a JSON list at the end, one object per image or video frame")
    add("--csv", type=Path, metavar="FILE", help="also write one row per face (per frame) to this new CSV, as results come")
    add("--plot", type=Path, metavar="FILE",
        help="draw a new chart (.png, .pdf, .svg, .jpg): for the first video among the inputs, each person's "
             "emotions over time; with no video, how many faces got each emotion")
    add("--detector", choices=DETECTORS, default=DETECTORS[0],
        help="blazeface: Google's BlazeFace on ONNX Runtime, finds small and tilted faces, fast; haar: OpenCV's "
             "cascade; mtcnn: loads TensorFlow")
    add("--no-detect", action="store_true", help="take every image whole as one face")
    add("--tta", action="store_true", help="average each face with its mirror image")
    add("--runtime", choices=RUNTIMES, default="auto",
        help="auto: ONNX Runtime when the model's .onnx export matches its .h5 (no TensorFlow start-up), "
             "else Keras; onnx or keras: that one only")
    add("--annotate", type=Path, metavar="OUT_DIR", help="write copies with boxes and labels here (videos as .mp4)")
    add("--every", type=int, default=1, metavar="N", help="in videos, analyse every Nth frame")
    add("--webcam", type=int, nargs="?", const=0, metavar="INDEX", help="live from a camera (default 0) in a window; q quits")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.every < 1:
        parser.error("--every must be at least 1")
    if not args.inputs and args.webcam is None:
        parser.error("give at least one image, video or folder (or --webcam)")
    if args.webcam is not None and not 0 <= args.webcam <= MAX_CAMERA_INDEX:
        parser.error(f"--webcam takes a camera index from 0 to {MAX_CAMERA_INDEX}")
    if args.webcam is not None and (args.inputs or args.csv or args.plot or args.annotate or args.json):
        parser.error("--webcam shows its results in a window; it goes with no files, --csv, --plot, --annotate or --json")
    return args


def check_outputs(csv_path, plot_path, annotate_dir):
    """Before any work: output files must be new, in folders that exist; the annotation folder
    must be a folder that exists or can be made. Nothing is ever written over."""
    for path, option in ((csv_path, "--csv"), (plot_path, "--plot")):
        if path is not None and annotate_dir is not None and Path(os.path.realpath(path)).is_relative_to(
                os.path.realpath(annotate_dir)):
            raise UserError(f"{path}: inside the --annotate folder, where an annotated copy may take its "
                            f"name; put the {option} file elsewhere")
    for path, option in ((csv_path, "--csv"), (plot_path, "--plot")):
        if path is None:
            continue
        if os.path.lexists(path):
            raise UserError(f"{path}: already exists; choose another {option} file")
        if not os.path.isdir(path.parent):
            raise UserError(f"{path}: folder {path.parent} does not exist")
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise UserError(f"{plot_path}: name the plot .png, .pdf, .svg or .jpg")
    if csv_path is not None and plot_path is not None and csv_path.resolve() == plot_path.resolve():
        raise UserError(f"{csv_path}: --csv and --plot name the same file")
    if annotate_dir is not None:
        try:
            annotate_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"{annotate_dir}: exists and is not a folder") from None
        except OSError as error:
            raise UserError(f"{annotate_dir}: cannot create ({error.strerror or error})") from None


def run(args):
    """main's work: inputs and outputs checked before anything loads, then the package's pipeline."""
    inputs, skipped = [], []
    if args.webcam is None:
        inputs = collect_inputs(args.inputs, skipped)
        for path, reason in skipped:
            print_note(f"warning: skipping {path}: {reason}")
        if not inputs:
            raise UserError("no image or video files in " + ", ".join(args.inputs))
        check_outputs(args.csv, args.plot, args.annotate)
    model, metadata = load_model(args.model, runtime=args.runtime, warn=print_note)
    detector = None if args.no_detect else FaceDetector(args.detector)
    pipeline = Pipeline(Classifier(model, metadata, tta=args.tta), detector, make_tracker=FaceTracker)
    if args.webcam is not None:
        batch.run_webcam(pipeline, args.webcam)
        return 0
    return batch.predict_files(pipeline, inputs, args.top_k, args.json, args.csv, args.plot, args.annotate, args.every)


def main(argv=None):
    args = parse_args(argv)
    try:
        with quiet_python_warnings():  # NumPy's and Pillow's warnings about a file: its one line says it
            return run(args)
    except UserError as error:
        print_error(error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print_note("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
