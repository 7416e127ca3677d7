"""Networks kept only for comparison in the benchmarks: the seed projects' networks and earlier
versions of this project's default. `build(name)` gives any of them, or a training network."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import emotion_recognition as er  # noqa: E402

# Earlier defaults, in the training networks' own terms (emotion_recognition.ARCHITECTURES).
VGG_VARIANTS = {
    # The default until it was widened at 12x12 and 6x6: Conv 16-32-64-128.
    "narrow": dict(widths=(16, 32, 64, 128), convolutions=(2, 2, 2, 2), dropout=(0.0, 0.1, 0.15, 0.2, 0.4)),
    # The default with two convolutions in its 48x48 block, as it was before one was dropped.
    "two-first": dict(er.ARCHITECTURES["default"], convolutions=(2, 2, 2, 2)),
}


def seed_network(keras, num_classes):
    """The seed project's network: Conv 32-64 / 128 / 512 / 512 / 512 with batch norm, Dense 256-512."""
    layers = keras.layers

    def normalise_and_pool():
        return [layers.BatchNormalization(), layers.MaxPooling2D(), layers.Dropout(0.25)]

    return keras.Sequential(
        [keras.Input(er.INPUT_SHAPE), layers.Rescaling(1 / 255),
         layers.Conv2D(32, 3, padding="same", activation="relu"),
         layers.Conv2D(64, 3, padding="same", activation="relu")] + normalise_and_pool()
        + [layers.Conv2D(128, 5, padding="same", activation="relu")] + normalise_and_pool()
        + [layers.Conv2D(512, 3, padding="same", activation="relu")] + normalise_and_pool()
        + [layers.Conv2D(512, 3, padding="same", activation="relu")] + normalise_and_pool()
        + [layers.Conv2D(512, 3, padding="same", activation="relu")] + normalise_and_pool()
        + [layers.Flatten(), layers.Dense(256, activation="relu"), layers.BatchNormalization(),
           layers.Dropout(0.25), layers.Dense(512, activation="relu"), layers.BatchNormalization(),
           layers.Dropout(0.25), layers.Dense(num_classes, activation="softmax")], name="seed")


def small_network(keras, num_classes):
    """The small seed-002 network: Conv 32-64-128-128, Dense 1024."""
    layers = keras.layers
    return keras.Sequential(
        [keras.Input(er.INPUT_SHAPE), layers.Rescaling(1 / 255),
         layers.Conv2D(32, 3, activation="relu"), layers.Conv2D(64, 3, activation="relu"),
         layers.MaxPooling2D(), layers.Dropout(0.25),
         layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(),
         layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(), layers.Dropout(0.25),
         layers.Flatten(), layers.Dense(1024, activation="relu"), layers.Dropout(0.5),
         layers.Dense(num_classes, activation="softmax")], name="small")


NAMES = tuple(er.ARCHITECTURES) + tuple(VGG_VARIANTS) + ("seed", "small")


def build(name, num_classes=7):
    """A compiled network by name: a training architecture, an earlier variant, or a seed network."""
    if name in VGG_VARIANTS:
        er.ARCHITECTURES.setdefault(name, VGG_VARIANTS[name])
    if name in er.ARCHITECTURES:
        return er.build_model(num_classes, name)
    model = {"seed": seed_network, "small": small_network}[name](er.keras, num_classes)
    er.compile_model(model, er.TrainConfig.learning_rate)
    return model
