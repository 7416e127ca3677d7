"""Make models/face_detection_short_range.onnx from MediaPipe's BlazeFace short-range model.

    python -m facial_emotion.convert_blazeface [--output models/face_detection_short_range.onnx]

Steps: `pip download` the mediapipe wheel (no install: mediapipe needs protobuf<5, which would
break TensorFlow), take face_detection_short_range.tflite out of it, convert it with tf2onnx,
then make the ONNX input size free (the network is fully convolutional; see blazeface.py), check
the result against the TFLite interpreter, and print the SHA-256 of the wheel, the .tflite and
the .onnx (models/FACE_DETECTOR.md records them). Needs pip's access to PyPI, tf2onnx and
TensorFlow (for the check); the detector itself needs neither.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

OUTPUT_PATH = Path(__file__).resolve().parents[1] / "models" / "face_detection_short_range.onnx"
WHEEL = "mediapipe==0.10.21"  # the release whose model FACE_DETECTOR.md describes
# One fixed wheel (CPython 3.11, manylinux x86-64) whatever machine runs this, so that the
# wheel's SHA-256 is the one recorded; the .tflite inside is the same in every platform's wheel.
WHEEL_PLATFORM = ["--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
TFLITE_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
TFLITE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"  # mediapipe 0.10.21's
OPSET = 13  # ONNX Runtime 1.x runs it; the model uses nothing newer
# tf2onnx writes the outputs' reshapes as [1, -1, k]; 0 ("copy this dimension") lets the batch be free.
RESHAPE_BATCH_COPY = 0
DOC_STRING = ("BlazeFace short-range face detector, Copyright The MediaPipe Authors, Apache License 2.0. "
              f"Converted from {TFLITE_MEMBER} of {WHEEL} by tf2onnx --opset {OPSET}, then changed by "
              "facial_emotion/convert_blazeface.py: input height, width and batch made free, weights renamed.")
CHECK_TOLERANCE = 1e-3  # float32 conversion error of the outputs is ~3e-5; 1e-3 still catches a wrong graph
CHECK_SIZES = ((128, 128), (96, 160))  # (h, w): the trained size, and one the pyramid uses


def sha256(path):
    """The file's SHA-256, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def download_wheel(folder):
    """The mediapipe wheel, fetched by pip into `folder` (dependencies not fetched)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *WHEEL_PLATFORM,
                    WHEEL, "-d", str(folder)], check=True)
    [wheel] = Path(folder).glob("mediapipe-*.whl")
    return wheel


def extract_tflite(wheel, folder):
    """face_detection_short_range.tflite out of the wheel; stops if it is not the known file."""
    with zipfile.ZipFile(wheel) as archive:
        target = Path(folder) / Path(TFLITE_MEMBER).name
        target.write_bytes(archive.read(TFLITE_MEMBER))
    if sha256(target) != TFLITE_SHA256:
        sys.exit(f"{wheel.name}: {TFLITE_MEMBER} is not the model FACE_DETECTOR.md describes "
                 f"(SHA-256 {sha256(target)}, expected {TFLITE_SHA256})")
    return target


def convert(tflite, onnx_path):
    """tf2onnx's conversion, as its documented command line runs it."""
    result = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output",
                             str(onnx_path), "--opset", str(OPSET)], capture_output=True, text=True)
    if result.returncode != 0:  # its log is long and TensorFlow's noisy: show only the end
        sys.exit("tf2onnx failed:\n" + "\n".join((result.stdout + result.stderr).splitlines()[-15:]))


def free_input_size(model):
    """Makes batch, height and width symbolic: the output reshapes copy the batch instead of
    fixing it to 1, and the declared shapes name their free dimensions."""
    from onnx import numpy_helper

    reshape_shapes = {node.input[1] for node in model.graph.node if node.op_type == "Reshape"}
    for tensor in model.graph.initializer:
        if tensor.name in reshape_shapes:
            shape = numpy_helper.to_array(tensor).copy()
            shape[0] = RESHAPE_BATCH_COPY
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    for dimension, name in zip(model.graph.input[0].type.tensor_type.shape.dim, ("batch", "height", "width")):
        dimension.dim_param = name
    for output in model.graph.output:
        dimensions = output.type.tensor_type.shape.dim
        dimensions[0].dim_param, dimensions[1].dim_param = "batch", "anchors"
    del model.graph.value_info[:]  # shapes inferred for 128x128 would now be wrong


def name_constants_by_use(model):
    """Renames the weights after the node that first uses them, in a fixed order: tf2onnx's own
    names come from a counter that differs from run to run, and the file's SHA-256 should not."""
    weights = {tensor.name for tensor in model.graph.initializer}
    names = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in weights and name not in names:
                names[name] = f"{node.name}/input{index}"
    for node in model.graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
    for tensor in model.graph.initializer:
        tensor.name = names[tensor.name]
    ordered = sorted(model.graph.initializer, key=lambda tensor: tensor.name)
    del model.graph.initializer[:]
    model.graph.initializer.extend(ordered)


def finish_model(onnx_path):
    """The converted file with a free input size, stable names and a note of what was done
    (Apache-2.0 asks that a changed file say so)."""
    import onnx

    model = onnx.load(str(onnx_path))
    free_input_size(model)
    name_constants_by_use(model)
    model.graph.doc_string = DOC_STRING
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def check_against_tflite(tflite, onnx_path):
    """The ONNX model gives TFLite's outputs at 128x128, and runs at another size with the
    number of anchors the two heads give there; returns the largest difference from TFLite."""
    import onnxruntime
    import tensorflow as tf

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    interpreter = tf.lite.Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for height, width in CHECK_SIZES:
        picture = rng.uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
        regressions, logits = session.run(None, {session.get_inputs()[0].name: picture})
        anchors = (height // 8) * (width // 8) * 2 + (height // 16) * (width // 16) * 6
        if regressions.shape != (1, anchors, 16) or logits.shape != (1, anchors, 1):
            sys.exit(f"{onnx_path}: outputs {regressions.shape}, {logits.shape} at {height}x{width}")
        if (height, width) != (128, 128):
            continue
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], picture)
        interpreter.invoke()
        expected = {detail["shape"][-1]: interpreter.get_tensor(detail["index"])
                    for detail in interpreter.get_output_details()}
        error = max(np.abs(regressions - expected[16]).max(), np.abs(logits - expected[1]).max())
        if error > CHECK_TOLERANCE:
            sys.exit(f"{onnx_path}: differs from the TFLite model by {error:.2g}")
    return error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        wheel = download_wheel(folder)
        tflite = extract_tflite(wheel, folder)
        converted = Path(folder) / "converted.onnx"
        convert(tflite, converted)
        finish_model(converted)
        error = check_against_tflite(tflite, converted)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        partial = args.output.with_name(f".{args.output.name}.partial.{os.getpid()}")
        partial.write_bytes(converted.read_bytes())
        os.replace(partial, args.output)  # never a half-written model under the real name
        print(f"wheel   {wheel.name}  sha256 {sha256(wheel)}")
        print(f"tflite  {TFLITE_MEMBER}  sha256 {sha256(tflite)}")
        print(f"onnx    {args.output}  sha256 {sha256(args.output)}")
        print(f"largest difference from the TFLite model at 128x128: {error:.1g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
