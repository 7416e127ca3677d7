"""A saved model: its JSON record, its temperatures, and the two runtimes behind one interface.

A model is `emotion_model.h5` (Keras) with `emotion_model.json` beside it (class names in model
order, temperatures, how it was made) and, usually, `emotion_model.onnx`, its export. Both
runtimes answer `model(batch)` with probabilities; ONNX Runtime answers without TensorFlow.
Nothing here imports TensorFlow or Keras unless the Keras runtime is asked for.
"""

import math
import os
from pathlib import Path

import numpy as np

from facial_emotion.errors import UserError, first_line, require_extra
from facial_emotion.files import file_sha256, read_json, shipped_file
from facial_emotion.images import INPUT_SHAPE

# The model shipped with the project; no command writes under models/ unless told to explicitly.
DEFAULT_MODEL_PATH = shipped_file("emotion_model.h5")
# Faces are classified in batches of this many: one model call per batch, not per face, in
# memory a few megabytes.
PREDICT_BATCH_SIZE = 256
# Temperatures outside this range are not calibration but a broken file: a temperature of 1e-3
# already turns every answer into 100%, one of 1e3 into 1/N.
TEMPERATURE_RANGE = (1e-3, 1e3)
RUNTIMES = ("auto", "onnx", "keras")
# The networks here save to 7-22 MB (a .keras checkpoint with its optimizer is the largest): a
# model file over this is no model of theirs, and is refused before it is hashed or read (a
# sparse 20 GB file took 109 s to hash).
MAX_MODEL_BYTES = 1_000_000_000
# A softmax in float32 sums to 1 within about 1e-6 a face (bfloat16 inside the network is cast
# back first); scores off by more are not probabilities (a linear last layer answers 40.0).
PROBABILITY_SLACK = 1e-4
SUM_SLACK = 1e-3


# ---------------------------------------------------------------------------------------------
# The JSON record
# ---------------------------------------------------------------------------------------------
def metadata_path(model_path):
    """The JSON beside a model: models/emotion_model.h5 -> models/emotion_model.json."""
    return Path(model_path).with_suffix(".json")


def onnx_path(model_path):
    return Path(model_path).with_suffix(".onnx")


def read_metadata(model_path, described_as=None):
    """A model's JSON, checked: class names, and temperatures in TEMPERATURE_RANGE where given.
    `described_as`: read the JSON of this model path instead (a run's last checkpoint uses its
    run's)."""
    path = metadata_path(described_as or model_path)
    if not os.path.isfile(model_path):
        raise UserError(f"{model_path}: no such model file")
    if os.path.getsize(model_path) > MAX_MODEL_BYTES:
        raise UserError(f"{model_path}: {os.path.getsize(model_path) / 1e9:.1f} GB is more than any model of this "
                        f"network ({MAX_MODEL_BYTES // 10**9} GB at most); refused before reading it")
    if not os.path.isfile(path):
        raise UserError(f"{model_path}: no class-name file {path.name} beside it")
    metadata = read_json(path, "model description")
    class_names = metadata.get("class_names") if isinstance(metadata, dict) else None
    if not isinstance(class_names, list) or not class_names or not all(isinstance(c, str) and c for c in class_names):
        raise UserError(f"{path}: class_names must be a non-empty list of names")
    if len(set(class_names)) != len(class_names):
        raise UserError(f"{path}: class_names holds a name twice")
    for key in ("temperature", "temperature_tta"):
        metadata[key] = checked_temperature(metadata.get(key, 1.0), f"{path}: {key}")
    for key in ("training", "validation"):  # records read by --init-model and --average
        if not isinstance(metadata.get(key, {}), dict):
            raise UserError(f"{path}: {key} must be a record, not {type(metadata[key]).__name__}")
    return metadata


def checked_temperature(value, name):
    """A temperature as a float in TEMPERATURE_RANGE; anything else (a string, NaN, 0, 1e400
    written as an integer, 5e-324) is a UserError."""
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    except OverflowError:
        number = None
    low, high = TEMPERATURE_RANGE
    if number is None or not math.isfinite(number) or not low <= number <= high:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise UserError(f"{name} must be a number from {low:g} to {high:g}, not {shown}")
    return number


def model_temperature(metadata, tta=False):
    """The calibration temperature for plain or mirror-averaged answers (older models have
    only the plain one)."""
    return metadata.get("temperature_tta", metadata.get("temperature", 1.0)) if tta else metadata.get("temperature", 1.0)


# ---------------------------------------------------------------------------------------------
# Probabilities
# ---------------------------------------------------------------------------------------------
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
    face with its horizontal mirror. `model` is either runtime. Answers that are not
    probabilities (NaN from a broken model) are a UserError, never printed as an emotion."""
    faces = np.asarray(faces, dtype=np.float32)
    outputs = []
    for start in range(0, len(faces), batch_size):
        batch = faces[start:start + batch_size]
        probabilities = np.asarray(model(batch, training=False), dtype=np.float32)
        if tta:
            probabilities = (probabilities + np.asarray(model(batch[:, :, ::-1, :], training=False))) / 2
        outputs.append(probabilities)
    if not outputs:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    probabilities = np.concatenate(outputs)
    if not np.all(np.isfinite(probabilities)):
        raise UserError("the model answered NaN or infinite scores; it is broken (was it trained to NaN?)")
    if np.any(probabilities < -PROBABILITY_SLACK) or np.any(np.abs(probabilities.sum(axis=1) - 1) > SUM_SLACK):
        raise UserError("the model's answers are not probabilities (each from 0 to 1, summing to 1 a face): its "
                        "last layer is not a softmax")
    return apply_temperature(probabilities, temperature)


# ---------------------------------------------------------------------------------------------
# Runtimes
# ---------------------------------------------------------------------------------------------
class OnnxModel:
    """An ONNX Runtime session that answers like a Keras model: model(batch) -> probabilities.
    `threads`: its intra-op threads (ONNX Runtime's default: one per core)."""

    def __init__(self, path, threads=None):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--runtime onnx needs onnxruntime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # fatal only: a user sees the project's one line
        if threads:
            options.intra_op_num_threads = threads
        self.path = path
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own types for a bad file
            raise UserError(f"{path}: not a loadable ONNX model ({first_line(error)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{path}: has {len(inputs)} inputs and {len(outputs)} outputs, not one of each "
                            "(faces in, scores out)")
        if list(inputs[0].shape[1:]) != list(INPUT_SHAPE):
            raise UserError(f"{path}: expects input {inputs[0].shape}, not 48x48 grayscale {INPUT_SHAPE}")
        self.input_name = inputs[0].name
        self.output_shape = tuple(outputs[0].shape)
        self.input_shape = tuple(inputs[0].shape)

    def __call__(self, batch, training=False):
        try:
            output = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        except Exception as error:  # a model that fails while running: an allocation, a bad shape
            raise UserError(f"{self.path}: failed while running ({first_line(error)})") from None
        output = np.asarray(output)
        if output.dtype.kind not in "fiu":  # strings, objects, booleans: not scores
            raise UserError(f"{self.path}: answered {output.dtype} values, not scores")
        if np.ndim(output) != 2 or output.shape[0] != len(batch) or (
                isinstance(self.output_shape[-1], int) and output.shape[1] != self.output_shape[-1]):
            raise UserError(f"{self.path}: answered shape {np.shape(output)} for {len(batch)} faces")
        return output


def matching_onnx(model_path, metadata):
    """The ONNX export beside a model if its JSON records it as made from this very .h5 file
    (both files' SHA-256), else None with the reason."""
    path, record = onnx_path(model_path), metadata.get("onnx")
    if not os.path.isfile(path):
        return None, f"no {path.name} beside it"
    if not isinstance(record, dict):
        return None, f"{metadata_path(model_path).name} does not record {path.name}"
    if record.get("h5_sha256") != file_sha256(model_path):
        return None, f"{path.name} was made from another {Path(model_path).name}"
    if record.get("onnx_sha256") != file_sha256(path):
        return None, f"{path.name} changed after it was exported"
    return path, None


def check_model_fits(model, metadata, model_path, described_as=None):
    """The model takes 48x48x1 faces and has one output per class its JSON names."""
    input_shape = tuple(model.input_shape[1:])
    if input_shape != INPUT_SHAPE:
        raise UserError(f"{model_path}: expects input {input_shape}, not 48x48 grayscale {INPUT_SHAPE}")
    outputs = model.output_shape[-1]
    if outputs != len(metadata["class_names"]):
        raise UserError(f"{model_path}: has {outputs} outputs but {metadata_path(described_as or model_path).name} "
                        f"names {len(metadata['class_names'])} classes")


def load_model(model_path=DEFAULT_MODEL_PATH, runtime="keras", described_as=None, warn=None, threads=None):
    """A saved model and its JSON, checked to fit together and to fit 48x48x1 faces.

    runtime: "keras" loads the .h5 with TensorFlow; "onnx" the matching ONNX export beside it
    (an error if there is none); "auto" the ONNX export when it matches, else Keras, with the
    same answers either way (`warn` is told why when an export is there but stale).
    """
    model_path = Path(model_path)
    metadata = read_metadata(model_path, described_as)
    if runtime in ("auto", "onnx"):
        path, problem = matching_onnx(model_path, metadata)
        if path is not None:
            model = OnnxModel(path, threads)
            check_model_fits(model, metadata, path, model_path)
            return model, metadata
        if runtime == "onnx":
            raise UserError(f"{model_path}: --runtime onnx: {problem} (export it with "
                            f"`python emotion_recognition.py --export-onnx {model_path}`)")
        if os.path.isfile(onnx_path(model_path)) and warn is not None:
            warn(f"warning: {model_path}: {problem}; using Keras")
    require_extra("tensorflow", f"{model_path}: the Keras runtime" if runtime == "keras" else
                  f"{model_path}: with no matching ONNX export ({problem}), the Keras runtime", "train")
    from facial_emotion import keras_runtime  # TensorFlow starts here, and only here

    model = keras_runtime.load_keras_model(model_path)
    check_model_fits(model, metadata, model_path, described_as)
    return model, metadata
