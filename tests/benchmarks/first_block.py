"""The default network against the same network with two convolutions in its 48x48 block (the
default until run Q in the README), side by side in one process.

    python tests/benchmarks/first_block.py

Rounds of 12 training batches of 64 random 48x48 faces (no input pipeline), the two networks
interleaved. Prints images per second and the process's CPU time per image for every round,
their medians, and the ratio of the medians.
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402
from throughput import er  # noqa: E402

ROUNDS = 5


def two_convolutions_first(layers, regularizers, momentum):
    """The default network with two convolutions in its first block."""
    return er._vgg_layers(layers, regularizers, momentum, er.DEFAULT_WIDTHS, er.LIGHT_DROPOUT,
                          convolutions=(2,) + er.DEFAULT_CONVOLUTIONS[1:])


def main():
    er.LAYER_BUILDERS["two-first"] = two_convolutions_first
    names = ("default", "two-first")
    models, rates, cpu_ms = throughput.measure(names, ROUNDS)
    medians = {name: statistics.median(rates[name]) for name in names}
    cpu_medians = {name: statistics.median(cpu_ms[name]) for name in names}
    for name in names:
        print(f"{name:9s} params {models[name].count_params():>9,d}  "
              f"img/s {', '.join(f'{r:.0f}' for r in rates[name])} (median {medians[name]:.0f})  "
              f"CPU ms/image {', '.join(f'{c:.2f}' for c in cpu_ms[name])} (median {cpu_medians[name]:.2f})")
    print(f"the default's CPU time per image is {cpu_medians['default'] / cpu_medians['two-first']:.2f}x "
          f"the two-convolution network's; its median img/s {medians['default'] / medians['two-first']:.2f}x")


if __name__ == "__main__":
    main()
