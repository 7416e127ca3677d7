"""float32 against bfloat16 on the real training loop, interleaved: images per second and accuracy.

    python tests/benchmarks/precision.py --data-dir ../shared/fer2013 --output-dir ../runs/precision
    python tests/benchmarks/precision.py --rounds 2 --epochs 3 --batches 100 --architecture wide

Each round trains one short run per precision with emotion_recognition.train: the same seed,
data, augmentation, selection set and callbacks as a real run, only shorter (--batches per
epoch) and without the finishing steps, which run in float32 either way. Epoch 1 holds the
graph tracing, so speed is the median over later epochs. Prints each run's images per second
and its last epoch's selection accuracy, then the medians and the bfloat16/float32 ratio. Run
folders go to --output-dir/<precision>-<round>.
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import emotion_recognition as er  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


class Trained(Exception):
    """Training is over: the finishing steps are skipped."""


def stop_before_finishing(*args, **kwargs):
    raise Trained


def run_once(args, precision, round_index):
    config = er.TrainConfig(data_dir=str(args.data_dir), epochs=args.epochs, max_batches=args.batches,
                            architecture=args.architecture, precision=precision, seed=args.seed,
                            selection_fraction=0.1, lr_schedule="cosine")
    folder = args.output_dir / f"{precision}-{round_index}"
    try:
        er.train(config, folder, overwrite=True, log=lambda *a, **k: None)
    except Trained:
        pass
    history = er.read_history(folder / "history.csv")
    return statistics.median(history["images_per_second"][1:]), history["val_accuracy"][-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=er.DEFAULT_DATA_DIR)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/precision"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--architecture", default="wide", choices=tuple(er.ARCHITECTURES))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    er.finish_model = stop_before_finishing  # not what is measured
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first one holds the tracing")
    speeds, accuracies = {name: [] for name in PRECISIONS}, {name: [] for name in PRECISIONS}
    for round_index in range(args.rounds):
        for precision in PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]:
            speed, accuracy = run_once(args, precision, round_index)
            speeds[precision].append(speed)
            accuracies[precision].append(accuracy)
            print(f"round {round_index + 1} {precision:8s} {speed:6.1f} img/s  selection accuracy {accuracy:.4f}",
                  flush=True)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    for name in PRECISIONS:
        print(f"{name:8s} median {medians[name]:.1f} img/s, selection accuracy "
              f"{', '.join(f'{a:.4f}' for a in accuracies[name])}")
    print(f"bfloat16 / float32: {medians['bfloat16'] / medians['float32']:.2f}x")


if __name__ == "__main__":
    main()
