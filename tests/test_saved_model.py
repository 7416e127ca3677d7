"""facial_emotion.saved_model: the model's JSON checked, probabilities checked, ONNX Runtime failures
as one line. The models here are tiny ONNX graphs built with the onnx package: no TensorFlow."""

import json
import math

import numpy as np
import pytest

import predict
from facial_emotion.errors import UserError
from facial_emotion.files import file_sha256
from facial_emotion.saved_model import OnnxModel, load_model, predict_probabilities, read_metadata

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def write_model_json(tmp_path, text):
    model = tmp_path / "m.h5"
    model.write_bytes(b"not read by read_metadata")
    (tmp_path / "m.json").write_text(text)
    return model


@pytest.mark.parametrize("temperature", [
    "1" + "0" * 400,        # a JSON integer too large for a float
    "5e-324",               # the smallest float: every answer would become 100%
    "NaN", "Infinity", "-Infinity",  # Python's json reads these literals
    '"NaN"', '"nan"', '"inf"', '"1.5"',  # strings, even of numbers
    "0", "-1", "true", "null", "[1.5]",
])
def test_a_temperature_that_is_not_a_sane_number_is_refused(tmp_path, temperature):
    model = write_model_json(tmp_path, f'{{"class_names": ["a", "b"], "temperature": {temperature}}}')
    with pytest.raises(UserError, match=r"m\.json: temperature must be a number from 0\.001 to 1000"):
        read_metadata(model)
    model = write_model_json(tmp_path, f'{{"class_names": ["a", "b"], "temperature_tta": {temperature}}}')
    with pytest.raises(UserError, match="temperature_tta must be a number"):
        read_metadata(model)


def test_sane_temperatures_are_read_and_missing_ones_are_1(tmp_path):
    model = write_model_json(tmp_path, '{"class_names": ["a", "b"], "temperature": 1.491, "other": [1]}')
    metadata = read_metadata(model)
    assert metadata["temperature"] == 1.491 and metadata["temperature_tta"] == 1.0
    assert metadata["class_names"] == ["a", "b"]


@pytest.mark.parametrize("class_names, message", [
    ('["happy", "sad", "happy"]', "holds a name twice"),
    ("[]", "non-empty list"), ('["happy", ""]', "non-empty list"), ('["happy", 3]', "non-empty list"),
    ('"happy"', "non-empty list"),
])
def test_bad_class_names_are_refused(tmp_path, class_names, message):
    model = write_model_json(tmp_path, f'{{"class_names": {class_names}}}')
    with pytest.raises(UserError, match=message):
        read_metadata(model)


@pytest.mark.parametrize("key", ["training", "validation"])
@pytest.mark.parametrize("value", ['"good"', "[1]", "null", "3"])
def test_training_and_validation_records_of_another_type_are_refused(tmp_path, key, value):
    model = write_model_json(tmp_path, f'{{"class_names": ["a", "b"], "{key}": {value}}}')
    with pytest.raises(UserError, match=f"m\\.json: {key} must be a record"):
        read_metadata(model)


class Fixed:
    """A model that answers the same rows for every batch."""
    output_shape = (None, 3)
    input_shape = (None, 48, 48, 1)

    def __init__(self, rows):
        self.rows = np.asarray(rows, dtype=np.float32)

    def __call__(self, batch, training=False):
        return np.repeat(self.rows, len(batch), axis=0)[:len(batch)]


def test_nan_or_infinite_answers_are_refused():
    faces = np.zeros((3, 48, 48, 1), dtype=np.float32)
    for bad in (math.nan, math.inf):
        with pytest.raises(UserError, match="NaN or infinite"):
            predict_probabilities(Fixed([[0.2, bad, 0.8]]), faces)
    np.testing.assert_allclose(predict_probabilities(Fixed([[0.2, 0.0, 0.8]]), faces), [[0.2, 0.0, 0.8]] * 3)
    assert predict_probabilities(Fixed([[0.2, 0.0, 0.8]]), faces[:0]).shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# ONNX models that fail while running
# ---------------------------------------------------------------------------------------------
def build_onnx(path, columns="data", fixed_batch=None, declared=len(CLASSES)):
    """A tiny ONNX model of 48x48x1 faces that declares `declared` outputs. columns="data": it
    answers brightest-pixel / 255 * 9 columns, which no shape check can know before it runs (a
    white face gets 9 scores); fixed_batch: it reshapes to that batch size, failing on others."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    constant = lambda name, value, kind=np.int64: numpy_helper.from_array(np.array(value, kind), name)  # noqa: E731
    initializers = [constant("shape", [fixed_batch or -1, 48 * 48]), constant("starts", [0]), constant("axes", [1]),
                    constant("zero", [0]), constant("scale", 255.0 / 9, np.float32)]
    nodes = [helper.make_node("Reshape", ["faces", "shape"], ["flat"]),
             helper.make_node("ReduceMax", ["faces"], ["peak"], keepdims=0),
             helper.make_node("Div", ["peak", "scale"], ["wanted"]),
             helper.make_node("Cast", ["wanted"], ["columns"], to=TensorProto.INT64),
             helper.make_node("Unsqueeze", ["columns", "zero"], ["ends"]),
             helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["cut"]),
             helper.make_node("Softmax", ["cut"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", declared])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_bundle(folder, **kwargs):
    """models/m.h5 (never read: the ONNX export answers), m.onnx and m.json recording both."""
    folder.mkdir()
    h5 = folder / "m.h5"
    h5.write_bytes(b"stands in for the Keras file the export was made from")
    onnx_file = build_onnx(folder / "m.onnx", **kwargs)
    (folder / "m.json").write_text(json.dumps({
        "class_names": CLASSES, "temperature": 1.0,
        "onnx": {"file": "m.onnx", "h5_sha256": file_sha256(h5), "onnx_sha256": file_sha256(onnx_file)}}))
    return h5


def test_an_onnx_answer_wider_than_its_classes_is_a_user_error(tmp_path):
    h5 = onnx_bundle(tmp_path / "model")
    model, metadata = load_model(h5, runtime="onnx")  # its declared shape fits the JSON
    assert isinstance(model, OnnxModel) and model.output_shape[-1] == len(CLASSES)
    dim = np.full((2, 48, 48, 1), 200.0, dtype=np.float32)  # 7 columns: fine
    assert predict_probabilities(model, dim).shape == (2, 7)
    white = np.full((2, 48, 48, 1), 255.0, dtype=np.float32)  # 9 columns
    with pytest.raises(UserError, match=r"m\.onnx: answered shape \(2, 9\) for 2 faces"):
        predict_probabilities(model, white)


def test_an_onnx_model_failing_inside_onnx_runtime_is_a_user_error(tmp_path):
    model = OnnxModel(build_onnx(tmp_path / "fixed.onnx", fixed_batch=1))
    faces = np.full((2, 48, 48, 1), 200.0, dtype=np.float32)
    with pytest.raises(UserError, match=r"fixed\.onnx: failed while running \(.*Reshape"):
        model(faces)


def test_predict_says_so_in_one_line_when_the_model_fails_while_running(tmp_path, capsys):
    h5 = onnx_bundle(tmp_path / "model")
    from PIL import Image

    white = tmp_path / "white.png"
    Image.new("L", (48, 48), 255).save(white)
    assert predict.main([str(white), "--model", str(h5)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {tmp_path / 'model' / 'm.onnx'}: answered shape (1, 9) for 1 faces"
    assert "Traceback" not in captured.err and "white" not in captured.out
