"""Training throughput of networks side by side in one process.

    python tests/benchmarks/throughput.py                      # every network in networks.py, 3 rounds
    python tests/benchmarks/throughput.py default two-first    # the default's one-convolution first block

Each round trains every architecture for the same number of batches of random 48x48 faces
(batch 64, no input pipeline: the model alone), interleaved so that machine noise hits all
alike. Prints images per second per round and the median, and the ratios to the default;
then the process's CPU time per image, which does not change when the process gets less of
the CPU (rounds on about one core show up in images per second only).
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import networks  # noqa: E402
from networks import er  # noqa: E402

BATCH_SIZE = 64
BATCHES = 12
ROUNDS = 3


def measure(names, rounds=ROUNDS):
    """Builds the named architectures and trains each for `rounds` interleaved rounds of BATCHES
    batches of random faces. Returns the models, and per name the images per second and the
    process's CPU milliseconds per image of every round."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH_SIZE * BATCHES, 48, 48, 1)).astype("float32")
    y = er.one_hot(rng.integers(0, 7, len(x)), 7)
    models = {name: networks.build(name) for name in names}
    for model in models.values():  # warm-up: build graphs once
        model.fit(x[:BATCH_SIZE * 2], y[:BATCH_SIZE * 2], batch_size=BATCH_SIZE, epochs=1, verbose=0)
    rates = {name: [] for name in names}
    cpu_ms = {name: [] for name in names}
    for _ in range(rounds):
        for name, model in models.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
            rates[name].append(len(x) / (time.perf_counter() - started))
            cpu_ms[name].append((time.process_time() - cpu_started) * 1000 / len(x))
    return models, rates, cpu_ms


def main():
    names = tuple(sys.argv[1:]) or networks.NAMES
    unknown = set(names) - set(networks.NAMES)
    if unknown:
        sys.exit(f"error: unknown network(s) {', '.join(sorted(unknown))}; choose from {', '.join(networks.NAMES)}")
    if "default" not in names:
        names = ("default",) + names
    models, rates, cpu_ms = measure(names)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_ms.items()}
    for name in names:
        print(f"{name:9s} params {models[name].count_params():>9,d}  "
              f"img/s per round {', '.join(f'{r:.0f}' for r in rates[name])}  median {medians[name]:.0f}  "
              f"default is {medians['default'] / medians[name]:.2f}x this")
    for name in names:
        print(f"{name:9s} CPU ms per image per round {', '.join(f'{c:.2f}' for c in cpu_ms[name])}  "
              f"median {cpu_medians[name]:.2f}  this takes {cpu_medians[name] / cpu_medians['default']:.2f}x the default's")


if __name__ == "__main__":
    main()
