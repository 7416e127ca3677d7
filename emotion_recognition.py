"""Facial emotion recognition: train a Keras CNN on 48x48 grayscale faces, evaluate it, use it.

    python emotion_recognition.py                                  # quick start on dataset/
    python emotion_recognition.py --data-dir ../shared/fer2013 --output-dir runs/fer2013 \
        --time-limit 45 --lr-schedule cosine
    python emotion_recognition.py --evaluate models/emotion_model.h5 \
        --test-dir dataset/validation --output-dir runs/eval
    python emotion_recognition.py --export-onnx runs/old/emotion_model.h5
    python emotion_recognition.py --import-csv fer2013.csv --data-dir fer2013_folders

The file reads in the order data flows: settings, data, model, training, evaluation and plots,
saving and loading, command line. Importing it runs nothing and loads no TensorFlow: `predict.py`
reuses its image loading, model loading and class names, so prediction cannot drift from
training, and with an ONNX export it never waits for TensorFlow to start.
"""

import argparse
import contextlib
import csv
import functools
import hashlib
import inspect
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

from facial_emotion import shifts

# =============================================================================================
# Settings
# =============================================================================================
# Paths in the project are taken from this file's folder, never from the working directory.
PROJECT_DIR = Path(__file__).resolve().parent
# FER-2013's native resolution; every face is brought to this size before the model sees it.
IMAGE_SIZE = (48, 48)
# One channel: FER-2013 is grayscale, and colour carries little expression information.
INPUT_SHAPE = IMAGE_SIZE + (1,)
# The model shipped with the project; no command writes under models/ unless told to explicitly.
DEFAULT_MODEL_PATH = PROJECT_DIR / "models" / "emotion_model.h5"
# The small real sample that makes the quick start work out of the box.
DEFAULT_DATA_DIR = PROJECT_DIR / "dataset"
# Training runs go to runs/train, runs/train2, ... so a second run never clobbers the first.
DEFAULT_RUNS_DIR = Path("runs")
# The image files training and prediction both read: formats Pillow decodes that people keep
# faces in. One list for both, so a folder that trains is a folder that predicts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Pillow's guard against decompression bombs, made an error instead of a warning: 100 megapixels
# is more than any phone photo (a 12 MP photo is 12), and a bigger file could take gigabytes.
MAX_IMAGE_PIXELS = 100_000_000
# More class folders than this is almost surely a wrong --data-dir (a folder of photos, say).
MAX_CLASSES = 1000
# Kaggle's fer2013.csv label order (emotion column 0..6) and its Usage column -> split folders.
FER2013_CSV_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_CSV_SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}

# Training defaults, measured on FER-2013 with 2 CPU cores (models/README.md, "How the recipe
# was chosen").
DEFAULT_EPOCHS = 60
# 64 beat 32 over the same minutes; larger batches leave the 2 cores no faster.
DEFAULT_BATCH_SIZE = 64
# Adam at 1e-3: 2e-3 lost 0.3 point and most of disgust's recall.
DEFAULT_LEARNING_RATE = 1e-3
# Any fixed seed makes two runs alike: the same weights, shuffles and augmentation.
DEFAULT_SEED = 42
# Under the plateau schedule: the rate is halved after 4 flat epochs, training stops after 10
# (with the best weights back). A cosine schedule sets the run's length itself.
REDUCE_LR_PATIENCE = 4
EARLY_STOP_PATIENCE = 10
# The floor of both learning-rate schedules: below it Adam's steps no longer move these weights.
MIN_LEARNING_RATE = 1e-5
# Batch normalisation's moving averages follow the last ~10 batches, not Keras's ~100: on the
# 22-batch epochs of the quick start, 0.99 left validation at chance for 15+ epochs.
BATCH_NORM_MOMENTUM = 0.9
# The networks: filters per block, convolutions per block, dropout after each block and in the
# dense head. `default` is sized for a 45-minute run on 2 CPU cores: narrow in the blocks at
# 48x48 and 24x24, which take most of the time, wider at 12x12 and 6x6 where filters are cheap;
# one convolution at 48x48 saves 15-20% of the CPU time at no loss. Its dropout is light: in 45
# minutes it under-fits. `wide` is for long runs (the shipped model), with heavier dropout.
ARCHITECTURES = {
    "default": dict(widths=(16, 32, 96, 192), convolutions=(1, 2, 2, 2), dropout=(0.0, 0.0, 0.05, 0.1, 0.25)),
    "wide": dict(widths=(32, 64, 128, 256), convolutions=(2, 2, 2, 2), dropout=(0.0, 0.1, 0.15, 0.2, 0.4)),
}
# L2 weight decay per block: only the deep blocks, which hold most of the weights.
BLOCK_L2 = (0.0, 0.0, 1e-4, 1e-4)
# Units of the dense layer before the output.
DENSE_UNITS = 256

# Augmentation: FER-2013 faces are roughly but not exactly aligned, so small rotations and
# shifts of a few pixels mimic real detector crops; faces are left-right symmetric.
AUGMENTATION = dict(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
                    horizontal_flip=True, fill_mode="nearest")
# Framing: each training face is also scaled by a random factor in this range (log-uniform, the
# same in x and y), from a crop of 75% of the side to a face padded to 130%. FER-2013 frames
# faces one way; a detector's box with its margin, or another data set, frames them tighter or
# looser, and a model trained on one framing loses 7 points at a crop of 80%.
FRAMING_SCALE = (0.75, 1.3)
# Then light, resolution, blur, noise and JPEG shifts, each with a probability
# (facial_emotion/shifts.py, RANDOM_SHIFTS): the faces a detector finds in photos and video.
# Every evaluation reports accuracy under the panel of shifts.ROBUSTNESS_SHIFTS; its two
# re-framings are also recorded as "framing_accuracy", as before the panel existed.
EVALUATION_FRAMINGS = ("crop_80", "pad_120")

# --distribute: Keras's own strategies. The global batch is --batch-size per replica times the
# replicas, and the learning rate grows with it (Goyal et al.'s linear scaling rule, "Accurate,
# large minibatch SGD", 2017), so one replica trains exactly as without a strategy.
DISTRIBUTIONS = ("none", "mirrored", "multi-worker")

# Faces are classified in batches of this many: one model call per batch, not per face, in
# memory a few megabytes.
PREDICT_BATCH_SIZE = 256
# Temperatures tried when calibrating: 601 log-spaced values from 0.05 (sharpen) to 20 (flatten),
# scored by expected calibration error over 15 equal-width confidence bins (Guo et al., 2017).
TEMPERATURE_GRID = (0.05, 20.0, 601)
CALIBRATION_BINS = 15
# An ONNX export is kept only if it agrees with Keras on real faces: the same class for each
# and no probability more than this apart.
ONNX_TOLERANCE = 1e-4
# Exit status for errors the user can fix (bad path, bad file); argparse uses 2 for bad flags.
EXIT_USER_ERROR = 1
# Exit status after Ctrl-C or SIGTERM, as shells report a SIGINT death.
EXIT_INTERRUPTED = 130

# A run folder's resumable state: the callbacks' counters, and the model with its optimizer.
STATE_FILE = "training_state.json"
LAST_CHECKPOINT = "last_checkpoint.keras"


# =============================================================================================
# Shared helpers: user errors, TensorFlow on demand
# =============================================================================================
class UserError(Exception):
    """A problem the user can fix (bad path, bad file). Shown as one line, never a traceback."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; carries the run folder so the user can resume."""

    def __init__(self, output_dir, epochs_done):
        super().__init__(str(output_dir))
        self.output_dir, self.epochs_done = output_dir, epochs_done


def first_line(error, limit=200):
    """An exception's message as one short line (its type when it has no message): how a
    library's multi-line error reaches the user inside a UserError."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


@functools.lru_cache(maxsize=None)
def import_keras():
    """Import Keras only when a job needs it, so `--help`, input checks and ONNX prediction
    answer without TensorFlow's slow start. TensorFlow writes C++ start-up notes straight to
    file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL; they are muted for the import only."""
    with quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
        import keras
    return keras


@contextlib.contextmanager
def quiet_native_stderr():
    """Mute file descriptor 2 (native libraries' own messages: TensorFlow, FFmpeg) for a block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


# =============================================================================================
# Data: image files, faces, class folders
# =============================================================================================
def is_image_file(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path):
    """Open an image file as an upright PIL image (EXIF orientation applied), any mode; an
    animated file gives its first frame. Errors a user can cause (missing, unreadable, not an
    image, truncated, a decompression bomb) become one-line `UserError`s naming the file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise UserError(f"{path}: {image.width}x{image.height} pixels is more than "
                                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; refused")
                image.load()
                return ImageOps.exif_transpose(image)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: refused: its declared size could take gigabytes to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UserError(f"{path}: broken image ({error})") from None


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
    return preprocess_face(to_grayscale(read_image(path)))


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


def walk_files(folder, accept):
    """The files below `folder` whose names `accept` takes, in walking order (folders and files
    sorted); hidden ones skipped; linked folders followed, each real folder once, so a symlink
    loop is walked once, not forever. Training and prediction both list folders with it."""
    found, seen = [], set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [Path(root) / name for name in sorted(files) if accept(name) and not name.startswith(".")]
    return found


def list_images(class_dir):
    """The image files of one class folder and its subfolders: exactly the files training counts,
    checks and reads."""
    return walk_files(class_dir, is_image_file)


def check_class_folders(split_dir, class_names=None, min_images=1):
    """Validate a split folder's classes and their image counts; returns its class names. With
    `class_names`, the split must hold exactly those classes."""
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
                            f"needs at least {min_images} ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def load_split(split_dir, class_names, log=print):
    """Decode every image of a split once into memory: (x float32 [n,48,48,1], y int [n], files).

    Labels follow `class_names` (sorted folder names). A file that cannot be decoded is skipped
    with a warning naming it instead of crashing the run mid-epoch. Decoding once, rather than
    every epoch, keeps the CPU for the model.
    """
    images, labels, files = [], [], []
    for label, name in enumerate(class_names):
        for path in list_images(Path(split_dir) / name):
            try:
                images.append(load_face(path))
            except UserError as error:
                log(f"warning: skipping {error}", file=sys.stderr)
                continue
            labels.append(label)
            files.append(str(path))
    if not images:
        raise UserError(f"{split_dir}: no readable images")
    present = set(labels)
    for index, name in enumerate(class_names):
        if index not in present:
            raise UserError(f"{Path(split_dir) / name}: holds no readable images")
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


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


# =============================================================================================
# Model
# =============================================================================================
def build_model(num_classes, architecture="default", learning_rate=DEFAULT_LEARNING_RATE):
    """A compiled Keras Sequential CNN: 48x48x1 raw pixels in, class probabilities out.

    VGG-style blocks of 3x3 convolutions, each with batch norm and ReLU, then max pooling and
    dropout; a small dense head. The model scales pixels itself (Rescaling), so a saved model
    carries all its preprocessing.
    """
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown architecture {architecture!r} (choose from {', '.join(ARCHITECTURES)})")
    keras = import_keras()
    layers, spec = keras.layers, ARCHITECTURES[architecture]
    stack = [keras.Input(INPUT_SHAPE), layers.Rescaling(1.0 / 255)]
    for filters, convolutions, l2, dropout in zip(spec["widths"], spec["convolutions"], BLOCK_L2, spec["dropout"]):
        for _ in range(convolutions):
            stack += [layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    kernel_regularizer=keras.regularizers.l2(l2) if l2 else None),
                      layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM), layers.Activation("relu")]
        stack += [layers.MaxPooling2D(), layers.Dropout(dropout)]
    stack += [layers.Flatten(), layers.Dense(DENSE_UNITS, use_bias=False),
              layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM), layers.Activation("relu"),
              layers.Dropout(spec["dropout"][-1]),
              # float32 even under mixed precision: a softmax in float16 loses small probabilities.
              layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")]
    model = keras.Sequential(stack, name=f"emotion_cnn_{architecture}")
    compile_model(model, learning_rate)
    return model


def compile_model(model, learning_rate):
    keras = import_keras()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"],
                  # XLA on CPU ran convolutions several times slower than oneDNN's kernels here.
                  jit_compile=False)


# =============================================================================================
# Training
# =============================================================================================
def one_hot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels]


def balanced_sample_weights(labels, num_classes):
    """Per-sample weights n / (k * count[class]): each class weighs the same in the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * counts))[labels].astype(np.float32)


def make_augmenter(augment=True):
    """Keras's `ImageDataGenerator` with this project's augmentation: rotation, shift and flip,
    then, as its preprocessing function, a random framing scale (FRAMING_SCALE) and the random
    light, resolution, blur, noise and JPEG shifts (shifts.degrade_randomly).

    The legacy generator lives on in TensorFlow 2.21 as `tf.keras.preprocessing.image`.
    """
    import_keras()
    import tensorflow as tf

    generator = tf.keras.preprocessing.image.ImageDataGenerator(**(AUGMENTATION if augment else {}))
    if augment:
        low, high = np.log(FRAMING_SCALE[0]), np.log(FRAMING_SCALE[1])

        def random_framing_and_shifts(face):
            scale = float(np.exp(np.random.uniform(low, high)))
            return shifts.degrade_randomly(generator.apply_transform(face, {"zx": scale, "zy": scale}))

        generator.preprocessing_function = random_framing_and_shifts
    return generator


def augmented_batches(x, y, sample_weight, batch_size, seed, augment=True, first_epoch=0):
    """Endless augmented training batches, epoch after epoch, identical for the same seed.

    `ImageDataGenerator.flow` draws its shuffles and random transforms from NumPy's global
    generator, seeded from its batch counter; setting that counter from (epoch, batch) makes a
    batch depend on nothing else, so a resumed run sees the batches an uninterrupted one would.
    Keras runs this generator in a background thread while the model trains on the last batch.
    """
    flow = make_augmenter(augment).flow(x, y, batch_size=batch_size, shuffle=True, seed=seed,
                                        sample_weight=sample_weight)
    epoch = first_epoch
    while True:
        np.random.seed((seed + 7919 * epoch) % 2**32)  # a prime stride: no two (seed, epoch) collide soon
        flow.on_epoch_end()  # the iterator's own reshuffle of the image order
        for index in range(len(flow)):
            flow.total_batches_seen = epoch * len(flow) + index
            yield flow[index]
        epoch += 1


class EpochReport:
    """One line an epoch (time, images/s, the share of time spent waiting for input, accuracy),
    timing columns for history.csv, and the --time-limit stop. A Keras LambdaCallback calls it."""

    def __init__(self, model, epoch_images, time_limit_minutes=None, elapsed_before=0.0, log=print):
        self.model, self.epoch_images, self.log = model, epoch_images, log
        self.time_limit_s = time_limit_minutes * 60 if time_limit_minutes else None
        self.started = time.perf_counter() - elapsed_before

    def elapsed(self):
        return time.perf_counter() - self.started

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started, self.batch_ended, self.waiting = time.perf_counter(), None, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        # Between one batch's end and the next one's start Keras fetches the next batch: that
        # gap is the time the model waits for the input pipeline.
        if self.batch_ended is not None:
            self.waiting += time.perf_counter() - self.batch_ended

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ended = time.perf_counter()

    def on_epoch_end(self, epoch, logs):
        seconds = time.perf_counter() - self.epoch_started
        logs.update(epoch_seconds=round(seconds, 2), elapsed_seconds=round(self.elapsed(), 1),
                    images_per_second=round(self.epoch_images / seconds, 1),
                    input_wait_share=round(self.waiting / seconds, 4),
                    learning_rate=float(np.asarray(self.model.optimizer.learning_rate)))
        self.log(f"epoch {epoch + 1}: {seconds:.0f}s ({logs['images_per_second']:.0f} img/s, "
                 f"input wait {logs['input_wait_share']:.0%}, {logs['elapsed_seconds'] / 60:.1f} min in) "
                 f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f} "
                 f"val_loss {logs.get('val_loss', 0):.4f} val_acc {logs.get('val_accuracy', 0):.4f} "
                 f"lr {logs['learning_rate']:.2g}")
        if self.time_limit_s and self.elapsed() >= self.time_limit_s:
            self.log(f"time limit of {self.time_limit_s / 60:g} min reached; stopping")
            self.model.stop_training = True


def cosine_learning_rate(initial, epoch, epochs, time_limit_minutes=None, elapsed_seconds=0.0):
    """Cosine decay from `initial` to MIN_LEARNING_RATE over the run's budget: whichever of
    epochs or the time limit runs out first, so a time-limited CPU run still ends at a low rate."""
    progress = epoch / epochs
    if time_limit_minutes:
        progress = max(progress, elapsed_seconds / (time_limit_minutes * 60))
    return MIN_LEARNING_RATE + (initial - MIN_LEARNING_RATE) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def json_number(value):
    """A NumPy or tensor scalar as a JSON number (None stays None)."""
    return None if value is None else float(value)


class RunState:
    """What --resume needs, saved after every epoch: the model with its optimizer
    (last_checkpoint.keras), the best model so far (emotion_model.h5, replaced atomically only
    when validation accuracy improves) and the callbacks' counters (training_state.json).
    A Keras LambdaCallback calls it, after every other callback has updated itself."""

    def __init__(self, model, output_dir, settings, report, early_stopping, reduce_lr=None, resume_state=None):
        self.model, self.output_dir, self.settings = model, Path(output_dir), settings
        self.report, self.early_stopping, self.reduce_lr = report, early_stopping, reduce_lr
        self.resume_state = resume_state
        self.best = resume_state["checkpoint_best"] if resume_state else None

    @property
    def model_path(self):
        return self.output_dir / DEFAULT_MODEL_PATH.name

    def on_train_begin(self, logs=None):
        # Runs after the Keras callbacks' own on_train_begin, which reset their counters.
        state = self.resume_state
        if not state:
            return
        stopping = self.early_stopping
        stopping.wait, stopping.best = state["early_stopping"]["wait"], state["early_stopping"]["best"]
        stopping.best_epoch = state["early_stopping"]["best_epoch"]
        if self.model_path.is_file():
            stopping.best_weights = load_keras_model(self.model_path).get_weights()
        if self.reduce_lr is not None and state.get("reduce_lr"):
            for key, value in state["reduce_lr"].items():
                setattr(self.reduce_lr, key, value)

    def on_epoch_end(self, epoch, logs):
        accuracy = logs.get("val_accuracy")
        if accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = float(accuracy)
            save_model_atomically(self.model, self.model_path)
        save_model_atomically(self.model, self.output_dir / LAST_CHECKPOINT)
        write_json_atomically({
            "epochs_done": epoch + 1,
            "elapsed_seconds": round(self.report.elapsed(), 1),
            "early_stopping": {"wait": self.early_stopping.wait, "best": json_number(self.early_stopping.best),
                               "best_epoch": self.early_stopping.best_epoch},
            "reduce_lr": ({"wait": self.reduce_lr.wait, "best": json_number(self.reduce_lr.best),
                           "cooldown_counter": self.reduce_lr.cooldown_counter} if self.reduce_lr else None),
            "checkpoint_best": self.best,
            "stopped": bool(self.model.stop_training),
            "settings": self.settings,
        }, self.output_dir / STATE_FILE)


def make_callbacks(model, output_dir, epoch_images, settings, resume_state=None, log=print):
    """Keras's own callbacks (learning-rate schedule, early stopping with the best weights back,
    CSV history) around the project's report and run state. Order matters: the report adds its
    timing to the logs that CSVLogger writes, and the state is saved last."""
    keras = import_keras()
    report = EpochReport(model, epoch_images, settings.get("time_limit_minutes"),
                         resume_state["elapsed_seconds"] if resume_state else 0.0, log)
    if settings.get("lr_schedule") == "cosine":
        initial = scaled_learning_rate(settings)
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch, rate: cosine_learning_rate(
            initial, epoch, settings["epochs"], settings.get("time_limit_minutes"),
            report.elapsed()))
        # The schedule sets the run's length: early stopping would end it in its high-rate
        # phase, before the decay that gives the best epochs, so here it only keeps the best.
        patience, reduce_lr = settings["epochs"], None
    else:
        schedule = reduce_lr = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=REDUCE_LR_PATIENCE, min_lr=MIN_LEARNING_RATE)
        patience = EARLY_STOP_PATIENCE
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                                   restore_best_weights=True)
    history = keras.callbacks.CSVLogger(str(Path(output_dir) / "history.csv"), append=resume_state is not None)
    state = RunState(model, output_dir, settings, report, early_stopping, reduce_lr, resume_state)
    return [keras.callbacks.LambdaCallback(on_epoch_begin=report.on_epoch_begin, on_epoch_end=report.on_epoch_end,
                                           on_train_batch_begin=report.on_train_batch_begin,
                                           on_train_batch_end=report.on_train_batch_end),
            schedule, early_stopping, history,
            keras.callbacks.LambdaCallback(on_train_begin=state.on_train_begin, on_epoch_end=state.on_epoch_end)]


def make_strategy(distribute):
    """The tf.distribute strategy for --distribute (None for "none"), with mixed precision on
    GPUs. mirrored: every visible GPU of this machine (without GPUs, its logical CPUs);
    multi-worker: the machines TF_CONFIG names, each with its GPUs."""
    if distribute == "none":
        return None
    import tensorflow as tf

    keras = import_keras()
    if distribute == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("--distribute multi-worker needs TF_CONFIG, the cluster and this worker's task "
                            "(see README, \"More than one GPU or machine\")")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    if tf.config.list_logical_devices("GPU"):
        # Half-precision arithmetic is fast on GPUs and slow on CPUs.
        keras.mixed_precision.set_global_policy("mixed_float16")
    return strategy


def is_chief(strategy):
    """Whether this process writes the run's files: always, but in a multi-worker run only
    the chief (or worker 0 when no chief is named); the others write to a scratch folder."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a job scheduler, `kill`) ends a job like Ctrl-C: what is saved stays saved."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, raise_interrupt)
        installed = True
    except ValueError:  # not the main thread: leave signals alone
        installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def train(data_dir=DEFAULT_DATA_DIR, output_dir=None, epochs=DEFAULT_EPOCHS, batch_size=DEFAULT_BATCH_SIZE,
          learning_rate=DEFAULT_LEARNING_RATE, seed=DEFAULT_SEED, augment=True, architecture="default",
          class_weighting="none", time_limit_minutes=None, lr_schedule="plateau", overwrite=False,
          max_batches=None, init_model=None, distribute="none", resume_state=None, log=print):
    """Train a model on `data_dir`/train, validate on validation/ (or test/), write all artifacts
    (see `finish_model`). Returns the run folder.

    `max_batches` caps each epoch (--dry-run). `init_model` starts from a saved model's weights
    (a second schedule, or fine-tuning); its classes must be the data's, in the same order.
    `distribute` trains under a tf.distribute strategy (see make_strategy). `resume_state` (read
    by `resume()`) continues an interrupted run in its own folder.
    """
    # Every check a user can fail comes before TensorFlow's slow start.
    train_dir, validation_dir = find_splits(data_dir)
    class_names = check_class_folders(train_dir, min_images=2)
    check_class_folders(validation_dir, class_names)
    if init_model is not None and not resume_state:
        start_metadata = read_metadata(init_model, described_as=described_model_path(init_model))
        if list(start_metadata["class_names"]) != list(class_names):
            raise UserError(f"{init_model}: its classes ({', '.join(start_metadata['class_names'])}) are not "
                            f"the data's ({', '.join(class_names)}); it cannot start this training")
        architecture = (start_metadata.get("training") or {}).get("architecture", architecture)
    if not resume_state and distribute != "multi-worker":  # there, only the chief's folder is checked
        output_dir = choose_output_dir(output_dir, overwrite)
    keras = import_keras()
    strategy = make_strategy(distribute)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    global_batch = batch_size * replicas
    if not is_chief(strategy):
        import tempfile

        log = lambda *args, **kwargs: None  # noqa: E731  the chief reports for the cluster
        output_dir = tempfile.mkdtemp(prefix="emotion-worker-")
    elif not resume_state and distribute == "multi-worker":
        output_dir = choose_output_dir(output_dir, overwrite)
    output_dir = Path(output_dir)
    log(f"training on {train_dir}, validating on {validation_dir}; writing to {output_dir}")
    x_train, y_train, _ = load_split(train_dir, class_names, log=log)
    x_val, y_val, _ = load_split(validation_dir, class_names, log=log)
    log(f"{len(x_train)} training and {len(x_val)} validation images, classes: {', '.join(class_names)}"
        + (f"; {replicas} replicas ({distribute}), global batch {global_batch}" if strategy else ""))

    keras.utils.set_random_seed(seed + (resume_state["epochs_done"] if resume_state else 0))
    model_path = output_dir / DEFAULT_MODEL_PATH.name
    settings = dict(data_dir=str(data_dir), epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, seed=seed, augment=augment, architecture=architecture,
                    class_weighting=class_weighting, time_limit_minutes=time_limit_minutes,
                    lr_schedule=lr_schedule, max_batches=max_batches,
                    init_model=None if init_model is None else str(init_model),
                    distribute=distribute, replicas=replicas)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model, metadata, first_epoch = make_training_model(
            output_dir, model_path, class_names, settings, resume_state, init_model, log)
    if not resume_state:
        # The class names go to disk before the first checkpoint, so every saved model has them.
        write_json_atomically(metadata, metadata_path(model_path))
        save_sample_grid(x_train, y_train, class_names, output_dir / "sample_images.png")

    sample_weight = balanced_sample_weights(y_train, len(class_names)) if class_weighting == "balanced" else None
    batches = augmented_batches(x_train, one_hot(y_train, len(class_names)), sample_weight, global_batch, seed,
                                augment, first_epoch)
    steps = math.ceil(len(x_train) / global_batch)
    steps = steps if max_batches is None else min(steps, max_batches)
    callbacks = make_callbacks(model, output_dir, steps * global_batch, settings, resume_state, log)
    try:
        with sigterm_as_interrupt():
            if resume_state and (resume_state.get("stopped") or first_epoch >= epochs):
                # Training had ended, but not its finishing steps: those run on the best epoch.
                log("training had ended; finishing its best model")
                model.set_weights(load_keras_model(model_path).get_weights())
            else:
                model.fit(batches, epochs=epochs, initial_epoch=first_epoch, steps_per_epoch=steps, shuffle=False,
                          validation_data=(x_val, one_hot(y_val, len(class_names))),
                          validation_batch_size=PREDICT_BATCH_SIZE, callbacks=callbacks, verbose=0)
            if strategy is not None:
                # The finishing steps and the saved model need no strategy, and float32 weights.
                keras.mixed_precision.set_global_policy("float32")
                trained = model
                model = (build_model(len(class_names), architecture, learning_rate) if architecture in ARCHITECTURES
                         else keras.models.clone_model(trained))
                model.set_weights(trained.get_weights())
            history = read_history(output_dir / "history.csv")
            minutes = history["elapsed_seconds"][-1] / 60 if history.get("elapsed_seconds") else 0.0
            metadata["training"].update(epochs_run=len(history.get("loss", [])), wall_minutes=round(minutes, 2))
            metadata = finish_model(model, metadata, model_path, x_train, y_train, x_val, y_val, log)
    except KeyboardInterrupt:
        state = read_training_state(output_dir, required=False)
        raise TrainingInterrupted(output_dir, state["epochs_done"] if state else 0) from None

    save_training_curves(history, output_dir / "training_curves.png")
    write_json_atomically(dict(read_training_state(output_dir), finished=True), output_dir / STATE_FILE)
    figures = metadata["validation"]
    log(f"done in {minutes:.1f} min: validation accuracy {figures['accuracy']:.4f}, macro-F1 "
        f"{figures['macro_f1']:.4f}, ECE {figures['ece_before_calibration']:.4f} -> "
        f"{figures['ece_after_calibration']:.4f}; model saved to {model_path}")
    log(describe_panel(figures["robustness"]))
    return output_dir


def scaled_learning_rate(settings):
    """The learning rate of a run's global batch: --learning-rate times the replicas (see
    DISTRIBUTIONS)."""
    return settings["learning_rate"] * settings.get("replicas", 1)


def make_training_model(output_dir, model_path, class_names, settings, resume_state, init_model, log=print):
    """The model to train, compiled, with its metadata and first epoch: a resumed run's
    checkpoint, a saved model's weights (--init-model), or a new network. Under a strategy this
    runs in its scope, so the weights are mirrored."""
    learning_rate = scaled_learning_rate(settings)
    if resume_state:
        log(f"resuming after epoch {resume_state['epochs_done']}")
        return load_checkpoint(output_dir / LAST_CHECKPOINT), read_metadata(model_path), resume_state["epochs_done"]
    # The JSON travels with the model: it names no folder of this machine.
    metadata = make_metadata(class_names, portable_record(dict(settings, command=portable_command(sys.argv))))
    if init_model is None:
        return build_model(len(class_names), settings["architecture"], learning_rate), metadata, 0
    model, start_metadata = load_model_bundle(init_model, described_as=described_model_path(init_model))
    compile_model(model, learning_rate)
    log(f"starting from the weights of {init_model}")
    # The chain of runs behind the model: how its starting weights were made.
    metadata["training"]["initialised_from"] = {
        "model": portable_path(init_model), "training": portable_record(start_metadata.get("training")),
        "validation_accuracy": (start_metadata.get("validation") or {}).get("accuracy")}
    return model, metadata, 0


def finish_model(model, metadata, model_path, x_train, y_train, x_val, y_val, log=print):
    """The steps every run ends with, on the best epoch's weights: batch-norm statistics
    recomputed on un-augmented faces, the class prior restored after balanced class weights,
    the confidence calibrated; then the model saved and described, evaluated on validation (and
    its re-framings), and exported to ONNX. Returns the final metadata."""
    training = metadata["training"]
    statistics = refresh_batch_norm(model, x_train, x_val, y_val, log)
    if statistics:
        training["batch_norm_statistics"] = statistics
    if training.get("class_weighting") == "balanced" and not training.get("class_prior"):
        training["class_prior"] = restore_class_prior(model, y_train, x_val, y_val, metadata["class_names"], log)
    save_model_atomically(model, model_path)
    metadata = describe_on_validation(model, metadata, x_val, y_val, Path(model_path).parent)
    write_json_atomically(metadata, metadata_path(model_path))
    try:
        export_onnx(model, model_path, x_val, log)
    except UserError as error:
        log(f"warning: {error}; prediction uses the .h5")
    return read_metadata(model_path)


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
    before, saved = accuracy_of(model, x_val, y_val), [layer.get_weights() for layer in norms]
    recompute_batch_norm_statistics(model, x_train)
    after = accuracy_of(model, x_val, y_val)
    kept = after >= before
    if not kept:
        for layer, weights in zip(norms, saved):
            layer.set_weights(weights)
    log(f"batch-norm statistics recomputed on {len(x_train)} un-augmented training images: validation "
        f"accuracy {before:.4f} -> {after:.4f}; {'kept' if kept else 'discarded (kept the training-time ones)'}")
    return {"recomputed_on_training_images": int(len(x_train)), "validation_accuracy_before": before,
            "validation_accuracy_after": after, "kept": kept}


def restore_class_prior(model, y_train, x_val, y_val, class_names, log=print):
    """Put a model trained with balanced class weights back on the training set's class
    frequencies; returns the record for the model's JSON.

    Balanced weights teach the posterior of a set in which every class is equally common:
    p_balanced(class | face), proportional to p(class | face) / prior(class). Multiplying by the
    prior gives back p(class | face) (Menon et al., "Long-tail learning via logit adjustment",
    2021): rare classes keep the features the weights taught, frequent classes get back the
    answers the weights took from them. log(prior) is added to the softmax layer's bias, so the
    saved model answers with it and prediction needs nothing new. Nothing is fitted.
    """
    prior = np.bincount(y_train, minlength=len(class_names)) / len(y_train)
    last = model.layers[-1]
    before = accuracy_of(model, x_val, y_val)
    last.bias.assign(np.asarray(last.bias) + np.log(prior).astype(np.float32))
    after = accuracy_of(model, x_val, y_val)
    log(f"class prior of {len(y_train)} training images restored: validation accuracy {before:.4f} -> {after:.4f}")
    return {"training_images": int(len(y_train)),
            "prior": {name: round(float(share), 6) for name, share in zip(class_names, prior)},
            "validation_accuracy_before": before, "validation_accuracy_after": after}


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
    if state.get("finished"):
        raise UserError(f"{output_dir}: that run already finished; nothing to resume")
    if not (Path(output_dir) / LAST_CHECKPOINT).is_file():
        raise UserError(f"{output_dir}: no {LAST_CHECKPOINT} to resume from")
    # The weights come from the run's own checkpoint; settings of older versions are left out.
    accepted = set(inspect.signature(train).parameters) - {"init_model", "output_dir", "resume_state", "log"}
    settings = {key: value for key, value in state["settings"].items() if key in accepted}
    return train(output_dir=output_dir, resume_state=state, log=log, **settings)


def read_history(path):
    """history.csv as {column: [values]}: the whole run's, across resumes."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")]
            for key in (rows[0] if rows else {})}


# =============================================================================================
# Evaluation and plots
# =============================================================================================
def apply_temperature(probabilities, temperature):
    """Re-scale softmax outputs by a calibration temperature: softmax(log p / T)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def predict_probabilities(model, faces, temperature=1.0, tta=False, batch_size=PREDICT_BATCH_SIZE):
    """Class probabilities for an array of faces [n, 48, 48, 1], in batches; `tta` averages each
    face with its horizontal mirror. `model` is a Keras model or an `OnnxModel`."""
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


def accuracy_of(model, faces, labels, tta=False):
    return round(float(np.mean(predict_probabilities(model, faces, tta=tta).argmax(axis=1) == labels)), 4)


def robustness_panel(model, faces, labels, tta=False):
    """Accuracy on the faces as they are and under each of shifts.ROBUSTNESS_SHIFTS, with the
    mean and worst drop (see shifts.robustness_summary). Training's figures and --evaluate both
    come from here."""
    shifted = {name: accuracy_of(model, shifts.apply_shift(faces, name), labels, tta)
               for name in shifts.ROBUSTNESS_SHIFTS}
    return shifts.robustness_summary(accuracy_of(model, faces, labels, tta), shifted)


def framing_of(panel):
    """The two re-framings of a robustness panel, as the JSON's older "framing_accuracy"."""
    return {name: panel["shifts"][name] for name in EVALUATION_FRAMINGS}


def describe_panel(panel):
    """The robustness panel as one line for the terminal."""
    return (f"robustness: mean drop {panel['mean_drop_points']:.1f} points, worst {panel['worst_drop_points']:.1f} "
            f"({panel['worst_shift']}); " + ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in panel["shifts"].items()))


def fit_temperature(labels, probabilities):
    """The temperature T for softmax(log p / T) with the lowest expected calibration error on
    these labels, from TEMPERATURE_GRID (the first of equal ones). Calibration error is what the
    temperature is for; the log-likelihood optimum can miss it."""
    labels = np.asarray(labels)
    low, high, count = TEMPERATURE_GRID
    temperatures = np.exp(np.linspace(np.log(low), np.log(high), count))
    errors = [expected_calibration_error(labels, apply_temperature(probabilities, float(t))) for t in temperatures]
    return float(temperatures[int(np.argmin(errors))])


def expected_calibration_error(labels, probabilities, bins=CALIBRATION_BINS):
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


def compute_metrics(class_names, labels, probabilities):
    """Accuracy, macro-F1 (over the classes present in `labels`), ECE and per-class figures."""
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


def describe_on_validation(model, metadata, x_val, y_val, output_dir):
    """Fit the confidence temperatures on validation (one for plain answers, one for answers
    averaged with the mirror image, which are less extreme) and record the model's validation
    figures in its metadata; write metrics, confusion matrix and prediction grid to `output_dir`.
    Returns the new metadata. The model itself is not changed."""
    class_names = metadata["class_names"]
    raw, raw_tta = predict_probabilities(model, x_val), predict_probabilities(model, x_val, tta=True)
    temperature, temperature_tta = fit_temperature(y_val, raw), fit_temperature(y_val, raw_tta)
    plain = compute_metrics(class_names, y_val, apply_temperature(raw, temperature))
    with_tta = compute_metrics(class_names, y_val, apply_temperature(raw_tta, temperature_tta))
    recall = lambda metrics: {name: figures["recall"] for name, figures in metrics["per_class"].items()}
    metadata = dict(metadata, temperature=round(temperature, 4), temperature_tta=round(temperature_tta, 4))
    metadata["validation"] = {
        "images": int(len(y_val)), "accuracy": plain["accuracy"], "macro_f1": plain["macro_f1"],
        "per_class_recall": recall(plain),
        "ece_before_calibration": round(expected_calibration_error(y_val, raw), 4),
        "ece_after_calibration": plain["expected_calibration_error"],
        "robustness": robustness_panel(model, x_val, y_val),
        "flip_tta": {"accuracy": with_tta["accuracy"], "macro_f1": with_tta["macro_f1"],
                     "per_class_recall": recall(with_tta),
                     "ece_before_calibration": round(expected_calibration_error(y_val, raw_tta), 4),
                     "ece_after_calibration": with_tta["expected_calibration_error"]},
    }
    metadata["validation"]["framing_accuracy"] = framing_of(metadata["validation"]["robustness"])
    write_evaluation(output_dir, class_names, y_val, apply_temperature(raw, temperature),
                     metadata["validation"]["robustness"])
    save_prediction_grid(x_val, y_val, apply_temperature(raw, temperature), class_names,
                         Path(output_dir) / "validation_predictions.png")
    return metadata


def write_evaluation(output_dir, class_names, labels, probabilities, panel=None):
    """metrics.json, classification_report.txt and confusion_matrix.png; returns the metrics.
    `panel`, a robustness_panel, goes into metrics.json as "robustness" (accuracy per shift),
    "robustness_mean_drop", "robustness_worst_drop" (points) and "framing_accuracy"."""
    from sklearn import metrics as skm

    output_dir = Path(output_dir)
    metrics = compute_metrics(class_names, labels, probabilities)
    if panel is not None:
        metrics.update(robustness=panel["shifts"], robustness_mean_drop=panel["mean_drop_points"],
                       robustness_worst_drop=panel["worst_drop_points"],
                       robustness_worst_shift=panel["worst_shift"], framing_accuracy=framing_of(panel))
    write_json_atomically(metrics, output_dir / "metrics.json")
    present = sorted(set(int(label) for label in labels))
    report = skm.classification_report(labels, probabilities.argmax(axis=1), labels=present,
                                       target_names=[class_names[i] for i in present], digits=4,
                                       zero_division=0)
    (output_dir / "classification_report.txt").write_text(report, encoding="utf-8")
    save_confusion_matrix(labels, probabilities.argmax(axis=1), class_names, output_dir / "confusion_matrix.png")
    return metrics


def evaluate(model_path, test_dir, output_dir, tta=False, overwrite=False, log=print):
    """Evaluate a saved model on a folder of class folders (any subset of the model's classes),
    as it is and re-framed (EVALUATION_FRAMINGS)."""
    found = list_class_folders(test_dir)
    metadata = read_metadata(model_path)
    class_names = metadata["class_names"]
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise UserError(f"{test_dir}: class folder(s) {', '.join(unknown)} unknown to the model "
                        f"(it knows {', '.join(class_names)})")
    output_dir = choose_output_dir(output_dir, overwrite, stem="evaluate")
    model, metadata = load_model_bundle(model_path)
    x, labels, _ = load_split(test_dir, found, log=log)
    labels = np.asarray([class_names.index(found[label]) for label in labels])
    temperature = model_temperature(metadata, tta)
    probabilities = predict_probabilities(model, x, temperature, tta=tta)
    panel = robustness_panel(model, x, labels, tta)
    metrics = write_evaluation(output_dir, class_names, labels, probabilities, panel)
    save_prediction_grid(x, labels, probabilities, class_names, Path(output_dir) / "test_predictions.png")
    log(f"{model_path} on {test_dir} ({len(labels)} images{', flip TTA' if tta else ''}): "
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"ECE {metrics['expected_calibration_error']:.4f}; details in {output_dir}")
    log(describe_panel(panel))
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
    """Faces with predicted label and confidence; wrong ones in red with the truth."""
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
    figure.suptitle("Predictions (red: wrong)")
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


# =============================================================================================
# Saving and loading
# =============================================================================================
def temporary_path(path):
    """A sibling temporary name with the same suffix (Keras picks the format from the suffix)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def replace_atomically(path, write):
    """Call write(temporary sibling), then rename it over `path`: a crash, a full disk or a
    refused write never leaves a broken file where a good one was. Errors a user can fix
    (permissions, no space) become one line naming the file."""
    path = Path(path)
    partial = temporary_path(path)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as error:
        # Any exception, Ctrl-C and SIGTERM (raised as KeyboardInterrupt) included: a
        # half-written file must not outlive the write that made it.
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise UserError(f"{path}: cannot write ({error.strerror or error}); nothing there was changed") from None
        raise


def save_model_atomically(model, path):
    """Save a Keras model atomically. An .h5 file is for prediction and leaves the optimizer out;
    a .keras checkpoint keeps it for --resume."""
    def write(partial):
        import logging

        # Keras logs "HDF5 is considered legacy" on every .h5 save; .h5 stays because it is the
        # format users' own Keras and TensorFlow scripts load.
        logger = logging.getLogger("absl")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            if partial.suffix == ".h5":
                model.save(str(partial), include_optimizer=False)
            else:
                model.save(str(partial))
        finally:
            logger.setLevel(level)

    replace_atomically(path, write)


def write_json_atomically(data, path):
    def write(partial):
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")

    replace_atomically(path, write)


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
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{output_dir}: cannot create ({error.strerror or error})") from None
    if not os.access(output_dir, os.W_OK):
        raise UserError(f"{output_dir}: not writable")
    return output_dir


def portable_path(path):
    """A path for a model's JSON that says nothing about this machine: relative to the project
    when inside it, else as given when relative, else its last two parts."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(Path(*path.parts[-2:]))


def portable_record(value):
    """A JSON record (an older run's, say) with every absolute path in it made portable."""
    if isinstance(value, dict):
        return {key: portable_record(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable_record(item) for item in value]
    if isinstance(value, str) and "/" in value:
        return " ".join(portable_path(part) if os.path.isabs(part) else part for part in value.split(" "))
    return value


def portable_command(argv):
    """The command line, with absolute paths made portable (see portable_path)."""
    return " ".join([Path(argv[0]).name] + [portable_path(arg) if os.path.isabs(arg) else arg for arg in argv[1:]])


def make_metadata(class_names, settings):
    import tensorflow as tf

    return {"class_names": list(class_names), "input_shape": list(INPUT_SHAPE), "temperature": 1.0,
            "temperature_tta": 1.0,
            "training": dict(settings, tensorflow_version=tf.__version__,
                             keras_version=import_keras().__version__, cpu_count=os.cpu_count())}


def metadata_path(model_path):
    """The JSON beside a model: models/emotion_model.h5 -> models/emotion_model.json."""
    return Path(model_path).with_suffix(".json")


def described_model_path(model_path):
    """A run's last checkpoint (its last epoch rather than its best) is described by the JSON of
    the run's model beside it."""
    model_path = Path(model_path)
    return model_path.with_name(DEFAULT_MODEL_PATH.name) if model_path.name == LAST_CHECKPOINT else model_path


def read_metadata(model_path, described_as=None):
    """A model's JSON, checked: class names, and positive finite temperatures where given."""
    path = metadata_path(described_as or model_path)
    if not Path(model_path).is_file():
        raise UserError(f"{model_path}: no such model file")
    if not path.is_file():
        raise UserError(f"{model_path}: no class-name file {path.name} beside it")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        class_names = metadata["class_names"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a valid model description ({type(error).__name__}: {error})") from None
    if not isinstance(class_names, list) or not class_names or not all(isinstance(c, str) for c in class_names):
        raise UserError(f"{path}: class_names must be a non-empty list of names")
    if len(set(class_names)) != len(class_names):
        raise UserError(f"{path}: class_names holds a name twice")
    for key in ("temperature", "temperature_tta"):
        value = metadata.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"{path}: {key} must be a positive number, not {value!r}")
    return metadata


def model_temperature(metadata, tta=False):
    """The calibration temperature for plain or mirror-averaged answers (older models have
    only the plain one)."""
    return metadata.get("temperature_tta", metadata.get("temperature", 1.0)) if tta else metadata.get("temperature", 1.0)


def load_keras_model(path):
    """A saved Keras model, safe mode on: a model file cannot run Python code (Lambda layers are
    refused). Any failure is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty model file")
    keras = import_keras()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "not loadable"
        message = first_line(error)
        if "Lambda" in message or "unsafe" in message.lower():
            raise UserError(f"{path}: refused: it holds a Lambda layer with Python code, which "
                            "could do anything on this machine; Keras's safe mode does not run it") from None
        raise UserError(f"{path}: not a loadable Keras model ({message})") from None


def load_checkpoint(path):
    """A training checkpoint with its optimizer state (safe mode: no code runs from the file)."""
    keras = import_keras()
    try:
        return keras.models.load_model(str(path), safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "not loadable"
        raise UserError(f"{path}: cannot resume from it ({first_line(error)})") from None


def check_model_fits(model, metadata, model_path, described_as=None):
    input_shape = tuple(model.input_shape[1:])
    if input_shape != INPUT_SHAPE:
        raise UserError(f"{model_path}: expects input {input_shape}, not 48x48 grayscale {INPUT_SHAPE}")
    outputs = model.output_shape[-1]
    if outputs != len(metadata["class_names"]):
        raise UserError(f"{model_path}: has {outputs} outputs but {metadata_path(described_as or model_path).name} "
                        f"names {len(metadata['class_names'])} classes")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_path(model_path):
    return Path(model_path).with_suffix(".onnx")


def matching_onnx(model_path, metadata):
    """The ONNX export beside a model if its JSON records it as made from this very .h5 file
    (both files' SHA-256), else None with the reason."""
    path, record = onnx_path(model_path), metadata.get("onnx")
    if not path.is_file():
        return None, f"no {path.name} beside it"
    if not isinstance(record, dict):
        return None, f"{metadata_path(model_path).name} does not record {path.name}"
    if record.get("h5_sha256") != file_sha256(model_path):
        return None, f"{path.name} was made from another {Path(model_path).name}"
    if record.get("onnx_sha256") != file_sha256(path):
        return None, f"{path.name} changed after it was exported"
    return path, None


class OnnxModel:
    """An ONNX Runtime session that answers like a Keras model: model(batch) -> probabilities."""

    def __init__(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--runtime onnx needs onnxruntime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: a user sees the project's one line
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own types for a bad file
            raise UserError(f"{path}: not a loadable ONNX model ({first_line(error)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != list(INPUT_SHAPE):
            raise UserError(f"{path}: expects input {inputs[0].shape if inputs else None}, "
                            f"not 48x48 grayscale {INPUT_SHAPE}")
        self.input_name = inputs[0].name
        self.output_shape = tuple(outputs[0].shape)
        self.input_shape = tuple(inputs[0].shape)

    def __call__(self, batch, training=False):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def load_model_bundle(model_path=DEFAULT_MODEL_PATH, described_as=None, runtime="keras"):
    """Load a saved model and its JSON; checks that they fit together and fit 48x48x1 faces.

    runtime: "keras" loads the .h5 with TensorFlow; "onnx" the matching ONNX export beside it
    (an error if there is none); "auto" the ONNX export when it matches, else Keras, with the
    same answers either way. `described_as`: read the JSON of this model path instead (a run's
    last checkpoint uses its run's).
    """
    model_path = Path(model_path)
    metadata = read_metadata(model_path, described_as)
    if runtime in ("auto", "onnx"):
        path, problem = matching_onnx(model_path, metadata)
        if path is not None:
            model = OnnxModel(path)
            check_model_fits(model, metadata, path, model_path)
            return model, metadata
        if runtime == "onnx":
            raise UserError(f"{model_path}: --runtime onnx: {problem} (export it with "
                            f"`python emotion_recognition.py --export-onnx {model_path}`)")
        if onnx_path(model_path).is_file():
            print(f"warning: {model_path}: {problem}; using Keras", file=sys.stderr)
    model = load_keras_model(model_path)
    check_model_fits(model, metadata, model_path, described_as)
    return model, metadata


def export_onnx(model, model_path, faces, log=print):
    """Write the ONNX export beside a saved .h5 model and record it in the model's JSON, once it
    gives the same class for every one of `faces` and probabilities within ONNX_TOLERANCE of
    Keras. A failed export or check leaves the .h5 and its JSON as they were and raises a
    UserError saying why."""
    model_path = Path(model_path)
    path = onnx_path(model_path)
    partial = temporary_path(path)
    faces = np.asarray(faces[:PREDICT_BATCH_SIZE], dtype=np.float32)
    try:
        import tensorflow as tf

        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(str(partial), format="onnx", verbose=False,
                         input_signature=[tf.TensorSpec((None,) + INPUT_SHAPE, tf.float32)])
        expected, got = predict_probabilities(model, faces), predict_probabilities(OnnxModel(partial), faces)
        difference = float(np.max(np.abs(expected - got))) if len(faces) else 0.0
        if not (np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)) and difference <= ONNX_TOLERANCE):
            raise UserError(f"it differs from Keras by up to {difference:.2g} on {len(faces)} faces")
        os.replace(partial, path)
    except BaseException as error:  # a missing package, an unsupported layer, a failed check, Ctrl-C
        partial.unlink(missing_ok=True)
        if not isinstance(error, Exception):
            raise
        raise UserError(f"{model_path}: no ONNX export ({first_line(error)})") from None
    metadata = read_metadata(model_path)
    metadata["onnx"] = {"file": path.name, "onnx_sha256": file_sha256(path), "h5_sha256": file_sha256(model_path),
                        "checked_on_faces": int(len(faces)), "max_probability_difference": difference}
    write_json_atomically(metadata, metadata_path(model_path))
    log(f"ONNX export {path} checked against Keras on {len(faces)} faces (largest difference {difference:.1e})")


def export_onnx_beside(model_path, overwrite=False, log=print):
    """--export-onnx: the ONNX export of a model trained before exports existed, checked on the
    real faces of the project's sample (dataset/validation)."""
    model_path = Path(model_path)
    if onnx_path(model_path).exists() and not overwrite:
        raise UserError(f"{onnx_path(model_path)}: already exists; pass --overwrite to replace it")
    model, metadata = load_model_bundle(model_path)
    sample = DEFAULT_DATA_DIR / "validation"
    names = [name for name in metadata["class_names"] if (sample / name).is_dir()]
    faces = load_split(sample, names, log=log)[0] if names else np.random.default_rng(0).uniform(
        0, 255, (64,) + INPUT_SHAPE).astype(np.float32)
    export_onnx(model, model_path, faces, log)



# =============================================================================================
# Prediction from Python
# =============================================================================================
@functools.lru_cache(maxsize=4)
def _load_model_cached(model_path, runtime, file_stamps):
    return load_model_bundle(model_path, runtime=runtime)


def file_stamp(path):
    """What tells a changed file from the one cached: modification time and size."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def detect_emotion(image_path, model_path=DEFAULT_MODEL_PATH, runtime="auto"):
    """The emotion of the face in an image file (taken whole): (emotion, confidence in percent).
    The model is loaded once and reloaded when its .h5, .json or .onnx file changes."""
    model_path = Path(model_path).resolve()
    stamps = tuple(file_stamp(path) for path in (model_path, metadata_path(model_path), onnx_path(model_path)))
    model, metadata = _load_model_cached(str(model_path), runtime, stamps)
    probabilities = predict_probabilities(model, load_face(image_path)[np.newaxis], model_temperature(metadata))[0]
    best = int(probabilities.argmax())
    return metadata["class_names"][best], round(float(probabilities[best]) * 100, 1)


# =============================================================================================
# Command line
# =============================================================================================
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
    parser.add_argument("--no-augment", action="store_true", help="train without rotation, shift, flip, framing scale and the light, blur, "
                             "resolution, noise and JPEG shifts")
    parser.add_argument("--architecture", choices=tuple(ARCHITECTURES), default="default",
                        help="default: Conv 16 / 32-32 / 96-96 / 192-192, sized for 45 minutes on 2 CPU cores; "
                             "wide: Conv 32-64-128-256, for long runs (the shipped model)")
    parser.add_argument("--class-weight", choices=("none", "balanced"), default="none",
                        help="balanced: weight each class's loss by 1/frequency (helps rare classes such as "
                             "disgust); the class frequencies are put back into the model at the end")
    parser.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau",
                        help="plateau: halve the rate after 4 epochs without progress; cosine: decay it "
                             "smoothly over --epochs or --time-limit, whichever ends first")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop after the epoch that passes this many minutes of training")
    parser.add_argument("--distribute", choices=DISTRIBUTIONS, default="none",
                        help="mirrored: train on every GPU of this machine; multi-worker: on the machines "
                             "TF_CONFIG names. --batch-size and --learning-rate are per replica (GPU)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into an --output-dir that holds files")
    parser.add_argument("--dry-run", action="store_true", help="one epoch of two batches: checks that everything runs")
    parser.add_argument("--init-model", type=Path, metavar="MODEL",
                        help="start from this saved model's weights instead of random ones (fine-tuning); a "
                             "run's last_checkpoint.keras gives its last epoch rather than its best")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted training run from its last finished epoch")
    parser.add_argument("--evaluate", type=Path, metavar="MODEL", help="evaluate this saved model on --test-dir instead of training")
    parser.add_argument("--test-dir", type=Path, help="with --evaluate: a folder of class folders")
    parser.add_argument("--tta", action="store_true", help="with --evaluate: average each face with its mirror image")
    parser.add_argument("--export-onnx", type=Path, metavar="MODEL",
                        help="write MODEL's ONNX export beside it (training does this itself), then stop")
    parser.add_argument("--import-csv", type=Path, metavar="CSV",
                        help="convert Kaggle's fer2013.csv into class folders under --data-dir, then stop")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        parser.error("--learning-rate must be a positive number")
    if args.time_limit is not None and not (args.time_limit > 0 and math.isfinite(args.time_limit)):
        parser.error("--time-limit must be a positive number of minutes")
    if args.evaluate and not args.test_dir:
        parser.error("--evaluate needs --test-dir")
    if args.test_dir and not args.evaluate:
        parser.error("--test-dir goes with --evaluate MODEL")
    modes = [flag for flag, value in (("--resume", args.resume), ("--evaluate", args.evaluate),
                                      ("--export-onnx", args.export_onnx), ("--import-csv", args.import_csv))
             if value]
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
        with sigterm_as_interrupt():
            if args.import_csv:
                import_fer2013_csv(args.import_csv, args.data_dir, overwrite=args.overwrite)
            elif args.resume:
                resume(args.resume)
            elif args.evaluate:
                evaluate(args.evaluate, args.test_dir, args.output_dir, tta=args.tta, overwrite=args.overwrite)
            elif args.export_onnx:
                export_onnx_beside(args.export_onnx, overwrite=args.overwrite)
            else:
                train(data_dir=args.data_dir, output_dir=args.output_dir, epochs=1 if args.dry_run else args.epochs,
                      batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                      augment=not args.no_augment, architecture=args.architecture, class_weighting=args.class_weight,
                      time_limit_minutes=args.time_limit, lr_schedule=args.lr_schedule, overwrite=args.overwrite,
                      max_batches=2 if args.dry_run else None, init_model=args.init_model,
                      distribute=args.distribute)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingInterrupted as stop:
        print(f"interrupted after {stop.epochs_done} finished epoch(s); the best model so far is in "
              f"{stop.output_dir}; continue with: python {Path(sys.argv[0]).name} --resume {stop.output_dir}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
