"""facial_emotion.saved_model: the model's JSON checked, probabilities checked, ONNX Runtime failures
as one line. The models here are tiny ONNX graphs built with the onnx package: no TensorFlow."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import predict
from facial_emotion import saved_model
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
        with pytest.raises(UserError) as refused:
            predict_probabilities(Fixed([[0.2, bad, 0.8]]), faces)
        assert str(refused.value) == "the model answered NaN or infinite scores; it is broken (was it trained to NaN?)"
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


# ---------------------------------------------------------------------------------------------
# The JSON beside a model, and its temperatures
# ---------------------------------------------------------------------------------------------
def test_a_model_s_json_and_export_sit_beside_it_under_its_name():
    assert saved_model.metadata_path("runs/a/m.h5") == Path("runs/a/m.json")
    assert saved_model.onnx_path("runs/a/last.keras") == Path("runs/a/last.onnx")


def test_a_missing_model_or_json_is_named(tmp_path):
    with pytest.raises(UserError) as refused:
        read_metadata(tmp_path / "gone.h5")
    assert str(refused.value) == f"{tmp_path / 'gone.h5'}: no such model file"
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(UserError) as refused:
        read_metadata(tmp_path / "m.h5")
    assert str(refused.value) == f"{tmp_path / 'm.h5'}: no class-name file m.json beside it"


def test_another_model_s_json_can_describe_a_checkpoint(tmp_path):
    (tmp_path / "last_checkpoint.keras").write_bytes(b"x")
    model = write_model_json(tmp_path, '{"class_names": ["a", "b"]}')
    assert read_metadata(tmp_path / "last_checkpoint.keras", described_as=model)["class_names"] == ["a", "b"]


def test_a_model_file_larger_than_any_model_is_refused_before_it_is_read(tmp_path):
    model = write_model_json(tmp_path, '{"class_names": ["a", "b"]}')
    with open(model, "r+b") as handle:
        handle.truncate(saved_model.MAX_MODEL_BYTES)  # sparse: no disk used
    assert read_metadata(model)["class_names"] == ["a", "b"]  # the limit itself is allowed
    with open(model, "r+b") as handle:
        handle.truncate(saved_model.MAX_MODEL_BYTES + 60_000_000)
    with pytest.raises(UserError) as refused:
        read_metadata(model)
    assert str(refused.value) == (f"{model}: 1.1 GB is more than any model of this network (1 GB at most); "
                                  "refused before reading it")


@pytest.mark.parametrize("value, read", [(1e-3, 1e-3), (1000, 1000.0), (2, 2.0), (0.75, 0.75)])
def test_temperatures_at_the_ends_of_the_range_are_read_as_floats(value, read):
    number = saved_model.checked_temperature(value, "t")
    assert number == read and type(number) is float


@pytest.mark.parametrize("value", [0.00099, 1000.01, True, "2"])
def test_temperatures_just_outside_the_range_are_refused(value):
    with pytest.raises(UserError) as refused:
        saved_model.checked_temperature(value, "m.json: temperature")
    assert str(refused.value) == f"m.json: temperature must be a number from 0.001 to 1000, not {value!r}"


def test_a_long_bad_temperature_is_shortened_in_the_message():
    with pytest.raises(UserError) as refused:
        saved_model.checked_temperature("x" * 100, "t")
    assert str(refused.value) == f"t must be a number from 0.001 to 1000, not '{'x' * 36}..."
    with pytest.raises(UserError) as refused:
        saved_model.checked_temperature("x" * 38, "t")  # 40 characters with its quotes: shown whole
    assert str(refused.value) == f"t must be a number from 0.001 to 1000, not '{'x' * 38}'"
    with pytest.raises(UserError) as refused:
        saved_model.checked_temperature("x" * 39, "t")  # 41: shortened
    assert str(refused.value) == f"t must be a number from 0.001 to 1000, not '{'x' * 36}..."


def test_the_mirror_averaged_temperature_falls_back_to_the_plain_one():
    assert saved_model.model_temperature({"temperature": 1.5, "temperature_tta": 1.2}) == 1.5
    assert saved_model.model_temperature({"temperature": 1.5, "temperature_tta": 1.2}, tta=True) == 1.2
    assert saved_model.model_temperature({"temperature": 1.5}, tta=True) == 1.5
    assert saved_model.model_temperature({}, tta=True) == saved_model.model_temperature({}) == 1.0


# ---------------------------------------------------------------------------------------------
# Probabilities
# ---------------------------------------------------------------------------------------------
def test_a_temperature_rescales_the_log_probabilities():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]], dtype=np.float32)
    assert saved_model.apply_temperature(probabilities, 1.0) is probabilities
    expected = np.sqrt(probabilities[0]) / np.sqrt(probabilities[0]).sum()  # softmax(log p / 2)
    scaled = saved_model.apply_temperature(probabilities, 2.0)
    np.testing.assert_allclose(scaled[0], expected, rtol=1e-6)
    np.testing.assert_allclose(scaled[1], [1e-6 / (1e-6 + 2 * 0.5 ** 0.5), 0.5 ** 0.5 / (1e-6 + 2 * 0.5 ** 0.5),
                                           0.5 ** 0.5 / (1e-6 + 2 * 0.5 ** 0.5)], rtol=1e-5)  # 0 taken as 1e-12
    sharp = saved_model.apply_temperature(probabilities, 0.5)
    np.testing.assert_allclose(sharp[0], probabilities[0] ** 2 / (probabilities[0] ** 2).sum(), rtol=1e-6)
    assert np.isfinite(saved_model.apply_temperature(np.array([[1.0, 0.0]]), 1e-3)).all()
    # At T = 0.001 the logits reach -800: each row is shifted by its own largest, or exp() gives 0/0.
    sharpest = saved_model.apply_temperature(np.array([[1.0, 0.0, 0.0], [0.45, 0.45, 0.1]]), 1e-3)
    np.testing.assert_allclose(sharpest, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-9)


class LeftOrRight:
    """A model that says "left" when the left half of a face is brighter; it counts its calls."""
    output_shape = (None, 2)
    input_shape = (None, 48, 48, 1)

    def __init__(self):
        self.batches = []

    def __call__(self, batch, training=True):
        assert training is False  # a Keras model must run in inference mode: dropout off
        assert batch.shape[1:] == (48, 48, 1)  # whole faces, mirrored ones included
        self.batches.append(len(batch))
        left = batch[:, :, :24, 0].mean(axis=(1, 2)) > batch[:, :, 24:, 0].mean(axis=(1, 2))
        return np.stack([left, ~left], axis=1).astype(np.float32)


def test_faces_go_through_in_batches_and_tta_averages_each_with_its_left_right_mirror():
    faces = np.zeros((5, 48, 48, 1), dtype=np.float32)
    faces[:, :, :24] = 1.0  # brighter on the left
    faces[:, :24, :] += 0.5  # and at the top, which a mirror must not move
    model = LeftOrRight()
    np.testing.assert_allclose(predict_probabilities(model, faces, batch_size=2), [[1, 0]] * 5)
    assert model.batches == [2, 2, 1]
    model = LeftOrRight()
    np.testing.assert_allclose(predict_probabilities(model, faces, tta=True, batch_size=4), [[0.5, 0.5]] * 5)
    assert model.batches == [4, 4, 1, 1]
    np.testing.assert_allclose(predict_probabilities(Fixed([[0.7, 0.2, 0.1]]), faces, temperature=2.0)[0],
                               saved_model.apply_temperature(np.array([[0.7, 0.2, 0.1]]), 2.0)[0], rtol=1e-6)


@pytest.mark.parametrize("row, accepted", [
    ([0.5, 0.5, 0.0], True), ([0.50005, 0.50005, -0.00005], True), ([0.5004, 0.5004, 0.0], True),
    ([0.5, 0.5002, -0.0002], False), ([0.6, 0.6, 0.0], False), ([0.4, 0.4, 0.0], False), ([40.0, 0.0, 0.0], False),
])
def test_answers_that_are_not_probabilities_are_refused_within_float_slack(row, accepted):
    faces = np.zeros((2, 48, 48, 1), dtype=np.float32)
    if accepted:
        assert predict_probabilities(Fixed([row]), faces).shape == (2, 3)
    else:
        with pytest.raises(UserError) as refused:
            predict_probabilities(Fixed([row]), faces)
        assert str(refused.value) == ("the model's answers are not probabilities (each from 0 to 1, summing to 1 a "
                                      "face): its last layer is not a softmax")


# ---------------------------------------------------------------------------------------------
# The ONNX export: found only when it was made from this very model; runtimes
# ---------------------------------------------------------------------------------------------
def test_the_onnx_export_is_used_only_when_both_files_match_its_record(tmp_path):
    h5 = onnx_bundle(tmp_path / "model")
    metadata = json.loads((tmp_path / "model" / "m.json").read_text())
    assert saved_model.matching_onnx(h5, metadata) == (tmp_path / "model" / "m.onnx", None)
    assert saved_model.matching_onnx(h5, {**metadata, "onnx": "m.onnx"}) == (
        None, "m.json does not record m.onnx")
    assert saved_model.matching_onnx(h5, {**metadata, "onnx": {**metadata["onnx"], "onnx_sha256": "0"}}) == (
        None, "m.onnx changed after it was exported")
    h5.write_bytes(b"retrained")
    assert saved_model.matching_onnx(h5, metadata) == (None, "m.onnx was made from another m.h5")
    (tmp_path / "model" / "m.onnx").unlink()
    assert saved_model.matching_onnx(h5, metadata) == (None, "no m.onnx beside it")


def test_runtime_onnx_without_a_matching_export_says_how_to_make_one(tmp_path):
    h5 = onnx_bundle(tmp_path / "model")
    h5.write_bytes(b"retrained")
    with pytest.raises(UserError) as refused:
        load_model(h5, runtime="onnx")
    assert str(refused.value) == (f"{h5}: --runtime onnx: m.onnx was made from another m.h5 (export it with "
                                  f"`python emotion_recognition.py --export-onnx {h5}`)")


def test_runtime_auto_with_a_stale_export_warns_and_turns_to_keras(tmp_path):
    h5 = onnx_bundle(tmp_path / "model")
    h5.write_bytes(b"retrained, and no Keras file either")
    warnings = []
    with pytest.raises(UserError, match=r"m\.h5: not a loadable Keras model"):
        load_model(h5, runtime="auto", warn=warnings.append)
    assert warnings == [f"warning: {h5}: m.onnx was made from another m.h5; using Keras"]
    (tmp_path / "model" / "m.onnx").unlink()  # no export at all: nothing to warn about
    with pytest.raises(UserError, match="not a loadable Keras model"):
        load_model(h5, runtime="auto", warn=warnings.append)
    assert len(warnings) == 1


def test_runtime_auto_with_a_matching_export_answers_with_onnx_runtime(tmp_path):
    model, metadata = load_model(onnx_bundle(tmp_path / "model"), runtime="auto", threads=2)
    assert isinstance(model, OnnxModel) and metadata["class_names"] == CLASSES
    assert model.session.get_session_options().intra_op_num_threads == 2
    assert model.input_shape[1:] == (48, 48, 1) and model.input_name == "faces"


def test_a_model_whose_outputs_do_not_match_its_classes_is_refused_naming_the_json(tmp_path):
    h5 = onnx_bundle(tmp_path / "model", declared=5)
    with pytest.raises(UserError) as refused:
        load_model(h5, runtime="onnx")
    assert str(refused.value) == f"{tmp_path / 'model' / 'm.onnx'}: has 5 outputs but m.json names 7 classes"

    class WrongInput(Fixed):
        input_shape = (None, 64, 64, 3)

    with pytest.raises(UserError) as refused:
        saved_model.check_model_fits(WrongInput([[1, 0, 0]]), {"class_names": ["a", "b", "c"]}, "w.h5")
    assert str(refused.value) == "w.h5: expects input (64, 64, 3), not 48x48 grayscale (48, 48, 1)"
    saved_model.check_model_fits(Fixed([[1, 0, 0]]), {"class_names": ["a", "b", "c"]}, "f.h5")


def test_a_file_that_is_not_onnx_is_one_line(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07 not a protobuf of a model")
    with pytest.raises(UserError, match=r"^.*m\.onnx: not a loadable ONNX model \(.*INVALID_PROTOBUF.*\)$"):
        OnnxModel(path)


def test_without_onnxruntime_the_onnx_runtime_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(UserError) as refused:
        OnnxModel(tmp_path / "m.onnx")
    assert str(refused.value) == "--runtime onnx needs onnxruntime: pip install onnxruntime"


def graph_onnx(path, inputs, output, nodes, initializers=(), output_type=None):
    """A small ONNX graph: `inputs` [(name, shape)] of floats, one output (name, shape)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(output[0], output_type or TensorProto.FLOAT, output[1])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_onnx_model_of_other_inputs_is_refused_naming_what_it_expects(tmp_path):
    from onnx import helper

    mean = [helper.make_node("ReduceMean", ["faces"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("Softmax", ["pooled"], ["p"], axis=1)]
    color = graph_onnx(tmp_path / "color.onnx", [("faces", ["N", 64, 64, 3])], ("p", ["N", 64]), mean)
    with pytest.raises(UserError) as refused:
        OnnxModel(color)
    assert str(refused.value) == f"{color}: expects input ['N', 64, 64, 3], not 48x48 grayscale (48, 48, 1)"
    two = graph_onnx(tmp_path / "two.onnx", [("faces", ["N", 48, 48, 1]), ("extra", ["N", 48, 48, 1])],
                     ("p", ["N", 48]), mean)
    with pytest.raises(UserError) as refused:
        OnnxModel(two)
    assert str(refused.value) == f"{two}: has 2 inputs and 1 outputs, not one of each (faces in, scores out)"


def test_an_onnx_model_answering_strings_or_the_wrong_batch_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    flat = helper.make_node("ReduceMean", ["faces"], ["pooled"], axes=[2, 3], keepdims=0)  # [N, 48]
    words = graph_onnx(tmp_path / "words.onnx", [("faces", ["N", 48, 48, 1])], ("s", ["N", 48]),
                       [flat, helper.make_node("Cast", ["pooled"], ["s"], to=TensorProto.STRING)],
                       output_type=TensorProto.STRING)
    with pytest.raises(UserError) as refused:
        OnnxModel(words)(np.zeros((2, 48, 48, 1), np.float32))
    assert str(refused.value).startswith(f"{words}: answered ") and str(refused.value).endswith(" values, not scores")
    constant = numpy_helper.from_array(np.full((1, 48), 1 / 48, np.float32), "one_row")
    one_row = graph_onnx(tmp_path / "one_row.onnx", [("faces", ["N", 48, 48, 1])], ("p", ["N", 48]),
                         [flat, helper.make_node("Identity", ["one_row"], ["p"])], [constant])
    model = OnnxModel(one_row)
    assert model(np.zeros((1, 48, 48, 1), np.float32)).shape == (1, 48)
    with pytest.raises(UserError) as refused:
        model(np.zeros((3, 48, 48, 1), np.float32))
    assert str(refused.value) == f"{one_row}: answered shape (1, 48) for 3 faces"


def test_an_onnx_model_is_given_float32_faces_whatever_it_is_handed(tmp_path):
    model = OnnxModel(build_onnx(tmp_path / "m.onnx"))
    as_float64 = np.full((2, 48, 48, 1), 200.0)  # ONNX Runtime itself refuses doubles for a float input
    assert model(as_float64).shape == (2, 7)


def test_a_checkpoint_described_by_its_run_s_json_names_that_json(tmp_path):
    with pytest.raises(UserError) as refused:
        saved_model.check_model_fits(Fixed([[1, 0, 0]]), {"class_names": ["a", "b"]}, "run/last_checkpoint.keras",
                                     described_as="run/emotion_model.h5")
    assert str(refused.value) == "run/last_checkpoint.keras: has 3 outputs but emotion_model.json names 2 classes"
    h5 = onnx_bundle(tmp_path / "model")
    checkpoint = tmp_path / "model" / "last.h5"  # no JSON of its own: the run's is read
    checkpoint.write_bytes(b"a checkpoint that Keras cannot load either")
    with pytest.raises(UserError, match=r"last\.h5: not a loadable Keras model"):
        load_model(checkpoint, runtime="auto", described_as=h5)


@pytest.mark.parametrize("runtime, why", [
    ("keras", "{h5}: the Keras runtime"),
    ("auto", "{h5}: with no matching ONNX export (m.onnx was made from another m.h5), the Keras runtime"),
])
def test_without_tensorflow_the_keras_runtime_names_the_train_extra(tmp_path, monkeypatch, runtime, why):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "tensorflow" else real(name, *args))
    h5 = onnx_bundle(tmp_path / "model")
    h5.write_bytes(b"retrained")
    with pytest.raises(UserError) as refused:
        load_model(h5, runtime=runtime)
    assert str(refused.value) == why.format(h5=h5) + ' needs tensorflow, which is not installed: pip install "facial-emotion[train]"'
