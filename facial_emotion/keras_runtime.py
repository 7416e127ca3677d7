"""The Keras runtime: loading saved models with TensorFlow, safe mode on, and saving them whole.

Importing this module starts TensorFlow (seconds); prediction imports it only when the ONNX
export cannot answer or `--runtime keras` asks for it.
"""

import os
import warnings
from pathlib import Path

from facial_emotion.console import quiet_native_stderr
from facial_emotion.errors import UserError, first_line
from facial_emotion.files import replace_atomically

# TensorFlow's C++ start-up chatter is noise for a command-line user; real errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow writes C++ start-up notes straight to file descriptor 2, ignoring
# TF_CPP_MIN_LOG_LEVEL; they are muted for the import only.
with quiet_native_stderr():
    import tensorflow as tf

    tf.config.list_physical_devices()
    import keras


def load_keras_model(path):
    """A saved Keras model, safe mode on: a model file cannot run Python code (Lambda layers are
    refused). Any failure is one line naming the file."""
    path = Path(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty model file")
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
    try:
        return keras.models.load_model(str(path), safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean "not loadable"
        raise UserError(f"{path}: cannot resume from it ({first_line(error)})") from None


def save_model_atomically(model, path):
    """Save a Keras model whole or not at all. An .h5 file is for prediction and leaves the
    optimizer out; a .keras checkpoint keeps it for --resume."""
    def write(partial):
        import logging

        # Keras logs "HDF5 is considered legacy" on every .h5 save; .h5 stays because it is the
        # format users' own Keras and TensorFlow scripts load.
        logger = logging.getLogger("absl")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            model.save(str(partial), **({"include_optimizer": False} if partial.suffix == ".h5" else {}))
        except RuntimeError as error:  # h5py's for a write refused by the disk (errno 27, 28): an I/O error
            raise OSError(f"the model could not be written: {first_line(error)}") from None
        finally:
            logger.setLevel(level)

    replace_atomically(path, write)
