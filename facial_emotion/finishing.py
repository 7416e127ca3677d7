"""The training side's finishing steps on a trained Keras model: batch-norm statistics recomputed,
the class prior restored, and the ONNX export checked against Keras. Each computes and returns a
record for the model's JSON (the export also writes the .onnx file it checked);
emotion_recognition.finish_model runs them in order and writes the model and its JSON.

This module imports TensorFlow; prediction never imports it.
"""

import os
import sys
import warnings
from pathlib import Path

import numpy as np

from facial_emotion.console import quiet_native_stderr
from facial_emotion.errors import UserError, first_line
from facial_emotion.evaluation import accuracy_of, robustness_panel
from facial_emotion.files import (file_sha256, portable_command, portable_path, portable_record, remove_quietly,
                                  temporary_path)
from facial_emotion.images import INPUT_SHAPE
from facial_emotion.keras_runtime import keras, tf
from facial_emotion.saved_model import PREDICT_BATCH_SIZE, OnnxModel, onnx_path, predict_probabilities

# An ONNX export is kept only if it agrees with Keras on real faces: the same class for each
# and no probability more than this apart.
ONNX_TOLERANCE = 1e-4


def batch_norm_layers(model):
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


def average_weights(models):
    """The element-wise mean of the weights of models of one network: a uniform "model soup"
    (Wortsman et al., 2022). Fine-tunes of one model lie in one basin of the loss, and their mean
    is often better than each of them; averaging in the model they descend from keeps some of
    what fine-tuning lost (WiSE-FT, Wortsman et al., 2022). Batch-norm statistics are averaged
    too; refresh_batch_norm may recompute them. Models of different shapes are a UserError."""
    weights = [model.get_weights() for model in models]
    shapes = [[array.shape for array in arrays] for arrays in weights]
    if any(shape != shapes[0] for shape in shapes[1:]):
        raise UserError("the models are different networks: only models of one architecture can be averaged")
    return [np.mean(arrays, axis=0) for arrays in zip(*weights)]


def average(paths, loaded, class_names, output_dir=None, log=print):
    """The first of `loaded` ((Keras model, JSON) of each of `paths`) given the mean of all their
    weights, and a JSON for it that names its members. Refused: fewer than two different model
    files, a model of other classes than `class_names` (the data's), and an `output_dir` that
    holds a member. Each member's class prior is already in its weights: none is restored."""
    digests = [file_sha256(path) for path in paths]
    if len(set(digests)) < 2:
        raise UserError("--average needs two or more different models")
    if len(set(digests)) < len(digests):
        raise UserError("--average was given the same model file twice")
    for path, (_, metadata) in zip(paths, loaded):
        if metadata["class_names"] != list(class_names):
            raise UserError(f"{path}: its classes ({', '.join(metadata['class_names'])}) are not the data's "
                            f"({', '.join(class_names)}), in that order: it cannot be averaged with them")
        if output_dir is not None and os.path.realpath(Path(path).parent) == os.path.realpath(output_dir):
            raise UserError(f"{output_dir}: holds {Path(path).name}, a model being averaged; choose another --output-dir")
    model = loaded[0][0]
    model.set_weights(average_weights([member for member, _ in loaded]))
    log(f"averaged the weights of {len(loaded)} models")
    return model, new_metadata(class_names, {
        "averaged_from": [source_record(path, metadata) for path, (_, metadata) in zip(paths, loaded)],
        "command": portable_command(sys.argv), "architecture": loaded[0][1].get("training", {}).get("architecture")})


def new_metadata(class_names, training):
    """The JSON of a model about to be trained or averaged, before finishing fills in its
    temperatures and figures: `training` (no folder of this machine in it) and the libraries."""
    return {"class_names": list(class_names), "input_shape": list(INPUT_SHAPE), "temperature": 1.0,
            "temperature_tta": 1.0, "training": dict(training, tensorflow_version=tf.__version__,
                                                     keras_version=keras.__version__, cpu_count=os.cpu_count())}


def source_record(path, metadata):
    """How a model whose weights another starts from (--init-model) or averages (--average) was
    made: the chain of runs behind a model, recorded in its JSON."""
    return {"model": portable_path(path), "training": portable_record(metadata.get("training")),
            "validation_accuracy": (metadata.get("validation") or {}).get("accuracy")}


def refresh_batch_norm(model, x_train, x_val, y_val, log=print):
    """Recompute the batch-norm statistics on the un-augmented training faces and keep them
    unless validation accuracy drops, either on the faces as they are or on average under the
    robustness panel's shifts: for a model trained on shifted faces, statistics of clean ones can
    win a little plain accuracy and lose more on the faces a detector finds. Returns the record
    for the model's JSON (None when the model has no batch norm) and the panel of the statistics
    kept, which describes the model from here on (None without batch norm)."""
    norms = batch_norm_layers(model)
    if not norms:
        return None, None
    before, saved = robustness_panel(model, x_val, y_val), [layer.get_weights() for layer in norms]
    recompute_batch_norm_statistics(model, x_train)
    after = robustness_panel(model, x_val, y_val)
    shifted_before, shifted_after = (round(float(np.mean(list(panel["shifts"].values()))), 4)
                                     for panel in (before, after))
    kept = after["accuracy"] >= before["accuracy"] and shifted_after >= shifted_before
    if not kept:
        for layer, weights in zip(norms, saved):
            layer.set_weights(weights)
    log(f"batch-norm statistics recomputed on {len(x_train)} un-augmented training images: validation "
        f"accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}, mean under shifts {shifted_before:.4f} -> "
        f"{shifted_after:.4f}; {'kept' if kept else 'discarded (kept the training-time ones)'}")
    return {"recomputed_on_training_images": int(len(x_train)), "validation_accuracy_before": before["accuracy"],
            "validation_accuracy_after": after["accuracy"], "mean_shifted_accuracy_before": shifted_before,
            "mean_shifted_accuracy_after": shifted_after, "kept": kept}, after if kept else before


def restore_class_prior(model, y_train, x_val, y_val, class_names, log=print):
    """Put a model trained with balanced class weights back on the training set's class
    frequencies; returns the record for the model's JSON.

    Balanced weights teach the posterior of a set in which every class is equally common:
    p_balanced(class | face), proportional to p(class | face) / prior(class). Multiplying by the
    prior gives back p(class | face) (Menon et al., "Long-tail learning via logit adjustment",
    2021). log(prior) is added to the softmax layer's bias, so the saved model answers with it
    and prediction needs nothing new. Nothing is fitted.
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


def export_onnx(model, model_path, faces, log=print):
    """Write the ONNX export beside a saved .h5 model once it gives the same class for every one
    of `faces` and probabilities within ONNX_TOLERANCE of Keras; returns the record for the
    model's JSON (both files' SHA-256). A failed export or check leaves nothing behind and
    raises a UserError saying why."""
    model_path = Path(model_path)
    path = onnx_path(model_path)
    partial = temporary_path(path)
    faces = np.asarray(faces[:PREDICT_BATCH_SIZE], dtype=np.float32)
    try:
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
        remove_quietly(partial)
        if not isinstance(error, Exception):
            raise
        raise UserError(f"{model_path}: no ONNX export ({first_line(error)})") from None
    log(f"ONNX export {path} checked against Keras on {len(faces)} faces (largest difference {difference:.1e})")
    return {"file": path.name, "onnx_sha256": file_sha256(path), "h5_sha256": file_sha256(model_path),
            "checked_on_faces": int(len(faces)), "max_probability_difference": difference}
