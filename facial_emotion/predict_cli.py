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
import sys
from pathlib import Path

from facial_emotion import batch
from facial_emotion.detection import DETECTORS, FaceDetector
from facial_emotion.console import HelpFormatter, quiet_python_warnings
from facial_emotion.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, print_error, print_note, require_extra
from facial_emotion.pipeline import Classifier, Pipeline, collect_inputs
from facial_emotion import outputs
from facial_emotion.outputs import add_output_flags, asked_for, check_outputs
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, RUNTIMES, load_model
from facial_emotion.tracking import FaceTracker



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
    add("--detector", choices=DETECTORS, default=DETECTORS[0],
        help="blazeface: Google's BlazeFace on ONNX Runtime, finds small and tilted faces, fast; haar: OpenCV's "
             "cascade; mtcnn: loads TensorFlow")
    add("--no-detect", action="store_true", help="take every image whole as one face")
    add("--tta", action="store_true", help="average each face with its mirror image")
    add("--runtime", choices=RUNTIMES, default="auto",
        help="auto: ONNX Runtime when the model's .onnx export matches its .h5 (no TensorFlow start-up), "
             "else Keras; onnx or keras: that one only")
    add("--every", type=int, default=1, metavar="N", help="in videos, analyse every Nth frame")
    add("--webcam", type=int, nargs="?", const=0, metavar="INDEX", help="live from a camera (default 0) in a window; q quits")
    add("--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on Ray Data (the ray extra), writing only --parquet, a new folder of Parquet files: with no "
             "address Ray starts on this machine; `auto` or ray://HOST:10001 joins a cluster. Inputs may be URIs "
             "that pyarrow reads (s3://, gs://)")
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.every < 1:
        parser.error("--every must be at least 1")
    if not args.inputs and args.webcam is None:
        parser.error("give at least one image, video or folder (or --webcam)")
    if args.webcam is not None and not 0 <= args.webcam <= MAX_CAMERA_INDEX:
        parser.error(f"--webcam takes a camera index from 0 to {MAX_CAMERA_INDEX}")
    if args.webcam is not None and (args.inputs or asked_for(args) or args.ray):
        flags = ", ".join([output.flag for output in outputs.OUTPUTS if output.flag] + ["--ray"])
        parser.error(f"--webcam shows its results in a window; it goes with no files and none of {flags}")
    if args.ray is not None and set(asked_for(args)) != {"parquet"}:
        parser.error("--ray writes its results to --parquet FOLDER, and only there: give --parquet and no other output")
    return args


def run(args):
    """main's work: inputs and outputs checked before anything loads, then the package's pipeline."""
    if args.ray is not None:
        return run_on_ray(args)
    inputs, skipped = [], []
    if args.webcam is None:
        inputs = collect_inputs(args.inputs, skipped)
        for path, reason in skipped:
            print_note(f"warning: skipping {path}: {reason}")
        if not inputs:
            raise UserError("no image or video files in " + ", ".join(args.inputs))
        check_outputs(asked_for(args))
    model, metadata = load_model(args.model, runtime=args.runtime, warn=print_note)
    detector = None if args.no_detect else FaceDetector(args.detector)
    pipeline = Pipeline(Classifier(model, metadata, tta=args.tta), detector, make_tracker=FaceTracker)
    if args.webcam is not None:
        batch.run_webcam(pipeline, args.webcam)
        return 0
    return batch.predict_files(pipeline, inputs, asked_for(args), args.top_k, args.every)


def run_on_ray(args):
    """--ray: local inputs collected as for the plain path, URIs listed where they are."""
    from facial_emotion import ray_predict

    require_extra("ray", "--ray", "ray")
    skipped, inputs = [], []
    for name in args.inputs:
        inputs += ray_predict.list_uris(name) if ray_predict.is_uri(name) else collect_inputs([name], skipped)
    for path, reason in skipped:
        print_note(f"warning: skipping {path}: {reason}")
    if not inputs:
        raise UserError("no image or video files in " + ", ".join(args.inputs))
    check_outputs(asked_for(args))
    load_model(args.model, runtime=args.runtime)  # a bad model or detector is one line here, not one per actor
    if not args.no_detect:
        FaceDetector(args.detector)
    return ray_predict.predict_on_ray(inputs, args.parquet, args.model, None if args.ray == "local" else args.ray,
                                      detector=args.detector,
                                      runtime=args.runtime, tta=args.tta, every=args.every, no_detect=args.no_detect)


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
