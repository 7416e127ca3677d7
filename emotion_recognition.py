"""Facial emotion recognition: train a Keras CNN on 48x48 grayscale faces, evaluate it, use it.

Paste-able commands (run from anywhere; relative paths are taken from the working directory):

    python emotion_recognition.py                                  # quick start on dataset/
    python emotion_recognition.py --data-dir ../shared/fer2013 --output-dir runs/fer2013
    python emotion_recognition.py --evaluate models/emotion_model.h5 \
        --test-dir dataset/validation --output-dir runs/eval
    python emotion_recognition.py --import-csv fer2013.csv --data-dir fer2013_folders

Importing this module runs nothing. `predict.py` reuses its image loading, model loading and
class names, so prediction cannot drift from training.
"""

import argparse
import csv
import functools
import json
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

# TensorFlow's C++ start-up chatter is noise for a command-line user; real errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------
PROJECT_DIR = Path(__file__).resolve().parent
# FER-2013's native resolution; every image is brought to this size before the model sees it.
IMAGE_SIZE = (48, 48)
# One channel: FER-2013 is grayscale, and colour carries little expression information.
INPUT_SHAPE = IMAGE_SIZE + (1,)
# The model shipped with the project; training never writes here unless told to explicitly.
DEFAULT_MODEL_PATH = PROJECT_DIR / "models" / "emotion_model.h5"
# The small real sample that makes the quick start work out of the box.
DEFAULT_DATA_DIR = PROJECT_DIR / "dataset"
# Training runs go to runs/train, runs/train2, ... so a second run never clobbers the first.
DEFAULT_RUNS_DIR = Path("runs")
# The suffixes Pillow reads that people keep face images in.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# More class folders than this is almost surely a wrong --data-dir (a folder of photos, say).
MAX_CLASSES = 1000
# Kaggle's fer2013.csv label order (emotion column 0..6) and its Usage column -> split folders.
FER2013_CSV_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_CSV_SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
# Training defaults: measured on FER-2013 with 2 CPU cores (see README, "Choosing the recipe").
DEFAULT_EPOCHS = 60
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_SEED = 42
# Patience values: LR is cut after 4 flat epochs, training stops after 10 (with best weights back).
REDUCE_LR_PATIENCE = 4
# Batch normalisation's moving averages (used at validation and prediction) follow the last
# ~10 batches, not Keras's default ~100: on the 22-batch epochs of the quick start, 0.99 left
# validation at chance for 15+ epochs while training accuracy rose.
BATCH_NORM_MOMENTUM = 0.9
# The floor of both learning-rate schedules: below it Adam's steps no longer move these weights.
MIN_LEARNING_RATE = 1e-5
EARLY_STOP_PATIENCE = 10
# Augmentation of the seed scripts (rotation, zoom, flip) plus small shifts: faces in FER-2013
# are roughly but not exactly aligned, so a few pixels of shift mimic real detector crops.
AUGMENTATION = dict(
    rotation_range=10,
    zoom_range=0.1,
    width_shift_range=0.1,
    height_shift_range=0.1,
    horizontal_flip=True,
    fill_mode="nearest",
)
# Exit status for errors the user can fix (bad path, bad file); argparse uses 2 for bad flags.
EXIT_USER_ERROR = 1


class UserError(Exception):
    """A problem the user can fix (bad path, bad file). Shown as one line, never a traceback."""


@functools.lru_cache(maxsize=None)
def import_keras():
    """Import Keras lazily, so `--help` and input checks answer before TensorFlow's slow start.

    TensorFlow 2.21 writes C++ start-up notes (oneDNN, CUDA probing) straight to file
    descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL; they are muted for the import and device set-up
    only. Python errors still surface as usual.
    """
    with quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
        import keras
    return keras


class quiet_native_stderr:
    def __enter__(self):
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self.saved = None

    def __exit__(self, *exc_info):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def _image_data_generator(**augmentation):
    """`tf.keras.preprocessing.image.ImageDataGenerator`: a legacy API that TensorFlow 2.21 with
    Keras 3 still ships (plain `keras.preprocessing.image` no longer has it)."""
    import_keras()
    import tensorflow as tf

    return tf.keras.preprocessing.image.ImageDataGenerator(**augmentation)


# ---------------------------------------------------------------------------------------------
# Data: images and class folders
# ---------------------------------------------------------------------------------------------
def is_image_file(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path):
    """Open an image file as an upright PIL image (EXIF orientation applied), any mode.

    Errors a user can cause (missing, unreadable, not an image, truncated) become one-line
    `UserError`s naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: broken image ({error})") from None


def open_image(path):
    """Any image file -> upright 8-bit grayscale PIL image."""
    return to_grayscale(read_image(path))


def to_grayscale(image):
    """Convert a PIL image of any mode to 8-bit grayscale ('L')."""
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer pixels: rescale to 0..255 rather than clipping everything to white.
        array = np.asarray(image, dtype=np.float64)
        maximum = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / maximum * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    return to_rgb(image).convert("L")


def to_rgb(image):
    """Convert a PIL image of any mode to 8-bit RGB. Transparent pixels become white, so a
    cut-out face on a transparent background does not sit on black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_grayscale(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB") if image.mode != "RGB" else image


def preprocess_face(image):
    """A grayscale PIL face crop -> float32 array (48, 48, 1) of raw 0..255 pixels.

    Scaling to 0..1 is the model's own first layer (Rescaling), so this is all the preprocessing
    there is, for training and prediction alike.
    """
    if image.size != IMAGE_SIZE:
        image = image.resize(IMAGE_SIZE, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)[:, :, np.newaxis]


def load_face(path):
    """An image file, taken whole as a face -> model input array (48, 48, 1)."""
    return preprocess_face(open_image(path))


def list_class_folders(split_dir):
    """Sorted class folder names of a split folder; errors for a missing or empty folder."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: no such folder")
    classes = sorted(entry.name for entry in split_dir.iterdir()
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UserError(f"{split_dir}: holds no class folders (expected one folder per emotion)")
    if len(classes) > MAX_CLASSES:
        raise UserError(f"{split_dir}: holds {len(classes)} folders, more than {MAX_CLASSES} "
                        "classes; is this the right --data-dir?")
    return classes


def list_images(class_dir):
    """Image files directly inside one class folder, sorted, hidden files skipped."""
    return sorted(path for path in Path(class_dir).iterdir()
                  if path.is_file() and is_image_file(path) and not path.name.startswith("."))


def find_splits(data_dir):
    """(train_dir, validation_dir) of a data folder; validation may be named test (Kaggle)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such data folder")
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise UserError(f"{data_dir}: has no train/ folder (expected train/ and validation/ or test/)")
    for name in ("validation", "test"):
        if (data_dir / name).is_dir():
            return train_dir, data_dir / name
    raise UserError(f"{data_dir}: has no validation/ or test/ folder beside train/")


def check_class_folders(split_dir, class_names=None, min_images=1):
    """Validate a split folder's classes; returns its class names.

    With `class_names`, the split must hold exactly those classes (training) or, with
    `subset_ok`, any subset of them (evaluation).
    """
    found = list_class_folders(split_dir)
    if class_names is not None and found != list(class_names):
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        details = "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"extra {', '.join(extra)}" if extra else "") if part)
        raise UserError(f"{split_dir}: classes differ from train/ ({details})")
    for name in found:
        count = len(list_images(Path(split_dir) / name))
        if count < min_images:
            raise UserError(f"{Path(split_dir) / name}: holds {count} image{'' if count == 1 else 's'}, "
                            f"needs at least {min_images}")
    return found


def make_directory_iterator(split_dir, class_names, batch_size=DEFAULT_BATCH_SIZE, shuffle=False,
                            generator=None, seed=None):
    """Keras's `flow_from_directory` over a split: the canonical folder -> (image, label) reader.

    It lists the files and labels them by sorted folder name, as every FER-2013 project expects.
    """
    generator = generator or _image_data_generator()
    return generator.flow_from_directory(
        str(split_dir), target_size=IMAGE_SIZE, color_mode="grayscale", classes=list(class_names),
        class_mode="categorical", batch_size=batch_size, shuffle=shuffle, seed=seed,
        interpolation="bilinear")


def load_split(split_dir, class_names, log=print):
    """Decode every image of a split once into memory: (x float32 [n,48,48,1], y int [n], files).

    Files are listed by `flow_from_directory` and decoded with `load_face`, the same function
    `predict.py` uses; a file that cannot be decoded is skipped with a warning naming it instead
    of crashing the run mid-epoch. Decoding once, rather than every epoch, keeps the CPU for the
    model (see README, "Input pipeline").
    """
    iterator = make_directory_iterator(split_dir, class_names)
    images, labels, files = [], [], []
    for relative, label in zip(iterator.filenames, iterator.classes):
        path = Path(split_dir) / relative
        try:
            images.append(load_face(path))
        except UserError as error:
            log(f"warning: skipping {error}", file=sys.stderr)
            continue
        labels.append(int(label))
        files.append(str(path))
    if not images:
        raise UserError(f"{split_dir}: no readable images")
    present = set(labels)
    for index, name in enumerate(class_names):
        if index not in present:
            raise UserError(f"{Path(split_dir) / name}: holds no readable images")
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def build_model(num_classes, architecture="default", learning_rate=DEFAULT_LEARNING_RATE,
                label_smoothing=0.0, batch_norm_momentum=BATCH_NORM_MOMENTUM):
    """A compiled Keras Sequential CNN: 48x48x1 raw pixels in, class probabilities out."""
    keras = import_keras()
    if architecture not in LAYER_BUILDERS:
        raise UserError(f"unknown architecture {architecture!r} (choose from {', '.join(ARCHITECTURES)})")
    model = keras.Sequential(
        [keras.Input(INPUT_SHAPE), keras.layers.Rescaling(1.0 / 255)]
        + LAYER_BUILDERS[architecture](keras.layers, keras.regularizers, batch_norm_momentum)
        + [keras.layers.Dense(num_classes, activation="softmax", name="probabilities")],
        name=f"emotion_cnn_{architecture}")
    compile_model(model, learning_rate, label_smoothing)
    return model


def compile_model(model, learning_rate, label_smoothing=0.0):
    keras = import_keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        # XLA on CPU ran convolutions several times slower than TensorFlow's oneDNN kernels here.
        jit_compile=False)


def _conv_block(layers, regularizers, filters, convolutions, l2, dropout, momentum):
    block = []
    for _ in range(convolutions):
        block += [layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                kernel_regularizer=regularizers.l2(l2) if l2 else None),
                  layers.BatchNormalization(momentum=momentum), layers.Activation("relu")]
    return block + [layers.MaxPooling2D(), layers.Dropout(dropout)]


# Dropout rates after each of the four convolution blocks, then in the dense head.
DROPOUT = (0.0, 0.1, 0.15, 0.2, 0.4)  # runs B to M in the README; `narrow` and `wide`
LIGHT_DROPOUT = (0.0, 0.0, 0.05, 0.1, 0.25)  # the default network since run N


def _vgg_layers(layers, regularizers, momentum, widths, dropout=DROPOUT, convolutions=(2, 2, 2, 2)):
    """VGG-style blocks of 3x3 convolutions (two per block unless told), L2 on the deeper ones,
    a small dense head."""
    l2 = (0.0, 0.0, 1e-4, 1e-4)
    blocks = []
    for block in range(4):
        blocks += _conv_block(layers, regularizers, widths[block], convolutions[block], l2[block],
                              dropout[block], momentum)
    return blocks + [layers.Flatten(), layers.Dense(256, use_bias=False),
                     layers.BatchNormalization(momentum=momentum),
                     layers.Activation("relu"), layers.Dropout(dropout[4])]


# The default network's filters and convolutions per block (see _default_layers).
DEFAULT_WIDTHS = (16, 32, 96, 192)
DEFAULT_CONVOLUTIONS = (1, 2, 2, 2)


def _default_layers(layers, regularizers, momentum):
    """Conv 16 / 32-32 / 96-96 / 192-192: sized for a 45-minute run on 2 CPU cores. The blocks at
    48x48 and 24x24 take most of its time, so it is narrow there and wider in the blocks at 12x12
    and 6x6, where filters cost little (run L in the README: 1.0 point over `narrow` in the same
    45 minutes); the block at 48x48 has one convolution, not two, which saves 15-20% of the
    CPU time per image at no loss of accuracy (run Q). Its dropout is light: in 45 minutes it
    under-fits more than it over-fits (run N)."""
    return _vgg_layers(layers, regularizers, momentum, DEFAULT_WIDTHS, LIGHT_DROPOUT,
                       convolutions=DEFAULT_CONVOLUTIONS)


def _narrow_layers(layers, regularizers, momentum):
    """Conv 16-32-64-128: the default before run L (the README's runs A to D and K)."""
    return _vgg_layers(layers, regularizers, momentum, (16, 32, 64, 128))


def _wide_layers(layers, regularizers, momentum):
    """Conv 32-64-128-256: `narrow` twice as wide, for longer runs (the shipped model)."""
    return _vgg_layers(layers, regularizers, momentum, (32, 64, 128, 256))


def _seed_layers(layers, regularizers, momentum):
    """The seed project's network: Conv 32-64 / 128 / 512 / 512 / 512 with batch norm, Dense 256-512."""
    def normalise_and_pool():
        return [layers.BatchNormalization(), layers.MaxPooling2D(), layers.Dropout(0.25)]

    return ([layers.Conv2D(32, 3, padding="same", activation="relu"),
             layers.Conv2D(64, 3, padding="same", activation="relu")] + normalise_and_pool()
            + [layers.Conv2D(128, 5, padding="same", activation="relu")] + normalise_and_pool()
            + [layers.Conv2D(512, 3, padding="same", activation="relu")] + normalise_and_pool()
            + [layers.Conv2D(512, 3, padding="same", activation="relu")] + normalise_and_pool()
            + [layers.Conv2D(512, 3, padding="same", activation="relu")] + normalise_and_pool()
            + [layers.Flatten(),
               layers.Dense(256, activation="relu"), layers.BatchNormalization(), layers.Dropout(0.25),
               layers.Dense(512, activation="relu"), layers.BatchNormalization(), layers.Dropout(0.25)])


def _small_layers(layers, regularizers, momentum):
    """The small seed-002 network: Conv 32-64-128-128, Dense 1024."""
    return [layers.Conv2D(32, 3, activation="relu"), layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(), layers.Dropout(0.25),
            layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(), layers.Dropout(0.25),
            layers.Flatten(), layers.Dense(1024, activation="relu"), layers.Dropout(0.5)]


# --architecture's choices, the default first.
LAYER_BUILDERS = {"default": _default_layers, "narrow": _narrow_layers, "wide": _wide_layers,
                  "seed": _seed_layers, "small": _small_layers}
ARCHITECTURES = tuple(LAYER_BUILDERS)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def one_hot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels]


def balanced_sample_weights(labels, num_classes):
    """Per-sample weights n / (k * count[class]): each class weighs the same in the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * counts))[labels].astype(np.float32)


def make_training_flow(x, y, num_classes, batch_size, seed, augment=True, sample_weight=None,
                       workers=2, epoch=0):
    """`ImageDataGenerator.flow` over decoded images: augmentation on the fly, one pass an epoch,
    prepared in `workers` threads while the model trains on the previous batch; the same seed
    gives the same batches (see AugmentedBatches). `epoch` is where a resumed run starts."""
    generator = _image_data_generator(**(AUGMENTATION if augment else {}))
    flow = generator.flow(x, one_hot(y, num_classes), batch_size=batch_size, shuffle=True,
                          seed=seed, sample_weight=sample_weight)
    return _keras_classes().AugmentedBatches(flow, seed, workers, epoch)


def make_callbacks(output_dir, model_path, epoch_images, settings, time_limit_minutes=None,
                   resume_state=None, log=print):
    """Early stopping (best weights back), the learning-rate schedule (cut on plateau, or
    cosine), best-only checkpoint, CSV history, a line an epoch, and the state that --resume
    needs, saved after every epoch."""
    keras = import_keras()
    classes = _keras_classes()
    report = classes.EpochReport(epoch_images, time_limit_minutes, log=log)
    if settings.get("lr_schedule") == "cosine":
        schedule = classes.CosineSchedule(settings["learning_rate"], settings["epochs"], time_limit_minutes, report)
    else:
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=REDUCE_LR_PATIENCE,
                                                     min_lr=MIN_LEARNING_RATE)
    checkpoint = classes.AtomicModelCheckpoint(str(model_path), monitor="val_accuracy", mode="max",
                                               save_best_only=True)
    # A cosine schedule sets the run's length itself: early stopping would end it in its high-rate
    # phase, before the decay that gives the best epochs, so there it only keeps the best weights.
    patience = settings["epochs"] if settings.get("lr_schedule") == "cosine" else EARLY_STOP_PATIENCE
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                                   patience=patience, restore_best_weights=True)
    history = keras.callbacks.CSVLogger(str(Path(output_dir) / "history.csv"), append=resume_state is not None)
    state = classes.TrainingState(output_dir, model_path, settings, report, schedule, checkpoint,
                                  early_stopping, resume_state)
    # Order matters: the report adds timing to the logs that CSVLogger writes, and the state is
    # saved last, after every other callback has updated its own.
    return [report, schedule, checkpoint, early_stopping, history, state]


STATE_FILE = "training_state.json"
LAST_CHECKPOINT = "last_checkpoint.keras"


@functools.lru_cache(maxsize=None)
def _keras_classes():
    """The project's Keras subclasses, defined on first use so that importing this module (and
    `--help`) does not wait for TensorFlow."""
    import threading
    import types

    keras = import_keras()

    class AugmentedBatches(keras.utils.PyDataset):
        """An `ImageDataGenerator.flow` iterator's batches, identical for the same seed.

        The legacy iterator draws its shuffles and random transforms from NumPy's global
        generator, seeded from a batch counter that worker threads would advance in whatever
        order they happen to run. Here each batch is made under a lock with the counter set from
        (epoch, batch index), so scheduling cannot change a batch; a worker still prepares the
        next batch while the model computes on this one."""

        def __init__(self, flow, seed, workers, epoch=0):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
            self.flow, self.seed, self.epoch = flow, seed, epoch
            self.lock = threading.Lock()
            self._shuffle()

        def _shuffle(self):
            np.random.seed((self.seed + 7919 * self.epoch) % 2**32)
            self.flow.on_epoch_end()  # the iterator's own reshuffle of the image order

        def __len__(self):
            return len(self.flow)

        def __getitem__(self, index):
            with self.lock:
                self.flow.total_batches_seen = self.epoch * len(self.flow) + index
                return self.flow[index]

        def on_epoch_end(self):
            self.epoch += 1
            self._shuffle()

    class EpochReport(keras.callbacks.Callback):
        """One line an epoch: time, images/s, the share of time spent waiting for input data,
        accuracy; also stops training once an optional time limit has passed."""

        def __init__(self, epoch_images, time_limit_minutes=None, log=print):
            super().__init__()
            self.epoch_images = epoch_images
            self.time_limit_s = time_limit_minutes * 60 if time_limit_minutes else None
            self.log = log
            self.elapsed_before = 0.0

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter() - self.elapsed_before

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()
            self.batch_ended = None
            self.waiting = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            # Between one batch's end and the next one's start, Keras fetches the next batch:
            # that gap is the time the model waits for the input pipeline.
            if self.batch_ended is not None:
                self.waiting += time.perf_counter() - self.batch_ended

        def on_train_batch_end(self, batch, logs=None):
            self.batch_ended = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            now = time.perf_counter()
            seconds = now - self.epoch_started
            logs["epoch_seconds"] = round(seconds, 2)
            logs["elapsed_seconds"] = round(now - self.started, 1)
            logs["images_per_second"] = round(self.epoch_images / seconds, 1)
            logs["input_wait_share"] = round(self.waiting / seconds, 4)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.log(f"epoch {epoch + 1}: {seconds:.0f}s ({logs['images_per_second']:.0f} img/s, "
                     f"input wait {logs['input_wait_share']:.0%}, {logs['elapsed_seconds'] / 60:.1f} min in) "
                     f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f} "
                     f"val_loss {logs.get('val_loss', 0):.4f} val_acc {logs.get('val_accuracy', 0):.4f} "
                     f"lr {logs['learning_rate']:.2g}")
            if self.time_limit_s and now - self.started >= self.time_limit_s:
                self.log(f"time limit of {self.time_limit_s / 60:g} min reached; stopping")
                self.model.stop_training = True

    class CosineSchedule(keras.callbacks.Callback):
        """Cosine learning-rate decay from the initial rate to MIN_LEARNING_RATE over the run's
        budget: whichever of epochs or --time-limit minutes runs out first, so a time-limited
        CPU run still ends at a low rate. Set at the start of each epoch."""

        def __init__(self, initial, epochs, time_limit_minutes, report):
            super().__init__()
            self.initial, self.epochs, self.report = initial, epochs, report
            self.time_limit_s = time_limit_minutes * 60 if time_limit_minutes else None

        def on_epoch_begin(self, epoch, logs=None):
            progress = epoch / self.epochs
            if self.time_limit_s:
                progress = max(progress, (time.perf_counter() - self.report.started) / self.time_limit_s)
            rate = MIN_LEARNING_RATE + (self.initial - MIN_LEARNING_RATE) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            self.model.optimizer.learning_rate.assign(rate)

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        """Keras's best-only ModelCheckpoint, but each save goes to a temporary file that is then
        renamed over the old one: a crash mid-save never leaves a broken model where a good one was."""

        def __init__(self, filepath, **kwargs):
            self.final_path = Path(filepath)
            super().__init__(str(temporary_path(self.final_path)), **kwargs)

        def on_epoch_end(self, epoch, logs=None):
            # The .h5 model is for prediction: no optimizer in it. (Keras 3.15's legacy .h5
            # writer, asked to include the optimizer, also deletes it from the model's compile
            # config, and the resumable .keras checkpoint then loses its optimizer state.)
            self.model.save = functools.partial(type(self.model).save, self.model, include_optimizer=False)
            try:
                with _quiet_legacy_h5_notice():
                    super().on_epoch_end(epoch, logs)
            finally:
                del self.model.save
            if Path(self.filepath).exists():
                os.replace(self.filepath, self.final_path)

    class TrainingState(keras.callbacks.Callback):
        """After every epoch: the model with its optimizer state (last_checkpoint.keras) and the
        callbacks' counters (training_state.json), so --resume carries on where this left off."""

        def __init__(self, output_dir, model_path, settings, report, schedule, checkpoint,
                     early_stopping, resume_state=None):
            super().__init__()
            self.output_dir = Path(output_dir)
            self.model_path = model_path
            self.settings = settings
            self.report = report
            # Only ReduceLROnPlateau has counters to carry over; the cosine schedule follows time.
            self.reduce_lr = schedule if isinstance(schedule, keras.callbacks.ReduceLROnPlateau) else None
            self.checkpoint, self.early_stopping = checkpoint, early_stopping
            self.resume_state = resume_state

        def on_train_begin(self, logs=None):
            # Runs after the other callbacks' on_train_begin, which reset their counters.
            state = self.resume_state
            if not state:
                return
            self.early_stopping.wait = state["early_stopping"]["wait"]
            self.early_stopping.best = state["early_stopping"]["best"]
            self.early_stopping.best_epoch = state["early_stopping"]["best_epoch"]
            if Path(self.model_path).is_file():
                best = keras.models.load_model(str(self.model_path), compile=False, safe_mode=True)
                self.early_stopping.best_weights = best.get_weights()
            if self.reduce_lr is not None and state.get("reduce_lr"):
                self.reduce_lr.wait = state["reduce_lr"]["wait"]
                self.reduce_lr.best = state["reduce_lr"]["best"]
                self.reduce_lr.cooldown_counter = state["reduce_lr"]["cooldown_counter"]
            self.checkpoint.best = state["checkpoint_best"]
            self.report.started = time.perf_counter() - state["elapsed_seconds"]

        def on_epoch_end(self, epoch, logs=None):
            save_model_atomically(self.model, self.output_dir / LAST_CHECKPOINT)
            write_json_atomically({
                "epochs_done": epoch + 1,
                "elapsed_seconds": round(time.perf_counter() - self.report.started, 1),
                "early_stopping": {"wait": self.early_stopping.wait, "best": _plain(self.early_stopping.best),
                                   "best_epoch": self.early_stopping.best_epoch},
                "reduce_lr": ({"wait": self.reduce_lr.wait, "best": _plain(self.reduce_lr.best),
                               "cooldown_counter": self.reduce_lr.cooldown_counter}
                              if self.reduce_lr is not None else None),
                "checkpoint_best": _plain(self.checkpoint.best),
                "stopped": bool(self.model.stop_training),
                "settings": self.settings,
            }, self.output_dir / STATE_FILE)

    return types.SimpleNamespace(AugmentedBatches=AugmentedBatches, EpochReport=EpochReport, CosineSchedule=CosineSchedule,
                                 AtomicModelCheckpoint=AtomicModelCheckpoint, TrainingState=TrainingState)


def _plain(value):
    """A NumPy or tensor scalar as a JSON number (None stays None)."""
    return None if value is None else float(value)


def temporary_path(path):
    """A sibling temporary name with the same suffix (Keras picks the format from the suffix)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def save_model_atomically(model, path):
    """Save to a temporary sibling, then rename: a crash mid-save never breaks the old file.
    An .h5 file is for prediction and leaves the optimizer out (see AtomicModelCheckpoint)."""
    path = Path(path)
    partial = temporary_path(path)
    with _quiet_legacy_h5_notice():
        if path.suffix == ".h5":
            model.save(str(partial), include_optimizer=False)
        else:
            model.save(str(partial))
    os.replace(partial, path)


class _quiet_legacy_h5_notice:
    """Keras logs "HDF5 is considered legacy" on every .h5 save; the design asks for .h5 (the
    format users' tools read), so the notice is noise here."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("absl")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc_info):
        self.logger.setLevel(self.level)
        return False


def write_json_atomically(data, path):
    path = Path(path)
    partial = temporary_path(path)
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)


def choose_output_dir(output_dir, overwrite=False, stem="train"):
    """The run folder: the user's (refused if it holds files, unless --overwrite) or the first
    free one of runs/<stem>, runs/<stem>2, ..."""
    if output_dir is None:
        for index in range(1, 10000):
            candidate = DEFAULT_RUNS_DIR / (stem if index == 1 else f"{stem}{index}")
            if not candidate.exists():
                output_dir = candidate
                break
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: exists and is not a folder")
    if output_dir.resolve() == DEFAULT_MODEL_PATH.parent.resolve() and not overwrite:
        raise UserError(f"{output_dir}: holds the shipped model; pass --overwrite to replace it")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise UserError(f"{output_dir}: already holds files from another run; "
                        "choose another --output-dir or pass --overwrite")
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; carries the run folder so the user can resume."""

    def __init__(self, output_dir, epochs_done):
        super().__init__(str(output_dir))
        self.output_dir, self.epochs_done = output_dir, epochs_done


class _sigterm_as_interrupt:
    """SIGTERM (a job scheduler, `kill`) ends training like Ctrl-C: what is saved stays saved."""

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def train(data_dir=DEFAULT_DATA_DIR, output_dir=None, epochs=DEFAULT_EPOCHS, batch_size=DEFAULT_BATCH_SIZE,
          learning_rate=DEFAULT_LEARNING_RATE, seed=DEFAULT_SEED, augment=True, architecture="default",
          label_smoothing=0.0, class_weighting="none", workers=2, time_limit_minutes=None,
          lr_schedule="plateau", batch_norm_momentum=BATCH_NORM_MOMENTUM, overwrite=False, max_batches=None,
          resume_state=None, init_model=None, log=print):
    """Train a model on `data_dir`/train, validate on validation/ (or test/), write all artifacts.

    Returns the run folder. `max_batches` caps each epoch (the --dry-run smoke test uses it);
    `resume_state` (read by `resume()`) continues an interrupted run in its own folder.
    `init_model` starts from a saved model's weights (a second schedule, or fine-tuning) instead
    of random ones; its classes must be the data's, in the same order.
    """
    keras = import_keras()
    train_dir, validation_dir = find_splits(data_dir)
    class_names = check_class_folders(train_dir, min_images=2)
    check_class_folders(validation_dir, class_names)
    if init_model is not None and not resume_state:
        start_model, start_metadata = load_start_model(init_model, class_names)
        # A JSON may say nothing of its training ("training" missing or null): name the network then.
        start_training = start_metadata.get("training") or {}
        architecture = start_training.get("architecture", start_model.name)
    output_dir = Path(output_dir) if resume_state else choose_output_dir(output_dir, overwrite)
    log(f"training on {train_dir}, validating on {validation_dir}; writing to {output_dir}")

    x_train, y_train, _ = load_split(train_dir, class_names, log=log)
    x_val, y_val, _ = load_split(validation_dir, class_names, log=log)
    log(f"{len(x_train)} training and {len(x_val)} validation images, classes: {', '.join(class_names)}")

    keras.utils.set_random_seed(seed + (resume_state["epochs_done"] if resume_state else 0))
    model_path = Path(output_dir) / DEFAULT_MODEL_PATH.name
    settings = dict(data_dir=str(data_dir), epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, seed=seed, augment=augment, architecture=architecture,
                    label_smoothing=label_smoothing, class_weighting=class_weighting, workers=workers,
                    time_limit_minutes=time_limit_minutes, lr_schedule=lr_schedule,
                    batch_norm_momentum=batch_norm_momentum, max_batches=max_batches,
                    init_model=None if init_model is None else str(init_model))
    if resume_state:
        model = load_checkpoint(Path(output_dir) / LAST_CHECKPOINT)
        metadata = read_metadata(model_path)
        initial_epoch = resume_state["epochs_done"]
        log(f"resuming after epoch {initial_epoch}")
    else:
        metadata = make_metadata(class_names, dict(settings, command=" ".join(sys.argv)))
        if init_model is None:
            model = build_model(len(class_names), architecture, learning_rate, label_smoothing, batch_norm_momentum)
        else:
            model = start_model
            compile_model(model, learning_rate, label_smoothing)
            log(f"starting from the weights of {init_model}")
            # The chain of runs behind the model: how its starting weights were made.
            metadata["training"]["initialised_from"] = {
                "model": str(init_model), "training": start_training or None,
                "validation_accuracy": (start_metadata.get("validation") or {}).get("accuracy")}
        initial_epoch = 0
        # The class names go to disk before the first checkpoint, so every saved model has them.
        write_json_atomically(metadata, metadata_path(model_path))
        save_sample_grid(x_train, y_train, class_names, Path(output_dir) / "sample_images.png")
    sample_weight = (balanced_sample_weights(y_train, len(class_names))
                     if class_weighting == "balanced" else None)
    flow = make_training_flow(x_train, y_train, len(class_names), batch_size, seed, augment,
                              sample_weight, workers, epoch=initial_epoch)
    steps = len(flow) if max_batches is None else min(len(flow), max_batches)
    callbacks = make_callbacks(output_dir, model_path, steps * batch_size, settings, time_limit_minutes,
                               resume_state, log)
    try:
        with _sigterm_as_interrupt():
            # shuffle=False: the flow shuffles itself, reproducibly; Keras would reorder batches.
            model.fit(flow, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                      validation_data=(x_val, one_hot(y_val, len(class_names))), validation_batch_size=256,
                      callbacks=callbacks, verbose=0)
    except KeyboardInterrupt:
        state = read_training_state(output_dir, required=False)
        raise TrainingInterrupted(output_dir, state["epochs_done"] if state else 0) from None

    statistics = refresh_batch_norm(model, x_train, x_val, y_val, log)
    if statistics:
        metadata["training"]["batch_norm_statistics"] = statistics
    history = read_history(Path(output_dir) / "history.csv")
    minutes = history["elapsed_seconds"][-1] / 60 if history.get("elapsed_seconds") else 0.0
    metadata["training"].update(epochs_run=len(history.get("loss", [])), wall_minutes=round(minutes, 2))
    metadata, metrics = save_described_model(model, metadata, model_path, x_val, y_val)
    save_training_curves(history, Path(output_dir) / "training_curves.png")
    state = read_training_state(output_dir)
    write_json_atomically(dict(state, finished=True), Path(output_dir) / STATE_FILE)
    log(f"done in {minutes:.1f} min: validation accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f}, ECE {metadata['validation']['ece_before_calibration']:.4f} -> "
        f"{metrics['expected_calibration_error']:.4f} (temperature {metadata['temperature']:.3f}); "
        f"model saved to {model_path}")
    return output_dir


def batch_norm_layers(model):
    keras = import_keras()
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batch_norm_statistics(model, faces, batch_size=256, seed=0):
    """Set every batch-norm layer's moving mean and variance to the average over `faces`, in
    shuffled batches: the statistics of the inputs the model will see.

    During training they are moving averages over augmented batches, taken while the weights were
    still changing; un-augmented faces at prediction time differ from those (Wu & Johnson's
    "precise batch norm"). Dropout stays on, as in training and in PyTorch's `update_bn`.
    """
    norms = batch_norm_layers(model)
    momenta = [layer.momentum for layer in norms]
    order = np.random.default_rng(seed).permutation(len(faces))
    try:
        seen = 0
        for start in range(0, len(faces), batch_size):
            batch = np.asarray(faces[order[start:start + batch_size]], dtype=np.float32)
            # moving = moving * m + batch statistic * (1 - m): with m = seen / (seen + n) it is
            # the running average over every face so far, weighted by batch size.
            for layer in norms:
                layer.momentum = seen / (seen + len(batch))
            model(batch, training=True)
            seen += len(batch)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def refresh_batch_norm(model, x_train, x_val, y_val, log=print):
    """Recompute the batch-norm statistics on the un-augmented training faces and keep them
    unless validation accuracy drops; returns the record for the model's JSON (None when the
    model has no batch norm)."""
    norms = batch_norm_layers(model)
    if not norms:
        return None
    before, saved = validation_accuracy(model, x_val, y_val), [layer.get_weights() for layer in norms]
    recompute_batch_norm_statistics(model, x_train)
    after = validation_accuracy(model, x_val, y_val)
    kept = after >= before
    if not kept:
        for layer, weights in zip(norms, saved):
            layer.set_weights(weights)
    log(f"batch-norm statistics recomputed on {len(x_train)} un-augmented training images: validation "
        f"accuracy {before:.4f} -> {after:.4f}; {'kept' if kept else 'discarded (kept the training-time ones)'}")
    return {"recomputed_on_training_images": int(len(x_train)), "validation_accuracy_before": before,
            "validation_accuracy_after": after, "kept": kept}


def recompute_batch_norm(model_path, data_dir, output_dir=None, overwrite=False, log=print):
    """`--recompute-batch-norm`: a saved model with its batch-norm statistics recomputed on
    `data_dir`/train, written with its JSON and validation figures to a new folder."""
    model, metadata = load_model_bundle(model_path)
    if not batch_norm_layers(model):
        raise UserError(f"{model_path}: has no batch-normalisation layers; nothing to recompute")
    class_names = metadata["class_names"]
    train_dir, validation_dir = find_splits(data_dir)
    check_class_folders(train_dir, class_names)
    check_class_folders(validation_dir, class_names)
    output_dir = choose_output_dir(output_dir, overwrite, stem="batchnorm")
    x_train, _, _ = load_split(train_dir, class_names, log=log)
    x_val, y_val, _ = load_split(validation_dir, class_names, log=log)
    statistics = refresh_batch_norm(model, x_train, x_val, y_val, log)
    metadata = dict(metadata, training=dict(metadata.get("training") or {}, batch_norm_statistics=dict(
        statistics, source_model=str(model_path), command=" ".join(sys.argv))))
    save_job_model(model, metadata, output_dir, x_val, y_val, log)
    return output_dir


def restore_class_prior(model_path, data_dir, output_dir=None, overwrite=False, log=print):
    """`--restore-class-prior`: a model trained with `--class-weight balanced`, its answers put back
    on the training set's class frequencies, written with its JSON and validation figures to a new
    folder.

    Balanced weights teach the model the posterior of a set in which every class is equally common:
    p_balanced(class | face), proportional to p(class | face) / prior(class). Multiplying by the
    prior gives back p(class | face) (Menon et al., "Long-tail learning via logit adjustment",
    2021): the rare classes keep the features the weights taught, and the frequent classes get
    back the answers the weights took from them. log(prior) is added to the softmax layer's bias,
    so the saved model answers with it and `predict.py` needs nothing new. Nothing is fitted: the
    prior is the training folders' class counts.
    """
    model, metadata = load_model_bundle(model_path)
    training = metadata.get("training") or {}
    if training.get("class_weighting") != "balanced":
        raise UserError(f"{model_path}: was not trained with --class-weight balanced (its JSON says "
                        f"{training.get('class_weighting')!r}); its answers already follow the class frequencies")
    if training.get("class_prior"):
        raise UserError(f"{model_path}: its class prior is already restored (training.class_prior in its JSON)")
    last = model.layers[-1] if model.layers else None
    if not (last is not None and getattr(last, "bias", None) is not None
            and getattr(getattr(last, "activation", None), "__name__", "") == "softmax"):
        raise UserError(f"{model_path}: its last layer is not a softmax layer with a bias; cannot restore the prior")
    class_names = metadata["class_names"]
    train_dir, validation_dir = find_splits(data_dir)
    check_class_folders(train_dir, class_names)
    check_class_folders(validation_dir, class_names)
    output_dir = choose_output_dir(output_dir, overwrite, stem="prior")
    # The counts that --class-weight balanced weighted by: the training images that decode.
    _, y_train, _ = load_split(train_dir, class_names, log=log)
    prior = np.bincount(y_train, minlength=len(class_names)) / len(y_train)
    x_val, y_val, _ = load_split(validation_dir, class_names, log=log)
    before = validation_accuracy(model, x_val, y_val)
    last.bias.assign(np.asarray(last.bias) + np.log(prior).astype(np.float32))
    after = validation_accuracy(model, x_val, y_val)
    log(f"class prior of {len(y_train)} training images restored: validation accuracy {before:.4f} -> {after:.4f}")
    record = {"training_images": int(len(y_train)),
              "prior": {name: round(float(share), 6) for name, share in zip(class_names, prior)},
              "validation_accuracy_before": before, "validation_accuracy_after": after,
              "source_model": str(model_path), "command": " ".join(sys.argv)}
    metadata = dict(metadata, training=dict(training, class_prior=record))
    save_job_model(model, metadata, output_dir, x_val, y_val, log)
    return output_dir


def validation_accuracy(model, x_val, y_val):
    return round(float(np.mean(predict_probabilities(model, x_val).argmax(axis=1) == y_val)), 4)


def save_job_model(model, metadata, output_dir, x_val, y_val, log=print):
    """The end of a job that changes a saved model (--recompute-batch-norm, --restore-class-prior):
    the result saved and described in `output_dir`, its validation figures printed."""
    new_path = Path(output_dir) / DEFAULT_MODEL_PATH.name
    metadata, metrics = save_described_model(model, metadata, new_path, x_val, y_val)
    log(f"validation accuracy {metrics['accuracy']:.4f} (flip TTA {metadata['validation']['flip_tta']['accuracy']:.4f}), "
        f"macro-F1 {metrics['macro_f1']:.4f}; model saved to {new_path}")


def save_described_model(model, metadata, model_path, x_val, y_val):
    """A run's final model: saved, calibrated, described in its JSON, and evaluated on validation
    (metrics, confusion matrix and prediction grid beside it). Returns (metadata, metrics)."""
    output_dir, class_names = Path(model_path).parent, metadata["class_names"]
    save_model_atomically(model, model_path)
    metadata, probabilities = calibrate_and_describe(model, metadata, x_val, y_val)
    write_json_atomically(metadata, metadata_path(model_path))
    metrics = write_evaluation(output_dir, class_names, y_val, probabilities)
    save_prediction_grid(x_val, y_val, probabilities, class_names, output_dir / "validation_predictions.png")
    return metadata, metrics


def calibrate_and_describe(model, metadata, x_val, y_val):
    """Fit the temperature on validation and record the model's validation figures (with and
    without flip test-time augmentation, ECE before and after) in its metadata. Returns the new
    metadata and the calibrated validation probabilities. The model itself is not changed."""
    class_names = metadata["class_names"]
    raw = predict_probabilities(model, x_val)
    temperature = fit_temperature(y_val, raw)
    calibrated = apply_temperature(raw, temperature)
    flipped = predict_probabilities(model, x_val, temperature, tta=True)
    plain, with_tta = compute_metrics(class_names, y_val, calibrated), compute_metrics(class_names, y_val, flipped)
    recall = lambda metrics: {name: figures["recall"] for name, figures in metrics["per_class"].items()}
    metadata = dict(metadata, temperature=round(temperature, 4))
    metadata["validation"] = {
        "images": int(len(y_val)), "accuracy": plain["accuracy"], "macro_f1": plain["macro_f1"],
        "per_class_recall": recall(plain),
        "ece_before_calibration": round(expected_calibration_error(y_val, raw), 4),
        "ece_after_calibration": plain["expected_calibration_error"],
        "flip_tta": {"accuracy": with_tta["accuracy"], "macro_f1": with_tta["macro_f1"],
                     "per_class_recall": recall(with_tta)},
    }
    return metadata, calibrated


def fit_temperature(labels, probabilities):
    """The temperature T for softmax(log p / T) with the lowest expected calibration error (15 bins)
    on these labels, from 601 log-spaced values between 0.05 and 20 (the first of equal ones).

    Calibration error is what the temperature is for; the log-likelihood optimum can miss it (the
    README's fifth cycle: ECE 0.032 at its likelihood optimum, T 1.61)."""
    labels = np.asarray(labels)
    temperatures = np.exp(np.linspace(np.log(0.05), np.log(20.0), 601))
    errors = [expected_calibration_error(labels, apply_temperature(probabilities, float(t))) for t in temperatures]
    return float(temperatures[int(np.argmin(errors))])


def calibrate(model_path, validation_dir, log=print):
    """Fit a saved model's temperature on a validation folder and record its figures in its JSON."""
    model, metadata = load_model_bundle(model_path)
    check_class_folders(validation_dir, metadata["class_names"])
    x_val, y_val, _ = load_split(validation_dir, metadata["class_names"], log=log)
    metadata, _ = calibrate_and_describe(model, metadata, x_val, y_val)
    write_json_atomically(metadata, metadata_path(model_path))
    figures = metadata["validation"]
    log(f"{model_path}: temperature {metadata['temperature']}, ECE {figures['ece_before_calibration']} -> "
        f"{figures['ece_after_calibration']}; accuracy {figures['accuracy']} (flip TTA "
        f"{figures['flip_tta']['accuracy']}), macro-F1 {figures['macro_f1']}")
    return metadata


def load_start_model(model_path, class_names):
    """A saved model to train further (--init-model): its outputs must be the data's classes, in
    the data's order, or every label would be trained against the wrong output."""
    model_path = Path(model_path)
    # A run's last checkpoint (its last epoch rather than its best) has the run's JSON beside it.
    description = model_path.with_name(DEFAULT_MODEL_PATH.name) if model_path.name == LAST_CHECKPOINT else None
    model, metadata = load_model_bundle(model_path, description)
    if list(metadata["class_names"]) != list(class_names):
        raise UserError(f"{model_path}: its classes ({', '.join(metadata['class_names'])}) are not the "
                        f"data's ({', '.join(class_names)}); it cannot start this training")
    return model, metadata


def read_training_state(output_dir, required=True):
    path = Path(output_dir) / STATE_FILE
    if not path.is_file():
        if not required:
            return None
        raise UserError(f"{output_dir}: no {STATE_FILE}; not a run folder that can be resumed")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise UserError(f"{path}: unreadable ({error})") from None


def resume(output_dir, log=print):
    """Continue an interrupted run from its last finished epoch, with the same settings."""
    state = read_training_state(output_dir)
    if state.get("finished") or state.get("stopped"):
        raise UserError(f"{output_dir}: that run already finished; nothing to resume")
    if not (Path(output_dir) / LAST_CHECKPOINT).is_file():
        raise UserError(f"{output_dir}: no {LAST_CHECKPOINT} to resume from")
    settings = dict(state["settings"])
    return train(output_dir=output_dir, resume_state=state, log=log, **settings)


def load_checkpoint(path):
    """A training checkpoint with its optimizer state (safe mode: no code runs from the file)."""
    keras = import_keras()
    try:
        return keras.models.load_model(str(path), safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "not loadable"
        raise UserError(f"{path}: cannot resume from it ({str(error).splitlines()[0][:200]})") from None


def read_history(path):
    """history.csv as {column: [values]}: the whole run's, across resumes."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")]
            for key in (rows[0] if rows else {})}


def make_metadata(class_names, settings):
    import tensorflow as tf

    return {"class_names": list(class_names), "input_shape": list(INPUT_SHAPE), "temperature": 1.0,
            "training": dict(settings, tensorflow_version=tf.__version__,
                             keras_version=import_keras().__version__, cpu_count=os.cpu_count())}


# ---------------------------------------------------------------------------------------------
# Evaluation and plots
# ---------------------------------------------------------------------------------------------
def apply_temperature(probabilities, temperature):
    """Re-scale softmax outputs by a calibration temperature: softmax(log p / T)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def predict_probabilities(model, faces, temperature=1.0, tta=False, batch_size=256):
    """Class probabilities for an array of faces [n, 48, 48, 1], in batches; `tta` averages each
    face with its horizontal mirror."""
    faces = np.asarray(faces, dtype=np.float32)
    outputs = []
    for start in range(0, len(faces), batch_size):
        batch = faces[start:start + batch_size]
        probabilities = np.asarray(model(batch, training=False))
        if tta:
            probabilities = (probabilities + np.asarray(model(batch[:, :, ::-1, :], training=False))) / 2
        outputs.append(probabilities)
    if not outputs:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return apply_temperature(np.concatenate(outputs), temperature)


def compute_metrics(class_names, labels, probabilities):
    """Accuracy, macro-F1 (over the classes present in `labels`) and per-class figures."""
    from sklearn import metrics as skm

    predictions = probabilities.argmax(axis=1)
    present = sorted(set(int(label) for label in labels))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=list(range(len(class_names))), zero_division=0)
    return {
        "accuracy": round(float(np.mean(predictions == labels)), 4),
        "macro_f1": round(float(skm.f1_score(labels, predictions, labels=present, average="macro",
                                             zero_division=0)), 4),
        "expected_calibration_error": round(expected_calibration_error(labels, probabilities), 4),
        "images": int(len(labels)),
        "per_class": {name: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                             "f1": round(float(f1[i]), 4), "support": int(support[i])}
                      for i, name in enumerate(class_names)},
    }


def expected_calibration_error(labels, probabilities, bins=15):
    """ECE with equal-width confidence bins: how far stated confidence is from actual accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def write_evaluation(output_dir, class_names, labels, probabilities):
    """metrics.json, classification_report.txt and confusion_matrix.png; returns the metrics."""
    from sklearn import metrics as skm

    output_dir = Path(output_dir)
    metrics = compute_metrics(class_names, labels, probabilities)
    write_json_atomically(metrics, output_dir / "metrics.json")
    present = sorted(set(int(label) for label in labels))
    report = skm.classification_report(labels, probabilities.argmax(axis=1), labels=present,
                                       target_names=[class_names[i] for i in present], digits=4,
                                       zero_division=0)
    (output_dir / "classification_report.txt").write_text(report, encoding="utf-8")
    save_confusion_matrix(labels, probabilities.argmax(axis=1), class_names,
                          output_dir / "confusion_matrix.png")
    return metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: a training script never opens a window
    import matplotlib.pyplot as plt

    return plt


def save_confusion_matrix(labels, predictions, class_names, path):
    """Two seaborn heatmaps side by side: raw counts, and rows normalised to recall."""
    import seaborn as sns
    from sklearn import metrics as skm

    plt = _pyplot()
    counts = skm.confusion_matrix(labels, predictions, labels=list(range(len(class_names))))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    figure, axes = plt.subplots(1, 2, figsize=(15, 6))
    for axis, data, fmt, title in ((axes[0], counts, "d", "counts"),
                                   (axes[1], normalised, ".2f", "normalised by true class")):
        sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", xticklabels=class_names,
                    yticklabels=class_names, ax=axis, cbar=False)
        axis.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({title})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_training_curves(history, path):
    """Loss and accuracy by epoch (train and validation), and validation accuracy by minutes of
    training: what a CPU user waits for."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for axis, key in ((axes[0], "loss"), (axes[1], "accuracy")):
        axis.plot(epochs, history.get(key, []), label=f"train {key}")
        axis.plot(epochs, history.get(f"val_{key}", []), label=f"validation {key}")
        axis.set(xlabel="epoch", ylabel=key, title=key.capitalize())
        axis.grid(alpha=0.3)
        axis.legend()
    minutes = np.asarray(history.get("elapsed_seconds", [])) / 60
    if len(minutes) == len(history.get("val_accuracy", [])):
        axes[2].plot(minutes, history["val_accuracy"], marker=".")
    axes[2].set(xlabel="minutes of training", ylabel="validation accuracy",
                title=f"Validation accuracy against time ({os.cpu_count()} CPU cores)")
    axes[2].grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_sample_grid(x, labels, class_names, path, count=25, seed=0):
    plt = _pyplot()
    picks = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)
    figure = _image_grid(plt, x[picks], [class_names[labels[i]] for i in picks], ["black"] * len(picks))
    figure.suptitle("Training samples")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_prediction_grid(x, labels, probabilities, class_names, path, count=25, seed=0):
    """Validation faces with predicted label and confidence; wrong ones in red with the truth."""
    plt = _pyplot()
    picks = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)
    titles, colours = [], []
    for i in picks:
        predicted = int(probabilities[i].argmax())
        wrong = predicted != labels[i]
        titles.append(f"{class_names[predicted]} {probabilities[i, predicted]:.0%}"
                      + (f"\n(true: {class_names[labels[i]]})" if wrong else ""))
        colours.append("red" if wrong else "green")
    figure = _image_grid(plt, x[picks], titles, colours)
    figure.suptitle("Validation predictions (red: wrong)")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _image_grid(plt, images, titles, colours):
    columns = 5
    rows = max(1, math.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2, rows * 2.3))
    for axis in np.ravel(axes):
        axis.axis("off")
    for axis, image, title, colour in zip(np.ravel(axes), images, titles, colours):
        axis.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
        axis.set_title(title, fontsize=8, color=colour)
    figure.tight_layout()
    return figure


def evaluate(model_path, test_dir, output_dir, tta=False, overwrite=False, log=print):
    """Evaluate a saved model on a folder of class folders (any subset of the model's classes)."""
    model, metadata = load_model_bundle(model_path)
    class_names = metadata["class_names"]
    found = list_class_folders(test_dir)
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise UserError(f"{test_dir}: class folder(s) {', '.join(unknown)} unknown to the model "
                        f"(it knows {', '.join(class_names)})")
    output_dir = choose_output_dir(output_dir, overwrite, stem="evaluate")
    x, labels, files = load_split(test_dir, found, log=log)
    labels = np.asarray([class_names.index(found[label]) for label in labels])
    probabilities = predict_probabilities(model, x, metadata.get("temperature", 1.0), tta=tta)
    metrics = write_evaluation(output_dir, class_names, labels, probabilities)
    save_prediction_grid(x, labels, probabilities, class_names, Path(output_dir) / "test_predictions.png")
    log(f"{model_path} on {test_dir} ({len(labels)} images{', flip TTA' if tta else ''}): "
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"ECE {metrics['expected_calibration_error']:.4f}; details in {output_dir}")
    return metrics


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------
def metadata_path(model_path):
    """The JSON beside a model: models/emotion_model.h5 -> models/emotion_model.json."""
    return Path(model_path).with_suffix(".json")


def read_metadata(model_path):
    path = metadata_path(model_path)
    if not path.is_file():
        raise UserError(f"{model_path}: no class-name file {path.name} beside it")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        class_names = metadata["class_names"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a valid model description ({error})") from None
    if not isinstance(class_names, list) or not class_names or not all(isinstance(c, str) for c in class_names):
        raise UserError(f"{path}: class_names must be a non-empty list of names")
    return metadata


@functools.lru_cache(maxsize=4)
def _load_model_cached(model_path, modified):
    return load_model_bundle(model_path)


def load_model_bundle(model_path=DEFAULT_MODEL_PATH, described_as=None):
    """Load a saved model and its JSON; checks that they fit together and fit 48x48x1 faces.

    Keras's safe mode stays on: a model file cannot run Python code (Lambda layers are refused).
    `described_as`: read the JSON of this model path instead (a run's last checkpoint uses its run's).
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(f"{model_path}: no such model file")
    if model_path.stat().st_size == 0:
        raise UserError(f"{model_path}: empty model file")
    described_as = model_path if described_as is None else Path(described_as)
    metadata = read_metadata(described_as)
    keras = import_keras()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(str(model_path), compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "not loadable"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Lambda" in message or "unsafe" in message.lower():
            raise UserError(f"{model_path}: refused: it holds a Lambda layer with Python code, which "
                            "could do anything on this machine; Keras's safe mode does not run it") from None
        raise UserError(f"{model_path}: not a loadable Keras model ({message[:200]})") from None
    input_shape = tuple(model.input_shape[1:])
    if input_shape != INPUT_SHAPE:
        raise UserError(f"{model_path}: expects input {input_shape}, not 48x48 grayscale {INPUT_SHAPE}")
    outputs = model.output_shape[-1]
    if outputs != len(metadata["class_names"]):
        raise UserError(f"{model_path}: has {outputs} outputs but {metadata_path(described_as).name} "
                        f"names {len(metadata['class_names'])} classes")
    return model, metadata


def detect_emotion(image_path, model_path=DEFAULT_MODEL_PATH):
    """The emotion of the face in an image file (taken whole): (emotion, confidence in percent)."""
    model_path = Path(model_path).resolve()
    model, metadata = _load_model_cached(str(model_path), model_path.stat().st_mtime
                                         if model_path.exists() else 0)
    probabilities = predict_probabilities(model, load_face(image_path)[np.newaxis],
                                          metadata.get("temperature", 1.0))[0]
    best = int(probabilities.argmax())
    return metadata["class_names"][best], round(float(probabilities[best]) * 100, 1)


# ---------------------------------------------------------------------------------------------
# Kaggle's fer2013.csv -> class folders
# ---------------------------------------------------------------------------------------------
def import_fer2013_csv(csv_path, output_dir, overwrite=False, log=print):
    """Write fer2013.csv's images as PNG class folders: Training -> train/, PublicTest ->
    validation/, PrivateTest -> test/. Returns {split: count}. Every row is checked first, so a bad
    file writes nothing."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: no such CSV file")
    rows = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))} "
                                "(expected emotion, pixels, Usage)")
            for line, row in enumerate(reader, start=2):
                rows.append(_parse_csv_row(csv_path, line, row))
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not a text CSV file") from None
    if not rows:
        raise UserError(f"{csv_path}: holds no images")
    output_dir = Path(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise UserError(f"{output_dir}: already holds files; choose an empty folder or pass --overwrite")
    counts = {}
    for index, (label, pixels, split) in enumerate(rows):
        folder = output_dir / split / FER2013_CSV_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").save(folder / f"{split}_{index:05d}.png")
        counts[split] = counts.get(split, 0) + 1
    log(f"wrote {len(rows)} images to {output_dir}: "
        + ", ".join(f"{split} {count}" for split, count in sorted(counts.items())))
    return counts


def _parse_csv_row(csv_path, line, row):
    try:
        label = int(row["emotion"])
        pixels = np.array(row["pixels"].split(), dtype=np.int64)
    except (ValueError, AttributeError):
        raise UserError(f"{csv_path}:{line}: emotion and pixels must be numbers") from None
    if not 0 <= label < len(FER2013_CSV_CLASSES):
        raise UserError(f"{csv_path}:{line}: emotion {label} is not 0..6")
    if pixels.size != IMAGE_SIZE[0] * IMAGE_SIZE[1] or pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"{csv_path}:{line}: pixels must be {IMAGE_SIZE[0] * IMAGE_SIZE[1]} values 0..255")
    split = FER2013_CSV_SPLITS.get((row.get("Usage") or "").strip())
    if split is None:
        raise UserError(f"{csv_path}:{line}: Usage {row.get('Usage')!r} is not one of "
                        f"{', '.join(FER2013_CSV_SPLITS)}")
    return label, pixels.reshape(IMAGE_SIZE).astype(np.uint8), split


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except for switches and flags whose default is "not given"."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a CNN to recognise facial emotions in 48x48 grayscale faces, or evaluate one.",
        formatter_class=HelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder with train/ and validation/ (or test/), each holding one folder per class")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the model, plots and metrics go (default: runs/train, runs/train2, ...)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="most epochs (early stopping may end sooner)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE, help="Adam's initial learning rate")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for weights, shuffling and augmentation")
    parser.add_argument("--no-augment", action="store_true", help="train without rotation/zoom/shift/flip")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="default",
                        help="default: this project's CNN (Conv 16 / 32-32 / 96-96 / 192-192); narrow: the previous default "
                             "(16-32-64-128); wide: Conv 32-64-128-256 (the shipped model); seed/small: the "
                             "seed projects' networks, for comparison")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="share of each target spread over the other classes")
    parser.add_argument("--class-weight", choices=("none", "balanced"), default="none",
                        help="balanced: weight each class's loss by 1/frequency (helps rare classes such as disgust)")
    parser.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau",
                        help="plateau: halve the rate after 4 epochs without progress; cosine: decay it "
                             "smoothly over --epochs or --time-limit, whichever ends first")
    parser.add_argument("--batch-norm-momentum", type=float, default=BATCH_NORM_MOMENTUM,
                        help="momentum of the batch-norm moving averages during training (0.99 "
                             "reproduces the README's runs A to C)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop after the epoch that passes this many minutes of training")
    parser.add_argument("--workers", type=int, default=2, help="threads that augment the next batches")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into an --output-dir that holds files")
    parser.add_argument("--dry-run", action="store_true", help="one epoch of two batches: checks that everything runs")
    parser.add_argument("--init-model", type=Path, metavar="MODEL",
                        help="start from this saved model's weights instead of random ones (a second "
                             "learning-rate schedule, or fine-tuning); a run's last_checkpoint.keras gives "
                             "its last epoch rather than its best; --architecture is then ignored")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted training run from its last finished epoch")
    parser.add_argument("--evaluate", type=Path, metavar="MODEL", help="evaluate this saved model on --test-dir instead of training")
    parser.add_argument("--test-dir", type=Path, help="with --evaluate or --calibrate: a folder of class folders")
    parser.add_argument("--calibrate", type=Path, metavar="MODEL",
                        help="fit MODEL's confidence temperature on --test-dir (a validation set) and "
                             "record its validation figures in its JSON; training does this itself")
    parser.add_argument("--recompute-batch-norm", type=Path, metavar="MODEL",
                        help="recompute MODEL's batch-norm statistics on --data-dir's un-augmented training "
                             "images and write the result to --output-dir (training does this itself at its end)")
    parser.add_argument("--restore-class-prior", type=Path, metavar="MODEL",
                        help="put a model trained with --class-weight balanced back on --data-dir's training "
                             "class frequencies (more accurate overall, rare classes recalled less often) and "
                             "write the result to --output-dir")
    parser.add_argument("--tta", action="store_true", help="with --evaluate: average each face with its mirror image")
    parser.add_argument("--import-csv", type=Path, metavar="CSV",
                        help="convert Kaggle's fer2013.csv into class folders under --data-dir, then stop")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.learning_rate <= 0:
        parser.error("--learning-rate must be positive")
    if not 0 < args.batch_norm_momentum < 1:
        parser.error("--batch-norm-momentum must be between 0 and 1")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be in [0, 1)")
    if args.evaluate and not args.test_dir:
        parser.error("--evaluate needs --test-dir")
    if args.calibrate and not args.test_dir:
        parser.error("--calibrate needs --test-dir")
    if args.test_dir and not (args.evaluate or args.calibrate):
        parser.error("--test-dir goes with --evaluate MODEL or --calibrate MODEL")
    modes = [flag for flag, value in (("--resume", args.resume), ("--evaluate", args.evaluate),
                                      ("--calibrate", args.calibrate), ("--import-csv", args.import_csv),
                                      ("--recompute-batch-norm", args.recompute_batch_norm),
                                      ("--restore-class-prior", args.restore_class_prior)) if value]
    if len(modes) > 1:
        parser.error(f"{' and '.join(modes)} are separate jobs; give one")
    if args.init_model and modes:
        parser.error(f"--init-model goes with training, not with {modes[0]}")
    if args.import_csv and args.data_dir == DEFAULT_DATA_DIR:
        parser.error("--import-csv needs --data-dir, the folder to write the class folders into")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.import_csv:
            import_fer2013_csv(args.import_csv, args.data_dir, overwrite=args.overwrite)
        elif args.resume:
            resume(args.resume)
        elif args.calibrate:
            calibrate(args.calibrate, args.test_dir)
        elif args.recompute_batch_norm:
            recompute_batch_norm(args.recompute_batch_norm, args.data_dir, args.output_dir, args.overwrite)
        elif args.restore_class_prior:
            restore_class_prior(args.restore_class_prior, args.data_dir, args.output_dir, args.overwrite)
        elif args.evaluate:
            evaluate(args.evaluate, args.test_dir, args.output_dir, tta=args.tta, overwrite=args.overwrite)
        else:
            train(args.data_dir, args.output_dir, 1 if args.dry_run else args.epochs, args.batch_size,
                  args.learning_rate, args.seed, not args.no_augment, args.architecture,
                  args.label_smoothing, args.class_weight, args.workers, args.time_limit,
                  args.lr_schedule, args.batch_norm_momentum, args.overwrite,
                  max_batches=2 if args.dry_run else None, init_model=args.init_model)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingInterrupted as stop:
        print(f"interrupted after {stop.epochs_done} finished epoch(s); the best model so far is in "
              f"{stop.output_dir}; continue with: python {Path(sys.argv[0]).name} --resume {stop.output_dir}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
