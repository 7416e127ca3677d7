"""The default network against the same network with two convolutions in its 48x48 block (the
default until run Q in the README), side by side in one process.

    python tests/benchmarks/first_block.py

Rounds of 12 training batches of 64 random 48x48 faces (no input pipeline), the two networks
interleaved. Prints images per second and the process's CPU time per image for every round,
their medians, and the ratio of the medians.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import emotion_recognition as er  # noqa: E402

BATCH_SIZE = 64
BATCHES = 12
ROUNDS = 5


def two_convolutions_first(layers, regularizers, momentum):
    return er._vgg_layers(layers, regularizers, momentum, (16, 32, 96, 192), er.LIGHT_DROPOUT,
                          convolutions=(2, 2, 2, 2))


def main():
    er.LAYER_BUILDERS["two-first"] = two_convolutions_first
    names = ("default", "two-first")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH_SIZE * BATCHES, 48, 48, 1)).astype("float32")
    y = er.one_hot(rng.integers(0, 7, len(x)), 7)
    models = {name: er.build_model(7, name) for name in names}
    for model in models.values():  # warm-up: build graphs once
        model.fit(x[:BATCH_SIZE * 2], y[:BATCH_SIZE * 2], batch_size=BATCH_SIZE, epochs=1, verbose=0)
    rates = {name: [] for name in names}
    cpu_ms = {name: [] for name in names}
    for _ in range(ROUNDS):
        for name, model in models.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
            rates[name].append(len(x) / (time.perf_counter() - started))
            cpu_ms[name].append((time.process_time() - cpu_started) * 1000 / len(x))
    for name in names:
        print(f"{name:9s} params {models[name].count_params():>9,d}  "
              f"img/s {', '.join(f'{r:.0f}' for r in rates[name])} (median {statistics.median(rates[name]):.0f})  "
              f"CPU ms/image {', '.join(f'{c:.2f}' for c in cpu_ms[name])} "
              f"(median {statistics.median(cpu_ms[name]):.2f})")
    print(f"the default's CPU time per image is {statistics.median(cpu_ms['default']) / statistics.median(cpu_ms['two-first']):.2f}x "
          f"the two-convolution network's; its median img/s "
          f"{statistics.median(rates['default']) / statistics.median(rates['two-first']):.2f}x")


if __name__ == "__main__":
    main()
