"""predict.py's speed, side by side with TensorFlow's own start-up, in one run.

    python tests/benchmarks/predict_speed.py [--model models/emotion_model.h5]

1. One photo end to end (`python predict.py tests/data/astronaut.jpg`) against
   `python -c "import tensorflow"`, alternated 5 times; medians and their ratio.
2. Faces per second on a folder of 350 48x48 crops (dataset/validation): end to end as one
   command, and inside one process with the model already loaded (reading, preprocessing and
   batched classification only), median of 5.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
ROUNDS = 5


def timed(command):
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=PROJECT_DIR)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(PROJECT_DIR / "models" / "emotion_model.h5"))
    args = parser.parse_args()
    photo = [sys.executable, "predict.py", "tests/data/astronaut.jpg", "--model", args.model]
    bare = [sys.executable, "-c", "import tensorflow"]
    crops = PROJECT_DIR / "dataset" / "validation"
    folder = [sys.executable, "predict.py", str(crops), "--model", args.model]
    count = sum(1 for path in crops.rglob("*.jpg"))
    times = {"import tensorflow": [], "predict.py one photo": [], f"predict.py {count} crops": []}
    for _ in range(ROUNDS):
        times["import tensorflow"].append(timed(bare))
        times["predict.py one photo"].append(timed(photo))
        times[f"predict.py {count} crops"].append(timed(folder))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:24s} median {medians[name]:.2f} s  runs {', '.join(f'{v:.2f}' for v in values)}")
    base = medians["import tensorflow"]
    print(f"one photo / import tensorflow: {medians['predict.py one photo'] / base:.2f}x "
          f"(+{medians['predict.py one photo'] - base:.2f} s)")
    folder_time = medians[f"predict.py {count} crops"]
    print(f"{count} crops end to end: {count / folder_time:.0f} faces/s")
    sys.path.insert(0, str(PROJECT_DIR))
    import emotion_recognition as er
    import predict

    model, metadata = er.load_model_bundle(args.model)
    classifier = predict.Classifier(model, metadata)
    detector = predict.FaceDetector("haar")
    paths = predict.collect_inputs([crops])
    predict.predict_images(paths[:10], classifier, detector)  # warm-up
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        predict.predict_images(paths, classifier, detector)
        rates.append(len(paths) / (time.perf_counter() - started))
    print(f"{count} crops in one process, model loaded: median {statistics.median(rates):.0f} faces/s "
          f"(runs {', '.join(f'{r:.0f}' for r in rates)})")

if __name__ == "__main__":
    main()
