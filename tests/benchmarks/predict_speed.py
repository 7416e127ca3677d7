"""predict.py's speed with each face detector, side by side in one run.

    python tests/benchmarks/predict_speed.py [--model models/emotion_model.h5] [--rounds 5]

1. One photo end to end, as a user runs it: `python predict.py tests/data/astronaut.jpg` with the
   default detector (BlazeFace) and with `--detector haar`, next to `--runtime keras` and a bare
   `python -c "import tensorflow"`; the commands alternate, every round. Medians and ratios.
2. A 640x480 video with two faces moving across it (made here from two real photos), every frame
   analysed, end to end: `python predict.py clip.mp4` with each detector, alternating.
3. The same video inside one process, the model and detectors loaded: frames per second.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_DIR))
from facial_emotion.detection import FaceDetector  # noqa: E402
from facial_emotion.images import read_image, to_rgb  # noqa: E402
from facial_emotion.pipeline import Classifier, Pipeline  # noqa: E402
from facial_emotion.saved_model import DEFAULT_MODEL_PATH, load_model  # noqa: E402

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
SECOND_FACE = PROJECT_DIR / "dataset" / "validation" / "happy" / "PublicTest_10130075.jpg"
VIDEO_FRAMES = 250


def timed(command):
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=PROJECT_DIR)
    return time.perf_counter() - started


def report(title, values, unit, fmt="{:.2f}"):
    median = statistics.median(values)
    print(f"  {title:40s} median {fmt.format(median)} {unit}  rounds {', '.join(fmt.format(v) for v in values)}")
    return median


def make_video(path):
    """A 640x480 clip, 10 s at 25 frames/s: the test photo's face (150 px) and a FER-2013 face
    (110 px) crossing a grey frame in opposite directions."""
    import cv2

    first = np.asarray(to_rgb(read_image(PHOTO)).crop((140, 30, 310, 200)).resize((150, 150)))[:, :, ::-1]
    second = np.asarray(to_rgb(read_image(SECOND_FACE)).resize((110, 110)))[:, :, ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for index in range(VIDEO_FRAMES):
        frame = np.full((480, 640, 3), 120, np.uint8)
        x = 10 + (index * 6) % 480  # back and forth across the frame
        frame[60:210, x:x + 150] = first
        frame[300:410, 520 - (index * 6) % 510:630 - (index * 6) % 510] = second
        writer.write(frame)
    writer.release()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    predict = [sys.executable, "predict.py", "--model", str(args.model)]
    photo = {"import tensorflow": [sys.executable, "-c", "import tensorflow"],
             "photo, BlazeFace (default)": [*predict, str(PHOTO)],
             "photo, --detector haar": [*predict, str(PHOTO), "--detector", "haar"],
             "photo, --runtime keras": [*predict, str(PHOTO), "--runtime", "keras"]}
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "clip.mp4"
        make_video(video)
        clip = {"video, BlazeFace (default)": [*predict, str(video)],
                "video, --detector haar": [*predict, str(video), "--detector", "haar"]}
        times = {name: [] for name in (*photo, *clip)}
        for _ in range(args.rounds):
            for name, command in {**photo, **clip}.items():
                times[name].append(timed(command))
        print("1. One photo, end to end (seconds)")
        medians = {name: report(name, times[name], "s") for name in photo}
        print(f"  BlazeFace / Haar: {medians['photo, BlazeFace (default)'] / medians['photo, --detector haar']:.2f}x "
              "the time")
        print(f"2. A 640x480 video, {VIDEO_FRAMES} frames, two faces, every frame, end to end (seconds)")
        medians = {name: report(name, times[name], "s") for name in clip}
        blaze, haar = medians["video, BlazeFace (default)"], medians["video, --detector haar"]
        print(f"  frames/s: BlazeFace {VIDEO_FRAMES / blaze:.1f}, Haar {VIDEO_FRAMES / haar:.1f}; "
              f"BlazeFace is {haar / blaze:.2f}x as fast")

        model, metadata = load_model(args.model, runtime="onnx")
        pipelines = {kind: Pipeline(Classifier(model, metadata), FaceDetector(kind)) for kind in ("blazeface", "haar")}
        rates = {kind: [] for kind in pipelines}
        for _ in range(args.rounds):
            for kind, pipeline in pipelines.items():
                started = time.perf_counter()
                frames = len(list(pipeline.video(video)))
                rates[kind].append(frames / (time.perf_counter() - started))
        print("3. The same video in one process (frames per second)")
        fps = {kind: report(kind, values, "frames/s", "{:.1f}") for kind, values in rates.items()}
        print(f"  BlazeFace / Haar: {fps['blazeface'] / fps['haar']:.2f}x as fast")


if __name__ == "__main__":
    main()
