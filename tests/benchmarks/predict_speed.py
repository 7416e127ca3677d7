"""predict.py's speed on each runtime, side by side in one run.

    python tests/benchmarks/predict_speed.py [--model models/emotion_model.h5] [--rounds 5]

1. One photo end to end, as a user runs it: `python predict.py tests/data/astronaut.jpg` with
   the ONNX export (the default) and with `--runtime keras`, next to a bare
   `python -c "import tensorflow"`; the three commands alternate, every round. Medians and ratios.
2. Crops per second inside one process, the model loaded: batches of 256 faces through
   ONNX Runtime and through Keras, alternating; medians and their ratio.
3. Frames per second on a 640x480 video (made here: a photo's face moving across the frame),
   every frame analysed with the Haar detector, ONNX Runtime and Keras alternating.
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
import emotion_recognition as er  # noqa: E402
import predict  # noqa: E402

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
BATCH = 256
VIDEO_FRAMES = 60


def timed(command):
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=PROJECT_DIR)
    return time.perf_counter() - started


def report(title, values, unit, fmt="{:.2f}"):
    median = statistics.median(values)
    print(f"{title:34s} median {fmt.format(median)} {unit}  rounds {', '.join(fmt.format(v) for v in values)}")
    return median


def make_video(path):
    """A 640x480 clip of the test photo's face sliding across a grey frame."""
    import cv2

    face = np.asarray(er.to_rgb(er.read_image(PHOTO)).resize((240, 240)))[:, :, ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for index in range(VIDEO_FRAMES):
        frame = np.full((480, 640, 3), 120, np.uint8)
        x = 20 + index * 6
        frame[120:360, x:x + 240] = face
        writer.write(frame)
    writer.release()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=er.DEFAULT_MODEL_PATH)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    commands = {"import tensorflow": [sys.executable, "-c", "import tensorflow"],
                "predict.py photo (ONNX Runtime)": [sys.executable, "predict.py", str(PHOTO), "--model", str(args.model),
                                                    "--runtime", "onnx"],
                "predict.py photo (--runtime keras)": [sys.executable, "predict.py", str(PHOTO), "--model",
                                                       str(args.model), "--runtime", "keras"]}
    times = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(timed(command))
    print("1. One photo, end to end (seconds)")
    medians = {name: report(name, values, "s") for name, values in times.items()}
    onnx, keras_time = medians["predict.py photo (ONNX Runtime)"], medians["predict.py photo (--runtime keras)"]
    print(f"   ONNX / Keras: {onnx / keras_time:.3f}x; ONNX / import tensorflow: "
          f"{onnx / medians['import tensorflow']:.3f}x")

    models = {runtime: er.load_model_bundle(args.model, runtime=runtime)[0] for runtime in ("onnx", "keras")}
    faces = er.load_split(PROJECT_DIR / "dataset" / "validation", er.read_metadata(args.model)["class_names"])[0]
    batch = np.resize(faces, (BATCH,) + faces.shape[1:])
    rates = {runtime: [] for runtime in models}
    for model in models.values():
        er.predict_probabilities(model, batch)  # warm-up
    for _ in range(args.rounds):
        for runtime, model in models.items():
            started = time.perf_counter()
            for _ in range(4):
                er.predict_probabilities(model, batch, batch_size=BATCH)
            rates[runtime].append(4 * BATCH / (time.perf_counter() - started))
    print(f"2. Crops per second in one process, batches of {BATCH}")
    crop = {runtime: report(runtime, values, "crops/s", "{:.0f}") for runtime, values in rates.items()}
    print(f"   ONNX / Keras: {crop['onnx'] / crop['keras']:.2f}x")

    metadata = er.read_metadata(args.model)
    classifiers = {runtime: predict.Classifier(model, metadata) for runtime, model in models.items()}
    detector = predict.FaceDetector("haar")
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "clip.mp4"
        make_video(video)
        fps = {runtime: [] for runtime in classifiers}
        for _ in range(args.rounds):
            for runtime, classifier in classifiers.items():
                started = time.perf_counter()
                frames = len(predict.predict_video(video, classifier, detector))
                fps[runtime].append(frames / (time.perf_counter() - started))
    print(f"3. A 640x480 video, every frame, Haar detector ({VIDEO_FRAMES} frames)")
    video_fps = {runtime: report(runtime, values, "frames/s", "{:.1f}") for runtime, values in fps.items()}
    print(f"   ONNX / Keras: {video_fps['onnx'] / video_fps['keras']:.2f}x")


if __name__ == "__main__":
    main()
