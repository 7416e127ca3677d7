"""Training's settings and command line, without TensorFlow: `--help`, argument errors and a
missing `[train]` extra are answered before TensorFlow loads (5-20 s).

Each training setting is one `TrainConfig` field with its flag and help text; the parser, the
settings a run saves and `--resume`'s refusals all follow from the fields. `main` is the
`facial-emotion-train` command and what `python emotion_recognition.py` runs: it parses, then
imports the Keras module `emotion_recognition` and hands it the arguments.
"""

import argparse
import dataclasses
import importlib.util
import math
import os
import sys
from pathlib import Path

from facial_emotion.console import HelpFormatter
from facial_emotion.errors import EXIT_USER_ERROR, UserError, one_line
from facial_emotion.files import PROJECT_DIR

# The small real sample that makes the quick start work out of the box (in a clone).
DEFAULT_DATA_DIR = PROJECT_DIR / "dataset"
# Seeds are NumPy's: 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
# The networks: filters and convolutions per block, dropout after each block and in the head.
# `default` is sized for 45 minutes on 2 CPU cores: narrow at 48x48 and 24x24, which take most of
# the time (one convolution at 48x48 saves 15-20% at no loss), wider at 12x12 and 6x6, light
# dropout (in 45 minutes it under-fits). `wide` is for long runs (the shipped model).
ARCHITECTURES = {
    "default": dict(widths=(16, 32, 96, 192), convolutions=(1, 2, 2, 2), dropout=(0.0, 0.0, 0.05, 0.1, 0.25)),
    "wide": dict(widths=(32, 64, 128, 256), convolutions=(2, 2, 2, 2), dropout=(0.0, 0.1, 0.15, 0.2, 0.4)),
}
# --distribute: Keras's own strategies. The global batch and the learning rate grow with the
# replicas (Goyal et al.'s linear scaling rule, 2017): one replica trains as without a strategy.
DISTRIBUTIONS = ("none", "mirrored", "multi-worker")
# --dry-run: one epoch of this many batches.
DRY_RUN_BATCHES = 2
TRAIN_EXTRA = "training needs the train extra: pip install \"facial-emotion[train]\" (TensorFlow, Keras, tf2onnx)"


def cpu_has_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where --precision auto
    picks bfloat16: 1.2-1.4x the float32 images a second on an AMD EPYC with avx512_bf16
    (tests/benchmarks/precision.py)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def setting(default, flag=None, help=None, **argparse_options):
    """A TrainConfig field with its command-line flag (None: set by no flag of its own)."""
    return dataclasses.field(default=default, metadata=dict(flag=flag, help=help, options=argparse_options))


@dataclasses.dataclass
class TrainConfig:
    """Every training setting and its default, once: the parser is built from these fields, the
    model's JSON and the resume state save them, and `TrainConfig.from_saved` resumes a run."""
    data_dir: str = setting(str(DEFAULT_DATA_DIR), "--data-dir", "folder with train/ and validation/ (or test/), "
                            "each holding one folder per class", type=Path)
    epochs: int = setting(60, "--epochs", "most epochs (early stopping may end sooner)", type=int)
    batch_size: int = setting(64, "--batch-size", "images per training step", type=int)  # 64 beat 32 over equal minutes
    learning_rate: float = setting(1e-3, "--learning-rate", "the optimizer's initial learning rate", type=float)
    seed: int = setting(42, "--seed", f"seed for weights, shuffling and augmentation (0..{MAX_SEED})", type=int)
    augment: bool = setting(True, "--no-augment", "train without rotation, shift, flip, framing scale and the "
                            "light, blur, resolution, noise and JPEG shifts", action="store_false")
    architecture: str = setting("default", "--architecture", "default: Conv 16 / 32-32 / 96-96 / 192-192, sized for "
                                "45 minutes on 2 CPU cores; wide: Conv 32-64-128-256, for long runs (the shipped "
                                "model)", choices=tuple(ARCHITECTURES))
    class_weighting: str = setting("none", "--class-weight", "balanced: weight each class's loss by 1/frequency "
                                   "(helps rare classes such as disgust); the class frequencies are put back into the "
                                   "model at the end", choices=("none", "balanced"))
    time_limit_minutes: float = setting(None, "--time-limit", "stop after the epoch that passes this many minutes",
                                        type=float, metavar="MINUTES")
    lr_schedule: str = setting("plateau", "--lr-schedule", "plateau: halve the rate after 4 epochs without "
                               "progress; cosine: decay it smoothly over --epochs or --time-limit, whichever ends "
                               "first", choices=("plateau", "cosine"))
    max_batches: int = setting(None)  # caps each epoch: --dry-run sets it
    init_model: str = setting(None, "--init-model", "start from this saved model's weights instead of random ones "
                              "(fine-tuning); a run's last_checkpoint.keras gives its last epoch rather than its best",
                              type=Path, metavar="MODEL")
    distribute: str = setting("none", "--distribute", "mirrored: train on every GPU of this machine; multi-worker: "
                              "on the machines TF_CONFIG names. --batch-size and --learning-rate are per replica (GPU)",
                              choices=DISTRIBUTIONS)
    optimizer: str = setting("adam", "--optimizer", "sgd: Nesterov momentum 0.9, weight decay 1e-4 (needs a larger "
                             "--learning-rate than Adam)", choices=("adam", "sgd"))
    precision: str = setting("auto", "--precision", "bfloat16: compute in bfloat16 with float32 weights (Keras's "
                             "mixed_bfloat16), 1.2-1.4x the images a second on CPUs with AVX-512 BF16 or AMX; auto: "
                             "bfloat16 on such CPUs, else float32. The saved model is float32",
                             choices=("auto", "float32", "bfloat16"))
    consistency: float = setting(0.0, "--consistency", "weight of AugMix's Jensen-Shannon consistency term "
                                 "(Hendrycks et al., 2020; they use 12): each face is seen clean and in two randomly "
                                 "shifted copies, the loss is the clean copy's cross-entropy plus this weight times the "
                                 "divergence between the three answers; a step costs 3 times as much", type=float,
                                 metavar="WEIGHT")
    selection_fraction: float = setting(0.0, "--selection-fraction", "hold out this stratified share of train/ "
                                        "for choosing the epoch and the finishing steps; validation is then only "
                                        "reported", type=float, metavar="FRACTION")
    selection_seed: int = setting(0, "--selection-seed", "the held-out share's seed: keep it fixed across the runs "
                                  "you compare", type=int)

    @classmethod
    def from_saved(cls, saved, source):
        """The config saved in a run's state or a model's JSON; keys of other versions are left
        out, and values of the wrong type are a UserError naming `source`."""
        if not isinstance(saved, dict):
            raise UserError(f"{source}: its settings are not a record")
        names = {field.name for field in dataclasses.fields(cls)}
        config = cls(**{key: value for key, value in saved.items() if key in names})
        for field in dataclasses.fields(cls):
            value, default = getattr(config, field.name), field.default
            kind = type(default) if default is not None else None
            if value is not None and kind is not None and not isinstance(value, (int, float) if kind is float else kind):
                raise UserError(f"{source}: setting {field.name} is {value!r}, not a {kind.__name__}")
            if value is not None and kind is None and not isinstance(value, (str, int, float)):
                raise UserError(f"{source}: setting {field.name} is {value!r}")
        return config


def check_training_state(state, path):
    """A run's training_state.json (already parsed), returned when every field --resume reads has
    its type; otherwise a UserError naming the broken fields."""
    number = (int, float)
    expected = {"epochs_done": int, "elapsed_seconds": number, "early_stopping": dict, "settings": dict}
    problems = [key for key, kind in expected.items() if not isinstance(state, dict) or not isinstance(
        state.get(key), kind) or isinstance(state.get(key), bool)]
    if not problems:
        stopping = state["early_stopping"]
        problems = [f"early_stopping.{key}" for key, kind in (("wait", int), ("best", number), ("best_epoch", int))
                    if not isinstance(stopping.get(key), kind) and stopping.get(key) is not None]
        problems += [key for key, kind in (("checkpoint_best", number), ("reduce_lr", dict))
                     if state.get(key) is not None and not isinstance(state[key], kind)]
        problems += ["epochs_done"] if state["epochs_done"] < 0 else []
    if problems:
        raise UserError(f"{path}: not a valid training state ({', '.join(problems)} missing or of the wrong type)")
    return state


# The flags that set a TrainConfig field, by field: --resume takes a run's own and refuses these.
TRAINING_FLAGS = {field.name: field.metadata["flag"] or "--dry-run" for field in dataclasses.fields(TrainConfig)}


def build_parser():
    parser = argparse.ArgumentParser(  # prog: the script's or the console script's own name
        description="Train a CNN to recognise facial emotions in 48x48 grayscale faces, or evaluate one.",
        formatter_class=HelpFormatter, allow_abbrev=False)
    for field in dataclasses.fields(TrainConfig):
        if field.metadata["flag"]:
            parser.add_argument(field.metadata["flag"], dest=field.name, default=field.default,
                                help=field.metadata["help"], **field.metadata["options"])
    add = parser.add_argument
    add("--output-dir", type=Path, help="where the model, plots and metrics go (default: runs/train, runs/train2, ...)")
    add("--overwrite", action="store_true", help="allow writing into an --output-dir that holds files")
    add("--dry-run", action="store_true", help=f"one epoch of {DRY_RUN_BATCHES} batches: checks that everything runs")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue an interrupted training run from its last finished epoch, with its settings")
    modes.add_argument("--evaluate", type=Path, metavar="MODEL", help="evaluate this saved model on --test-dir")
    modes.add_argument("--export-onnx", type=Path, metavar="MODEL",
                       help="write MODEL's ONNX export beside it (training does this itself), then stop")
    modes.add_argument("--average", type=Path, nargs="+", metavar="MODEL", help="one model with the mean of these "
                       "models' weights (a model and its fine-tunes), finished on --data-dir, into --output-dir")
    modes.add_argument("--import-csv", type=Path, metavar="CSV",
                       help="convert Kaggle's fer2013.csv into class folders under --data-dir, then stop")
    add("--test-dir", type=Path, help="with --evaluate: a folder of class folders")
    add("--tta", action="store_true", help="with --evaluate: average each face with its mirror image")
    return parser


def check_numbers(parser, args):
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("seed", "selection_seed"):
        if not 0 <= getattr(args, name) <= MAX_SEED:
            parser.error(f"--{name.replace('_', '-')} must be from 0 to {MAX_SEED}")
    if not (0 <= args.consistency <= 1000 and math.isfinite(args.consistency)):
        parser.error("--consistency must be from 0 to 1000")
    if not 0 <= args.selection_fraction < 0.5:
        parser.error("--selection-fraction must be from 0 to below 0.5")
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        parser.error("--learning-rate must be a positive number")
    limit = args.time_limit_minutes
    if limit is not None and not (limit > 0 and math.isfinite(limit)):
        parser.error("--time-limit must be a positive number of minutes")


def mode_of(args):
    """The flag of the mode asked for (--resume, --evaluate, ...), or None for training."""
    return next((flag for flag, value in (("--resume", args.resume), ("--evaluate", args.evaluate),
                                          ("--export-onnx", args.export_onnx), ("--import-csv", args.import_csv),
                                          ("--average", args.average)) if value), None)


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_numbers(parser, args)
    if bool(args.evaluate) != bool(args.test_dir):
        parser.error("--evaluate needs --test-dir" if args.evaluate else "--test-dir goes with --evaluate MODEL")
    mode = mode_of(args)
    if args.init_model and mode:
        parser.error(f"--init-model goes with training, not with {mode}")
    given = {token.split("=")[0] for token in (sys.argv[1:] if argv is None else argv) if token.startswith("--")}
    refused = [flag for flag in TRAINING_FLAGS.values() if flag in given and flag != "--data-dir"] + [
        flag for flag in ("--data-dir", "--output-dir") if flag in given and args.resume]
    if args.resume and refused:
        parser.error(f"--resume continues a run with its own settings; {', '.join(refused)} cannot change "
                     "them (start a new run with --init-model RUN_DIR/last_checkpoint.keras)")
    if args.average and refused:
        parser.error(f"--average trains nothing: {', '.join(refused)} would be ignored")
    if args.import_csv and "--data-dir" not in given:
        parser.error("--import-csv needs --data-dir, the folder to write the class folders into")
    return args


def config_from_args(args):
    """The TrainConfig the parsed flags ask for (--dry-run: one epoch of DRY_RUN_BATCHES batches)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
              if field.metadata["flag"]}
    config = TrainConfig(**{name: str(value) if isinstance(value, Path) else value for name, value in values.items()})
    return dataclasses.replace(config, epochs=1, max_batches=DRY_RUN_BATCHES) if args.dry_run else config


def missing_path(args):
    """The one-line answer for a path that the mode needs and that is not there, or None: given
    before TensorFlow loads, in the words the full checks use."""
    mode = mode_of(args)
    needed = {"--resume": [(args.resume, "run folder")], "--evaluate": [(args.evaluate, "model file"),
                                                                         (args.test_dir, "folder")],
              "--export-onnx": [(args.export_onnx, "model file")], "--import-csv": [(args.import_csv, "CSV file")],
              "--average": [*((path, "model file") for path in args.average or []), (args.data_dir, "data folder")],
              None: [(args.data_dir, "data folder")]}[mode]
    for path, kind in needed:
        if not os.path.exists(path):
            return f"{one_line(path)}: no such {kind}"
    return None


def main(argv=None):
    """facial-emotion-train, and `python emotion_recognition.py`: parse, check, then train."""
    args = parse_args(argv)
    problem = missing_path(args)
    if problem is None and importlib.util.find_spec("tensorflow") is None:
        problem = TRAIN_EXTRA
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    import emotion_recognition

    return emotion_recognition.run(args)
