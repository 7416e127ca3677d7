"""Facial emotion recognition: train a Keras CNN on 48x48 grayscale faces, evaluate it.

    python emotion_recognition.py                                  # quick start on dataset/
    python emotion_recognition.py --data-dir ../shared/fer2013 --output-dir runs/fer2013 \\
        --time-limit 45 --lr-schedule cosine
    python emotion_recognition.py --resume runs/fer2013
    python emotion_recognition.py --evaluate models/emotion_model.h5 \\
        --test-dir dataset/validation --output-dir runs/eval
    python emotion_recognition.py --average runs/a/emotion_model.h5 runs/b/emotion_model.h5 \
        --data-dir ../shared/fer2013 --output-dir runs/average
    python emotion_recognition.py --import-csv fer2013.csv --data-dir fer2013_folders

The file reads in the order data flows: settings, data, model, training, finishing, evaluation,
command line. What prediction shares with training (reading images, the preprocessing, the
saved model, the robustness shifts) lives in the `facial_emotion` package, which this module and
`predict.py` both import; `predict.py` never imports this module, and never TensorFlow.
"""

import sys

if __name__ == "__main__":
    # --help, argument errors and a missing TensorFlow are answered before TensorFlow loads (5-20 s):
    # training_cli parses with no TensorFlow, then imports this module and calls run().
    from facial_emotion.training_cli import main as light_main

    sys.exit(light_main())

import contextlib
import csv
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from facial_emotion import evaluation, finishing, plots, shifts
# `from emotion_recognition import detect_emotion` is how the earliest scripts of this kind call a model.
from facial_emotion.api import detect_emotion  # noqa: F401
from facial_emotion.console import StopSignals, quiet_python_warnings
from facial_emotion.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, one_line
from facial_emotion.fer2013_csv import import_fer2013_csv
from facial_emotion.files import (RunLock, claim_run_folder, portable_command,
                                  portable_record, read_json, replace_atomically, walk_files, write_json_atomically)
from facial_emotion.images import IMAGE_EXTENSIONS, INPUT_SHAPE, is_image_file, load_face
from facial_emotion.keras_runtime import keras, load_checkpoint, load_keras_model, save_model_atomically, tf
from facial_emotion.training_cli import (ARCHITECTURES, DEFAULT_DATA_DIR, DISTRIBUTIONS, MAX_SEED,  # noqa: F401
                                         TrainConfig, check_training_state, config_from_args, cpu_has_bfloat16)
from facial_emotion.saved_model import (DEFAULT_MODEL_PATH, PREDICT_BATCH_SIZE, load_model,
                                        metadata_path, model_temperature, predict_probabilities, read_metadata)

# =============================================================================================
# Settings
# =============================================================================================
# Training runs go to runs/train, runs/train2, ... so a second run never clobbers the first.
DEFAULT_RUNS_DIR = Path("runs")
# More class folders than this is almost surely a wrong --data-dir (a folder of photos, say).
MAX_CLASSES = 1000
# Under the plateau schedule: the rate is halved after 4 flat epochs, training stops after 10
# (with the best weights back). A cosine schedule sets the run's length itself.
REDUCE_LR_PATIENCE = 4
EARLY_STOP_PATIENCE = 10
# The floor of both learning-rate schedules: below it Adam's steps no longer move these weights.
MIN_LEARNING_RATE = 1e-5
# Batch normalisation's moving averages follow the last ~10 batches, not Keras's ~100: on the
# 22-batch epochs of the quick start, 0.99 left validation at chance for 15+ epochs.
BATCH_NORM_MOMENTUM = 0.9
# L2 weight decay per block: only the deep blocks, which hold most of the weights.
BLOCK_L2 = (0.0, 0.0, 1e-4, 1e-4)
# Units of the dense layer before the output.
DENSE_UNITS = 256
# Augmentation: FER-2013 faces are roughly but not exactly aligned, so small rotations and
# shifts of a few pixels mimic real detector crops; faces are left-right symmetric.
AUGMENTATION = dict(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
                    horizontal_flip=True, fill_mode="nearest")
# Framing: each training face is also scaled by a random factor (log-uniform) from a crop of 75%
# of the side to 130% padding: detectors and other data sets frame faces unlike FER-2013. Then
# come the light, resolution, blur, noise and JPEG shifts of shifts.RANDOM_SHIFTS.
FRAMING_SCALE = (0.75, 1.3)
# A run folder's resumable state: the callbacks' counters, and the model with its optimizer.
STATE_FILE = "training_state.json"
LAST_CHECKPOINT = "last_checkpoint.keras"


# =============================================================================================
# Data: class folders
# =============================================================================================
def find_splits(data_dir):
    """(train_dir, validation_dir) of a data folder; validation may be named test (Kaggle)."""
    data_dir = Path(data_dir)
    if not os.path.isdir(data_dir):
        raise UserError(f"{data_dir}: no such data folder" if not os.path.exists(data_dir) else f"{data_dir}: not a folder")
    train_dir = data_dir / "train"
    if not os.path.isdir(train_dir):
        raise UserError(f"{data_dir}: has no train/ folder (expected train/ and validation/ or test/)")
    for name in ("validation", "test"):
        if os.path.isdir(data_dir / name):
            return train_dir, data_dir / name
    raise UserError(f"{data_dir}: has no validation/ or test/ folder beside train/")


def list_class_folders(split_dir):
    """Sorted class folder names of a split folder; errors for a missing or empty folder."""
    split_dir = Path(split_dir)
    if not os.path.isdir(split_dir):
        raise UserError(f"{split_dir}: no such folder")
    classes = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UserError(f"{split_dir}: holds no class folders (expected one folder per emotion)")
    if len(classes) > MAX_CLASSES:
        raise UserError(f"{split_dir}: holds {len(classes)} folders, more than {MAX_CLASSES} "
                        "classes; is this the right --data-dir?")
    return classes


def list_images(class_dir, skipped=None):
    """The image files of one class folder and its subfolders, those training counts and reads:
    links out of the folder and non-regular files are left out, appended to `skipped`."""
    return walk_files(class_dir, is_image_file, confine=True, skipped=skipped)


def check_class_folders(split_dir, class_names=None, min_images=1):
    """Validate a split folder's classes and their image counts; returns its class names. With
    `class_names`, the split must hold exactly those classes."""
    found = list_class_folders(split_dir)
    if class_names is not None and found != list(class_names):
        missing, extra = sorted(set(class_names) - set(found)), sorted(set(found) - set(class_names))
        details = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
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

    Labels follow `class_names` (sorted folder names). A file that cannot be decoded, or that is
    not the class folder's own (see list_images), is skipped with a warning naming it instead of
    crashing the run mid-epoch. Decoding once, rather than every epoch, keeps the CPU for the model.
    """
    images, labels, files, skipped = [], [], [], []
    for label, name in enumerate(class_names):
        for path in list_images(Path(split_dir) / name, skipped):
            try:
                images.append(load_face(path))
            except UserError as error:
                skipped.append((path, str(error).removeprefix(f"{path}: ")))
                continue
            labels.append(label)
            files.append(str(path))
    for path, reason in skipped:
        log(f"warning: skipping {one_line(path)}: {one_line(reason)}", file=sys.stderr)
    if not images:
        raise UserError(f"{split_dir}: no readable images")
    present = set(labels)
    for index, name in enumerate(class_names):
        if index not in present:
            raise UserError(f"{Path(split_dir) / name}: holds no readable images")
    if skipped:
        log(f"warning: {len(skipped)} file(s) of {split_dir} skipped", file=sys.stderr)
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


def split_selection(x, y, fraction, seed):
    """A stratified `fraction` of the training faces held out as the selection set: ((x, y) kept
    for training, (x, y) held out). Each class keeps at least one face on each side."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        held[members[:min(max(1, round(fraction * len(members))), len(members) - 1)]] = True
    return (x[~held], y[~held]), (x[held], y[held])


# =============================================================================================
# Model
# =============================================================================================
def build_model(num_classes, architecture="default", learning_rate=TrainConfig.learning_rate, optimizer="adam"):
    """A compiled Keras Sequential CNN: 48x48x1 raw pixels in, class probabilities out.

    VGG-style blocks of 3x3 convolutions, each with batch norm and ReLU, then max pooling and
    dropout; a small dense head. The model scales pixels itself (Rescaling), so a saved model
    carries all its preprocessing.
    """
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown architecture {architecture!r} (choose from {', '.join(ARCHITECTURES)})")
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
    compile_model(model, learning_rate, optimizer)
    return model


def make_optimizer(name, learning_rate):
    """adam, or sgd: Nesterov momentum 0.9, weight decay 1e-4 (best in Khaireddin & Chen, 2021)."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def compile_model(model, learning_rate, optimizer="adam"):
    """The named optimizer (or a resumed run's own, state and all) on integer labels."""
    model.compile(optimizer=make_optimizer(optimizer, learning_rate) if isinstance(optimizer, str) else optimizer,
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)  # XLA on CPU ran convolutions several times slower than oneDNN here


# =============================================================================================
# Training
# =============================================================================================
def make_augmenter(augment=True, degrade=True):
    """Keras's `ImageDataGenerator` with this project's augmentation: rotation, shift and flip,
    then, as its preprocessing function, a random framing scale (FRAMING_SCALE) and (`degrade`)
    the random light, resolution, blur, noise and JPEG shifts (shifts.degrade_randomly)."""
    generator = tf.keras.preprocessing.image.ImageDataGenerator(**(AUGMENTATION if augment else {}))
    if augment:
        low, high = np.log(FRAMING_SCALE[0]), np.log(FRAMING_SCALE[1])

        def random_framing_and_shifts(face):
            scale = float(np.exp(np.random.uniform(low, high)))
            framed = generator.apply_transform(face, {"zx": scale, "zy": scale})
            return shifts.degrade_randomly(framed) if degrade else framed

        generator.preprocessing_function = random_framing_and_shifts
    return generator


def augmented_batches(x, y, sample_weight, batch_size, seed, augment=True, first_epoch=0, consistency=False):
    """Endless augmented training batches, epoch after epoch, identical for the same seed.

    `ImageDataGenerator.flow` draws its shuffles and random transforms from NumPy's global
    generator; seeding it from (seed, epoch) makes an epoch's batches depend on nothing else, so a
    resumed run sees the batches an uninterrupted one would. Keras runs this generator in a
    background thread while the model trains on the last batch. With `consistency` each batch is
    three: the faces framed but not degraded, then two degraded copies of them (labels and
    weights repeated), for the consistency term (attach_consistency).
    """
    flow = make_augmenter(augment, degrade=not consistency).flow(x, y, batch_size=batch_size, shuffle=True,
                                                                 seed=seed, sample_weight=sample_weight)
    epoch = first_epoch
    while True:
        np.random.seed((seed + 7919 * epoch) % 2**32)  # a prime stride: no two (seed, epoch) collide soon
        flow.on_epoch_end()  # the iterator's own reshuffle of the image order
        for index in range(len(flow)):
            flow.total_batches_seen = epoch * len(flow) + index
            batch = flow[index]
            if consistency:
                faces = batch[0]
                copies = [np.stack([shifts.degrade_randomly(face) for face in faces]) for _ in range(2)]
                batch = (np.concatenate([faces, *copies]), *(np.tile(part, 3) for part in batch[1:]))
            yield batch
        epoch += 1


def attach_consistency(model, weight):
    """Make `model`'s training loss AugMix's (Hendrycks et al., 2020): the cross-entropy of the
    clean third of each batch plus `weight` times the Jensen-Shannon divergence between the
    answers to the clean face and its two shifted copies. Only this training instance's
    compute_loss changes; validation's loss and the saved model are untouched."""
    plain = model.compute_loss

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training:
            return plain(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        third = tf.shape(y_pred)[0] // 3
        answers = [tf.clip_by_value(tf.cast(y_pred[i * third:(i + 1) * third], "float32"), 1e-7, 1.0) for i in range(3)]
        mixture = tf.math.log(tf.add_n(answers) / 3.0)
        divergence = tf.add_n([tf.reduce_sum(p * (tf.math.log(p) - mixture), axis=-1) for p in answers]) / 3.0
        weights = None if sample_weight is None else sample_weight[:third]
        clean = plain(x=x, y=y[:third], y_pred=y_pred[:third], sample_weight=weights, training=training)
        return clean + weight * tf.reduce_mean(divergence)

    object.__setattr__(model, "compute_loss", compute_loss)  # a plain attribute, not a tracked layer
    return model


def cosine_learning_rate(initial, epoch, epochs, time_limit_minutes=None, elapsed_seconds=0.0):
    """Cosine decay from `initial` to MIN_LEARNING_RATE over the run's budget: whichever of
    epochs or the time limit runs out first, so a time-limited CPU run still ends at a low rate."""
    progress = epoch / epochs
    if time_limit_minutes:
        progress = max(progress, elapsed_seconds / (time_limit_minutes * 60))
    return MIN_LEARNING_RATE + (initial - MIN_LEARNING_RATE) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class EpochReport(keras.callbacks.Callback):
    """One line an epoch (time, images/s, the share of time spent waiting for input, accuracy),
    timing columns for history.csv, the --time-limit stop, and the safe points at which Ctrl-C,
    SIGTERM or a diverged loss end training: between batches, never inside a save."""

    def __init__(self, epoch_images, time_limit_minutes=None, elapsed_before=0.0, stop=None, log=print):
        super().__init__()
        self.epoch_images, self.stop, self.log = epoch_images, stop, log
        self.time_limit_s = time_limit_minutes * 60 if time_limit_minutes else None
        self.started = time.perf_counter() - elapsed_before

    def elapsed(self):
        return time.perf_counter() - self.started

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_started, self.batch_ended, self.waiting = epoch, time.perf_counter(), None, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        # Between one batch's end and the next one's start Keras fetches the next batch: that
        # gap is the time the model waits for the input pipeline.
        if self.batch_ended is not None:
            self.waiting += time.perf_counter() - self.batch_ended

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ended = time.perf_counter()
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise UserError(f"training diverged: the loss became {float(loss)} in epoch {self.epoch + 1}; "
                            "nothing of this epoch was saved (try a lower --learning-rate)")
        if self.stop is not None:
            self.stop.check()

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


class RunState(keras.callbacks.Callback):
    """What --resume needs, saved after every epoch, after every other callback: the model with
    its optimizer (last_checkpoint.keras), the best model so far (emotion_model.h5, replaced when
    validation accuracy improves) and the callbacks' counters (training_state.json). Keras's
    BackupAndRestore keeps only model, optimizer and epoch, not early stopping's and the plateau
    schedule's counters, the clock of --time-limit or the best epoch."""

    def __init__(self, output_dir, record, report, early_stopping, reduce_lr=None, resume_state=None):
        super().__init__()
        self.output_dir, self.record, self.report = Path(output_dir), record, report
        self.early_stopping, self.reduce_lr, self.resume_state = early_stopping, reduce_lr, resume_state
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
        if self.reduce_lr is not None and state.get("reduce_lr"):
            for key, value in state["reduce_lr"].items():
                setattr(self.reduce_lr, key, value)

    def on_epoch_end(self, epoch, logs):
        if not all(np.all(np.isfinite(weights)) for weights in self.model.get_weights()):
            raise UserError(f"training diverged: the weights became NaN or infinite in epoch {epoch + 1}; "
                            "nothing of this epoch was saved (try a lower --learning-rate)")
        accuracy = logs.get("val_accuracy")
        if accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = float(accuracy)
            save_model_atomically(self.model, self.model_path)
        save_model_atomically(self.model, self.output_dir / LAST_CHECKPOINT)
        stopping, reduce_lr = self.early_stopping, self.reduce_lr
        write_json_atomically({
            "epochs_done": epoch + 1, "elapsed_seconds": round(self.report.elapsed(), 1),
            "early_stopping": {"wait": stopping.wait, "best": json_number(stopping.best),
                               "best_epoch": stopping.best_epoch},
            "reduce_lr": ({"wait": reduce_lr.wait, "best": json_number(reduce_lr.best),
                           "cooldown_counter": reduce_lr.cooldown_counter} if reduce_lr else None),
            "checkpoint_best": self.best, "stopped": bool(self.model.stop_training), "settings": self.record,
        }, self.output_dir / STATE_FILE)


def json_number(value):
    """A NumPy or tensor scalar as a JSON number (None stays None)."""
    return None if value is None else float(value)


def make_callbacks(config, output_dir, epoch_images, replicas=1, resume_state=None, stop=None, log=print):
    """Keras's own callbacks (learning-rate schedule, early stopping with the best weights back,
    CSV history) around the project's report and run state. Order matters: the report adds its
    timing to the logs that CSVLogger writes, and the state is saved last."""
    report = EpochReport(epoch_images, config.time_limit_minutes,
                         resume_state["elapsed_seconds"] if resume_state else 0.0, stop, log)
    if config.lr_schedule == "cosine":
        initial = config.learning_rate * replicas
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch, rate: cosine_learning_rate(
            initial, epoch, config.epochs, config.time_limit_minutes, report.elapsed()))
        # The schedule sets the run's length: early stopping would end it in its high-rate
        # phase, before the decay that gives the best epochs, so here it only keeps the best.
        patience, reduce_lr = config.epochs, None
    else:
        schedule = reduce_lr = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=REDUCE_LR_PATIENCE, min_lr=MIN_LEARNING_RATE)
        patience = EARLY_STOP_PATIENCE
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                                   restore_best_weights=False)  # RunState keeps the best
    history = keras.callbacks.CSVLogger(str(Path(output_dir) / "history.csv"), append=resume_state is not None)
    record = dict(dataclasses.asdict(config), replicas=replicas)
    state = RunState(output_dir, record, report, early_stopping, reduce_lr, resume_state)
    return [report, schedule, early_stopping, history, state]


def distribution(distribute):
    """--distribute, all of it: (strategy or None, replicas, whether this process writes the run).

    mirrored: every visible GPU of this machine (without GPUs, its logical CPUs); multi-worker:
    the machines TF_CONFIG names. On GPUs the network computes in mixed_float16. In a
    multi-worker run only the chief (or worker 0 when no chief is named) writes the run folder.
    """
    if distribute == "none":
        return None, 1, True
    if distribute == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("--distribute multi-worker needs TF_CONFIG, the cluster and this worker's task "
                            "(see README, \"Training\")")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    if tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")  # fast on GPUs, slow on CPUs
    resolver = getattr(strategy, "cluster_resolver", None)
    chief = (resolver is None or not resolver.task_type or resolver.task_type == "chief"
             or (resolver.task_type == "worker" and resolver.task_id == 0
                 and "chief" not in resolver.cluster_spec().as_dict()))
    return strategy, strategy.num_replicas_in_sync, chief


def check_training_input(config, resume_state=None):
    """The checks a user can fail before anything is written: the splits, the classes, and that
    --init-model knows them. Returns (train_dir, validation_dir, class_names, architecture)."""
    train_dir, validation_dir = find_splits(config.data_dir)
    class_names = check_class_folders(train_dir, min_images=2)
    check_class_folders(validation_dir, class_names)
    architecture = config.architecture
    if config.init_model is not None and not resume_state:
        start = read_metadata(config.init_model, described_as=described_model_path(config.init_model))
        if list(start["class_names"]) != list(class_names):
            raise UserError(f"{config.init_model}: its classes ({', '.join(start['class_names'])}) are not "
                            f"the data's ({', '.join(class_names)}); it cannot start this training")
        architecture = (start.get("training") or {}).get("architecture", architecture)
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown architecture {architecture!r} (choose from {', '.join(ARCHITECTURES)})")
    return train_dir, validation_dir, class_names, architecture


def resolve_precision(config):
    """--precision auto: bfloat16 on a CPU that computes it natively and with no GPU (which
    --distribute runs in mixed_float16), else float32."""
    if config.precision != "auto":
        return config.precision
    return "bfloat16" if cpu_has_bfloat16() and not tf.config.list_physical_devices("GPU") else "float32"


def check_output_outside_data(output_dir, data_dir):
    """A run folder inside the data (or test) folder would turn its charts into faces next time."""
    if output_dir is not None and Path(os.path.realpath(output_dir)).is_relative_to(os.path.realpath(data_dir)):
        raise UserError(f"{output_dir}: inside the data folder {data_dir}; its charts would become faces")


def train(config=None, output_dir=None, overwrite=False, resume_state=None, callbacks=(), stop=None, log=print):
    """Train a model as `config` says, validate it, finish it and write everything a run writes
    (see finish_model). Returns the run folder.

    `resume_state` (read by `resume()`) continues an interrupted run in its own folder.
    `callbacks` are added to Keras's (tests steer training with them); `stop` is the
    StopSignals whose Ctrl-C or SIGTERM ends training between two batches.
    """
    config = config or TrainConfig()
    train_dir, validation_dir, class_names, architecture = check_training_input(config, resume_state)
    check_output_outside_data(output_dir, config.data_dir)
    config = dataclasses.replace(config, architecture=architecture, precision=resolve_precision(config))
    if config.precision == "bfloat16" and not cpu_has_bfloat16() and not tf.config.list_physical_devices("GPU"):
        # measured on an AMD EPYC with AVX2 only: 4.9 img/s against float32's 21 (models/README.md)
        log("note: this CPU has no AVX-512 BF16 or AMX, so bfloat16 is emulated and trains about 4x "
            "slower than float32; --precision auto picks float32 here")
    strategy, replicas, chief = distribution(config.distribute)
    if not chief:
        output_dir, lock = Path(tempfile.mkdtemp(prefix="emotion-worker-")), None
        log = lambda *args, **kwargs: None  # noqa: E731  the chief reports for the cluster
    elif resume_state:
        lock = RunLock(output_dir).acquire()
    else:
        output_dir, lock = claim_run_folder(output_dir, DEFAULT_RUNS_DIR, overwrite=overwrite,
                                            protected=[DEFAULT_MODEL_PATH.parent])
    try:
        return train_in_folder(config, Path(output_dir), class_names, (train_dir, validation_dir),
                               strategy, replicas, resume_state, callbacks, stop, log)
    except KeyboardInterrupt:
        state = read_training_state(output_dir, required=False)
        raise TrainingInterrupted(output_dir, state["epochs_done"] if state else 0) from None
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if lock is not None:
            lock.release()


def load_training_data(config, splits, class_names, log=print):
    """The training and validation faces, and the selection set held out of training (None
    without --selection-fraction)."""
    x_train, y_train, _ = load_split(splits[0], class_names, log=log)
    validation = load_split(splits[1], class_names, log=log)[:2]
    if not config.selection_fraction:
        return (x_train, y_train), validation, None
    train, selection = split_selection(x_train, y_train, config.selection_fraction, config.selection_seed)
    log(f"{len(selection[1])} training images held out for selection (seed {config.selection_seed}): epochs and "
        "finishing steps are chosen on them; validation is reported once, at the end")
    return train, validation, selection


def train_in_folder(config, output_dir, class_names, splits, strategy, replicas, resume_state, callbacks, stop,
                    log):
    """train()'s work once its folder is held: load, build, fit, finish."""
    global_batch = config.batch_size * replicas
    log(f"training on {splits[0]}, validating on {splits[1]}; writing to {output_dir}")
    (x_train, y_train), (x_val, y_val), selection = load_training_data(config, splits, class_names, log)
    log(f"{len(x_train)} training and {len(x_val)} validation images, classes: {', '.join(class_names)}"
        + (f"; {replicas} replicas ({config.distribute}), global batch {global_batch}" if strategy else ""))
    keras.utils.set_random_seed(config.seed + (resume_state["epochs_done"] if resume_state else 0))
    if config.precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")  # train() sets float32 back
    model_path = output_dir / DEFAULT_MODEL_PATH.name
    with strategy.scope() if strategy else contextlib.nullcontext():
        model, metadata, first_epoch = make_training_model(output_dir, model_path, class_names, config, replicas,
                                                           resume_state, log)
    if not resume_state:
        # The class names go to disk before the first checkpoint, so every saved model has them.
        write_json_atomically(metadata, metadata_path(model_path))
        plots.save_sample_grid(x_train, y_train, class_names, output_dir / "sample_images.png")
    sample_weight = None
    if config.class_weighting == "balanced":
        from sklearn.utils.class_weight import compute_sample_weight

        sample_weight = compute_sample_weight("balanced", y_train).astype(np.float32)
    batches = augmented_batches(x_train, y_train, sample_weight, global_batch, config.seed, config.augment,
                                first_epoch, consistency=bool(config.consistency))
    if config.consistency:
        attach_consistency(model, config.consistency)
    steps = math.ceil(len(x_train) / global_batch)
    steps = steps if config.max_batches is None else min(steps, config.max_batches)
    if resume_state and (resume_state.get("stopped") or first_epoch >= config.epochs):
        log("training had ended; finishing its best model")
    else:
        model.fit(batches, epochs=config.epochs, initial_epoch=first_epoch, steps_per_epoch=steps, shuffle=False,
                  validation_data=selection or (x_val, y_val), validation_batch_size=PREDICT_BATCH_SIZE, verbose=0,
                  callbacks=[*make_callbacks(config, output_dir, steps * global_batch, replicas, resume_state,
                                             stop, log), *callbacks])
    # The best epoch is the one RunState saved: the one place the best model is kept.
    model.set_weights(load_keras_model(model_path).get_weights())
    if strategy is not None or config.precision != "float32":
        # The finishing steps and the saved model need no strategy, and float32 weights.
        keras.mixed_precision.set_global_policy("float32")
        trained, model = model, build_model(len(class_names), config.architecture, config.learning_rate)
        model.set_weights(trained.get_weights())
    history = read_history(output_dir / "history.csv")
    minutes = history["elapsed_seconds"][-1] / 60 if history.get("elapsed_seconds") else 0.0
    metadata["training"].update(epochs_run=len(history.get("loss", [])), wall_minutes=round(minutes, 2))
    metadata = finish_model(model, metadata, model_path, (x_train, y_train), (x_val, y_val), stop, log,
                            selection_set=selection)
    plots.save_training_curves(history, output_dir / "training_curves.png")
    write_json_atomically(dict(read_training_state(output_dir), finished=True), output_dir / STATE_FILE)
    figures = metadata["validation"]
    log(f"done in {minutes:.1f} min: validation accuracy {figures['accuracy']:.4f}, macro-F1 "
        f"{figures['macro_f1']:.4f}, ECE {figures['ece_before_calibration']:.4f} -> "
        f"{figures['ece_after_calibration']:.4f}; model saved to {model_path}")
    log(evaluation.describe_panel(figures["robustness"]))
    return output_dir


def make_training_model(output_dir, model_path, class_names, config, replicas, resume_state, log=print):
    """The model to train, compiled, with its metadata and first epoch: a resumed run's
    checkpoint, a saved model's weights (--init-model), or a new network. Under a strategy this
    runs in its scope, so the weights are mirrored."""
    learning_rate = config.learning_rate * replicas
    if resume_state:
        log(f"resuming after epoch {resume_state['epochs_done']}")
        model = load_checkpoint(output_dir / LAST_CHECKPOINT)
        compile_model(model, learning_rate, optimizer=model.optimizer)  # older runs' loss took one-hot labels
        return model, read_metadata(model_path), resume_state["epochs_done"]
    # The JSON travels with the model: it names no folder of this machine.
    record = portable_record(dict(dataclasses.asdict(config), replicas=replicas, command=portable_command(sys.argv)))
    metadata = finishing.new_metadata(class_names, record)
    if config.init_model is None:
        return build_model(len(class_names), config.architecture, learning_rate, config.optimizer), metadata, 0
    model, start = load_model(config.init_model, described_as=described_model_path(config.init_model))
    compile_model(model, learning_rate, config.optimizer)
    log(f"starting from the weights of {config.init_model}")
    metadata["training"]["initialised_from"] = finishing.source_record(config.init_model, start)
    return model, metadata, 0


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; carries the run folder so the user can resume."""

    def __init__(self, output_dir, epochs_done):
        super().__init__(str(output_dir))
        self.output_dir, self.epochs_done = output_dir, epochs_done


def read_training_state(output_dir, required=True):
    """A run folder's training_state.json, checked: a hand-edited or broken one is a UserError."""
    path = Path(output_dir) / STATE_FILE
    if not os.path.isfile(path):
        if not required:
            return None
        raise UserError(f"{output_dir}: no {STATE_FILE}; not a run folder that can be resumed")
    return check_training_state(read_json(path, "training state"), path)


def resume(output_dir, stop=None, log=print):
    """Continue an interrupted run from its last finished epoch, with the same settings."""
    state = read_training_state(output_dir)
    if state.get("finished"):
        raise UserError(f"{output_dir}: that run already finished; nothing to resume")
    if not os.path.isfile(Path(output_dir) / LAST_CHECKPOINT):
        raise UserError(f"{output_dir}: no {LAST_CHECKPOINT} to resume from")
    config = TrainConfig.from_saved(state["settings"], Path(output_dir) / STATE_FILE)
    trained_on = read_metadata(Path(output_dir) / DEFAULT_MODEL_PATH.name)["class_names"]
    now = check_class_folders(find_splits(config.data_dir)[0], min_images=2)
    if list(now) != list(trained_on):
        raise UserError(f"{config.data_dir}: its classes changed since the run began ({', '.join(trained_on)} -> "
                        f"{', '.join(now)}); labels would no longer match the model: start a new run")
    return train(config, output_dir, resume_state=state, stop=stop, log=log)


def read_history(path):
    """history.csv as {column: [values]}: the whole run's, across resumes."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")]
            for key in (rows[0] if rows else {})}


def described_model_path(model_path):
    """A run's last checkpoint (its last epoch rather than its best) is described by the JSON of
    the run's model beside it."""
    model_path = Path(model_path)
    return model_path.with_name(DEFAULT_MODEL_PATH.name) if model_path.name == LAST_CHECKPOINT else model_path


# =============================================================================================
# Finishing: the steps every run ends with
# =============================================================================================
def finish_model(model, metadata, model_path, train_set, validation_set, stop=None, log=print, selection_set=None):
    """On the best epoch's weights: the class prior restored after balanced class weights, then
    batch-norm statistics recomputed on un-augmented faces, the confidence calibrated and the
    model evaluated on validation (with the robustness panel); then the model saved, exported to
    ONNX and its JSON written once, last. With a `selection_set` every choice (the batch-norm
    rule, the temperatures) is made on it, and validation is only measured. The panel of the
    faces the choices are made on is computed once per model the batch-norm rule weighs, and the
    kept one's is reused. Returns the final metadata."""
    (x_train, y_train), (x_val, y_val) = train_set, validation_set
    x_choose, y_choose = selection_set or validation_set
    training = metadata["training"]
    if training.get("class_weighting") == "balanced" and not training.get("class_prior"):
        training["class_prior"] = finishing.restore_class_prior(model, y_train, x_choose, y_choose,
                                                                metadata["class_names"], log)
    statistics, panel = finishing.refresh_batch_norm(model, x_train, x_choose, y_choose, log)
    if statistics:
        training["batch_norm_statistics"] = statistics
    metadata, probabilities = evaluation.describe_on_validation(model, metadata, x_val, y_val, selection_set, panel)
    if stop is not None:
        stop.check()  # the last safe point: from here on the model, its JSON and the figures must agree
    with stop.shielded() if stop is not None else contextlib.nullcontext():
        save_model_atomically(model, model_path)
        metadata.pop("onnx", None)
        try:
            metadata["onnx"] = finishing.export_onnx(model, model_path, x_val, log)
        except UserError as error:
            log(f"warning: {error}; prediction uses the .h5")
        write_json_atomically(metadata, metadata_path(model_path))
        write_evaluation(Path(model_path).parent, metadata["class_names"], x_val, y_val, probabilities,
                         metadata["validation"]["robustness"], "validation_predictions.png")
    return metadata


def average_models(model_paths, data_dir, output_dir=None, overwrite=False, stop=None, log=print):
    """--average: one model with the mean of these models' weights (finishing.average), finished
    on data_dir's splits like a training run's model (finish_model)."""
    check_output_outside_data(output_dir, data_dir)
    train_dir, validation_dir, class_names, _ = check_training_input(TrainConfig(data_dir=str(data_dir)))
    loaded = [load_model(path) for path in model_paths]
    model, metadata = finishing.average(model_paths, loaded, class_names, output_dir, log)
    output_dir, lock = claim_run_folder(output_dir, DEFAULT_RUNS_DIR, stem="average", overwrite=overwrite,
                                        protected=[DEFAULT_MODEL_PATH.parent])
    try:
        train_set, validation_set = (load_split(split, class_names, log=log)[:2] for split in (train_dir, validation_dir))
        metadata = finish_model(model, metadata, output_dir / DEFAULT_MODEL_PATH.name, train_set, validation_set,
                                stop, log)
    finally:
        lock.release()
    log(f"done: validation accuracy {metadata['validation']['accuracy']:.4f}; model saved to {output_dir}")


# =============================================================================================
# Evaluation
# =============================================================================================
def write_evaluation(output_dir, class_names, faces, labels, probabilities, panel, grid_name):
    """metrics.json (with the robustness panel), classification_report.txt, confusion_matrix.png
    and a grid of predictions; returns the metrics."""
    output_dir = Path(output_dir)
    metrics = evaluation.with_panel(evaluation.compute_metrics(class_names, labels, probabilities), panel)
    write_json_atomically(metrics, output_dir / "metrics.json")
    report = evaluation.text_report(class_names, labels, probabilities)
    replace_atomically(output_dir / "classification_report.txt", lambda partial: partial.write_text(report, "utf-8"))
    plots.save_confusion_matrix(labels, probabilities.argmax(axis=1), class_names, output_dir / "confusion_matrix.png")
    plots.save_prediction_grid(faces, labels, probabilities, class_names, output_dir / grid_name)
    return metrics


def evaluate(model_path, test_dir, output_dir=None, tta=False, overwrite=False, stop=None, log=print):
    """Evaluate a saved model on a folder of class folders (any subset of the model's classes),
    as it is and under the robustness panel's shifts."""
    check_output_outside_data(output_dir, test_dir)
    found = list_class_folders(test_dir)
    class_names = read_metadata(model_path)["class_names"]
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise UserError(f"{test_dir}: class folder(s) {', '.join(unknown)} unknown to the model "
                        f"(it knows {', '.join(class_names)})")
    output_dir, lock = claim_run_folder(output_dir, DEFAULT_RUNS_DIR, stem="evaluate", overwrite=overwrite,
                                        protected=[DEFAULT_MODEL_PATH.parent])
    try:
        model, metadata = load_model(model_path)
        x, labels, _ = load_split(test_dir, found, log=log)
        labels = np.asarray([class_names.index(found[label]) for label in labels])
        probabilities = predict_probabilities(model, x, model_temperature(metadata, tta), tta=tta)
        if stop is not None:
            stop.check()
        panel = evaluation.robustness_panel(model, x, labels, tta)
        if stop is not None:
            stop.check()
        metrics = write_evaluation(output_dir, class_names, x, labels, probabilities, panel, "test_predictions.png")
    finally:
        lock.release()
    log(f"{model_path} on {test_dir} ({len(labels)} images{', flip TTA' if tta else ''}): "
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"ECE {metrics['expected_calibration_error']:.4f}; details in {output_dir}")
    log(evaluation.describe_panel(panel))
    return metrics


def export_onnx_beside(model_path, overwrite=False, log=print):
    """--export-onnx: the ONNX export of a model trained before exports existed, checked on the
    real faces of the project's sample (dataset/validation), recorded in its JSON."""
    from facial_emotion.saved_model import onnx_path

    model_path = Path(model_path)
    if os.path.exists(onnx_path(model_path)) and not overwrite:
        raise UserError(f"{onnx_path(model_path)}: already exists; pass --overwrite to replace it")
    model, metadata = load_model(model_path)
    sample = DEFAULT_DATA_DIR / "validation"
    names = [name for name in metadata["class_names"] if os.path.isdir(sample / name)]
    faces = load_split(sample, names, log=log)[0] if names else np.random.default_rng(0).uniform(
        0, 255, (64,) + INPUT_SHAPE).astype(np.float32)
    metadata["onnx"] = finishing.export_onnx(model, model_path, faces, log)
    write_json_atomically(metadata, metadata_path(model_path))


# =============================================================================================
# Command line
# =============================================================================================
def main(argv=None):
    """The command line: `python emotion_recognition.py --help` lists the flags. The same entry as
    the script's and `facial-emotion-train`'s: training_cli parses and checks, then calls run()."""
    from facial_emotion import training_cli

    return training_cli.main(argv)


def command_name():
    """How the user ran training: `python emotion_recognition.py`, or `facial-emotion-train`."""
    name = Path(sys.argv[0]).name
    return f"python {name}" if name.endswith(".py") else name


def run(args):
    """The work of parsed arguments (training_cli.parse_args): one line for a user's error."""
    try:
        with StopSignals() as stop, quiet_python_warnings():  # matplotlib's and NumPy's: one line says it
            if args.import_csv:
                import_fer2013_csv(args.import_csv, args.data_dir, overwrite=args.overwrite)
            elif args.resume:
                resume(args.resume, stop=stop)
            elif args.evaluate:
                evaluate(args.evaluate, args.test_dir, args.output_dir, tta=args.tta, overwrite=args.overwrite,
                         stop=stop)
            elif args.export_onnx:
                export_onnx_beside(args.export_onnx, overwrite=args.overwrite)
            elif args.average:
                average_models(args.average, args.data_dir, args.output_dir, overwrite=args.overwrite, stop=stop)
            else:
                train(config_from_args(args), args.output_dir, overwrite=args.overwrite, stop=stop)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingInterrupted as stopped:
        if not os.path.isfile(Path(stopped.output_dir) / STATE_FILE):
            print(f"interrupted before the first epoch ended; nothing to resume in {one_line(stopped.output_dir)}: "
                  "start again with --overwrite", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"interrupted after {stopped.epochs_done} finished epoch(s); the best model so far is in "
              f"{one_line(stopped.output_dir)}; continue with: {command_name()} --resume "
              f"{one_line(stopped.output_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0

