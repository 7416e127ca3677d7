"""Photos per second: the plain loop against Ray Data with 1 and 2 actors, interleaved, with
Ray's start-up apart; then a model of the throughput on N machines.

    python tests/benchmarks/ray_throughput.py [--photos 60] [--rounds 3]

Each round runs the same photos (copies of tests/data/astronaut.jpg, one face each, BlazeFace
and the classifier on ONNX Runtime) through `predict.py --parquet` three ways, in turn: plain, Ray
with one actor, Ray with two. Every way runs twice, on N and on 2N photos: the difference of the
two times is the time of N photos at full speed, without the fixed costs (model loading, actor
start-up, writing). Ray itself is started once, and that time is printed apart.
"""

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_DIR))

from facial_emotion import ray_predict  # noqa: E402
from facial_emotion.predict_cli import main as predict_main  # noqa: E402

PHOTO = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run_way(way, photos, output):
    if way == "plain":
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # its lines, not the figures
            return timed(lambda: predict_main([*map(str, photos), "--parquet", str(output)]))
    actors = int(way[-1])
    return timed(lambda: ray_predict.predict_on_ray(photos, output, PROJECT_DIR / "models" / "emotion_model.h5",
                                                     actors=actors))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    photos = []
    for index in range(2 * args.photos):
        photos.append(folder / f"photo_{index:05d}.jpg")
        shutil.copy(PHOTO, photos[-1])
    started = time.perf_counter()
    ray = ray_predict.start_ray(None, num_cpus=2)
    print(f"Ray start-up: {time.perf_counter() - started:.1f} s", flush=True)
    rates = {way: [] for way in ("plain", "ray-1", "ray-2")}
    try:
        for round_index in range(args.rounds):
            for way in rates:
                small = run_way(way, photos[:args.photos], folder / f"{way}-{round_index}-small.parquet")
                large = run_way(way, photos, folder / f"{way}-{round_index}-large.parquet")
                rates[way].append(args.photos / (large - small))
                print(f"round {round_index + 1} {way}: {args.photos} photos {small:.1f} s, {2 * args.photos} photos "
                      f"{large:.1f} s: {rates[way][-1]:.1f} photos/s at full speed", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    medians = {way: statistics.median(values) for way, values in rates.items()}
    for way, median in medians.items():
        print(f"{way}: median {median:.1f} photos/s ({median / medians['plain']:.2f}x plain)")
    per_actor = medians["ray-1"]
    print(f"per core: Ray with one actor on one core gives {per_actor / medians['plain']:.0%} of the plain loop "
          "(which uses both cores for detection)")
    print("Model for N machines of C cores (an assumption, not a measurement): photos/s = N x C x "
          f"{per_actor:.1f} (one actor a core at this machine's per-actor rate), capped by the storage's "
          "bandwidth / mean file size; plus a fixed start-up of Ray's and the actors' (seconds above) and "
          "the driver's listing of the inputs.")


if __name__ == "__main__":
    main()
