"""Prediction on Ray Data (facial_emotion.ray_predict), in local mode: one Ray start and one run
for the module, compared with the plain path's Parquet rows."""

import importlib.util
import os
from pathlib import Path

import pytest

import predict

from conftest import PROJECT_DIR, SAMPLE_DIR

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install \"facial-emotion[ray]\")")
pq = pytest.importorskip("pyarrow.parquet")

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same inputs through the plain path and through Ray: six sample faces, the test photo,
    a corrupt JPEG and a link to nowhere."""
    root = tmp_path_factory.mktemp("ray")
    good = [*sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[:3],
            *sorted((SAMPLE_DIR / "validation" / "sad").iterdir())[:3], PROJECT_DIR / "tests" / "data" / "astronaut.jpg"]
    corrupt, dangling = root / "corrupt.jpg", root / "gone.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    os.symlink(root / "nowhere.jpg", dangling)
    inputs = [*map(str, good), str(corrupt), str(dangling)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        plain_status = predict.main([*inputs, "--parquet", str(root / "plain.parquet")])
        ray_status = predict.main([*inputs, "--ray", "--parquet", str(root / "ray.parquet")])
    finally:
        ray.shutdown()
    by_file = lambda table: sorted(table.to_pylist(), key=lambda row: (row["file"], row["x"] or 0))  # noqa: E731
    return {"inputs": inputs, "good": list(map(str, good)), "statuses": (plain_status, ray_status),
            "plain": by_file(pq.read_table(root / "plain.parquet")), "ray": by_file(pq.read_table(root / "ray.parquet")),
            "schema": pq.read_schema(next((root / "ray.parquet").glob("*.parquet")))}


def test_ray_gives_the_plain_path_s_faces_emotions_and_scores(runs):
    assert runs["ray"] == runs["plain"]
    assert {row["file"] for row in runs["ray"] if row["emotion"]} == set(runs["good"])


def test_a_corrupt_and_an_unreadable_file_are_error_rows_and_the_job_goes_on(runs):
    errors = {row["file"]: row["error"] for row in runs["ray"] if row["error"]}
    assert set(errors) == set(runs["inputs"][-2:])
    assert "broken image" in errors[runs["inputs"][-2]] and "no such file" in errors[runs["inputs"][-1]]
    assert runs["statuses"] == (1, 1)  # both paths answer every good file and say a file failed


def test_the_parquet_schema(runs):
    schema = runs["schema"]
    assert schema.names == ["file", "frame", "time", "person", "x", "y", "w", "h", "emotion", "confidence",
                            *CLASSES, "error"]
    assert [str(schema.field(name).type) for name in ("file", "frame", "time", "x", "confidence", "happy", "error")] == [
        "string", "int64", "double", "int64", "double", "double", "string"]


def test_without_ray_the_flag_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "ray" else real(name, *args))
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    assert predict.main([str(photo), "--ray", "--parquet", str(tmp_path / "x.parquet")]) == 1
    assert capsys.readouterr().err == 'error: --ray needs ray, which is not installed: pip install "facial-emotion[ray]"\n'


def test_ray_writes_only_parquet(capsys):
    with pytest.raises(SystemExit):
        predict.parse_args(["x.jpg", "--ray", "--csv", "x.csv"])
    assert "--ray writes its results to --parquet" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The parts each Ray task runs, called here without a cluster
# ---------------------------------------------------------------------------------------------
from facial_emotion import ray_predict  # noqa: E402
from facial_emotion.errors import UserError  # noqa: E402

SHIPPED_MODEL = PROJECT_DIR / "models" / "emotion_model.h5"
HAPPY_FACE = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]


def test_only_names_with_a_scheme_are_uris():
    assert ray_predict.is_uri("s3://bucket/a.jpg") and ray_predict.is_uri("file:///tmp/a.jpg")
    assert not ray_predict.is_uri("/tmp/a.jpg") and not ray_predict.is_uri("http:x.jpg")


def test_a_folder_uri_lists_its_images_and_videos_below_it_sorted(tmp_path):
    for name in ("b.jpg", "a/c.png", "a/d/e.mp4", "notes.txt", "a/f.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    uri = f"file://{tmp_path}"
    expected = [f"file://{tmp_path}/{name}" for name in ("a/c.png", "a/d/e.mp4", "b.jpg")]
    assert ray_predict.list_uris(uri) == expected
    assert ray_predict.list_uris(uri + "/") == expected
    assert ray_predict.list_uris(f"{uri}/b.jpg") == [f"{uri}/b.jpg"]  # a file is itself


def test_a_uri_that_is_not_there_or_cannot_be_read_is_one_line(tmp_path):
    with pytest.raises(UserError, match=f"^file://{tmp_path}/gone.jpg: no such file$"):
        ray_predict.list_uris(f"file://{tmp_path}/gone.jpg")
    with pytest.raises(UserError, match=r"^nosuch://x/y: cannot be listed \(Unrecognized filesystem type.*\)$"):
        ray_predict.list_uris("nosuch://x/y")


def test_a_remote_file_is_read_through_a_temporary_copy_removed_afterwards(tmp_path):
    source = tmp_path / "face.png"
    source.write_bytes(bytes(range(256)) * 9000)  # over one read chunk (1 MiB)
    with ray_predict.local_copy(f"file://{source}") as copy:
        assert copy != str(source) and copy.endswith(".png")
        assert Path(copy).read_bytes() == source.read_bytes()
    assert not Path(copy).exists()
    with pytest.raises(RuntimeError), ray_predict.local_copy(f"file://{source}") as copy:
        raise RuntimeError("the task failed")
    assert not Path(copy).exists()
    with ray_predict.local_copy(str(source)) as same:  # a local path is used as it is
        assert same == str(source)


@pytest.fixture(scope="module")
def predictor():
    return ray_predict.FilePredictor(str(SHIPPED_MODEL), runtime="onnx", threads=1, no_detect=True)


def test_a_task_answers_each_file_under_the_name_the_user_gave(predictor, tmp_path):
    import pyarrow as pa

    missing = tmp_path / "gone.jpg"
    table = predictor(pa.table({"path": [str(HAPPY_FACE), f"file://{HAPPY_FACE}", str(missing)],
                                "name": ["mine.png", "remote.png", "gone.jpg"]}))
    rows = table.to_pylist()
    assert table.schema.names[-1] == "error" and [row["file"] for row in rows] == ["mine.png", "remote.png", "gone.jpg"]
    assert rows[0]["emotion"] == rows[1]["emotion"] == "happy" and rows[0]["confidence"] == rows[1]["confidence"]
    assert rows[0]["error"] is None and (rows[0]["x"], rows[0]["w"]) == (0, 48)
    assert rows[2]["emotion"] is None and rows[2]["error"] == "gone.jpg: no such file"  # the name, not the path


def test_a_file_that_raises_inside_the_pipeline_is_an_error_row(predictor, monkeypatch):
    def broken(paths, every):
        raise ValueError("decoder exploded\nsecond line")

    monkeypatch.setattr(predictor.pipeline, "inputs", broken)
    [row] = predictor.rows_of(str(HAPPY_FACE), "face.png")
    assert (row[0], row[-1]) == ("face.png", "face.png: decoder exploded")


def test_a_task_s_pipeline_has_the_detector_tracker_runtime_and_threads_asked_for():
    import numpy as np
    from PIL import Image

    from facial_emotion.detection import FaceDetector
    from facial_emotion.tracking import FaceTracker

    task = ray_predict.FilePredictor(str(SHIPPED_MODEL), runtime="onnx", tta=True, every=3, threads=2)
    assert task.class_names == CLASSES and task.every == 3
    assert (task.pipeline.detector.kind, task.pipeline.detector.threads) == ("blazeface", 2)
    assert task.pipeline.classifier.tta is True and task.pipeline.make_tracker is FaceTracker
    assert task.pipeline.classifier.model.session.get_session_options().intra_op_num_threads == 2
    photo = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
    [row] = task.rows_of(str(photo), "astronaut.jpg")
    [face] = FaceDetector().detect(np.asarray(Image.open(photo).convert("RGB")))
    assert row[4:8] == face.box  # after file, frame, time and person: the box the plain path finds
    assert task.pipeline.detector.photo_detector.session.get_session_options().intra_op_num_threads == 2


def test_a_task_answers_every_analysed_frame_of_a_video(predictor, tmp_path, monkeypatch):
    import cv2
    import numpy as np

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (48, 48))
    face = cv2.cvtColor(cv2.imread(str(HAPPY_FACE)), cv2.COLOR_BGR2RGB)[:, :, ::-1]
    for _ in range(5):
        writer.write(np.ascontiguousarray(face))
    writer.release()
    monkeypatch.setattr(predictor, "every", 2)
    rows = predictor.rows_of(str(clip), "clip.mp4")
    assert [(row[0], row[1]) for row in rows] == [("clip.mp4", 0), ("clip.mp4", 2), ("clip.mp4", 4)]


def test_a_user_error_inside_a_task_is_its_own_row_as_worded(predictor, monkeypatch):
    def gone(paths, every):
        raise UserError("face.png: the disk went away")
        yield  # a generator, as Pipeline.inputs is

    monkeypatch.setattr(predictor.pipeline, "inputs", gone)
    [row] = predictor.rows_of(str(HAPPY_FACE), "face.png")
    assert row[-1] == "face.png: the disk went away"


def test_without_detection_a_task_takes_the_whole_picture_as_the_face(predictor):
    [row] = predictor.rows_of(str(PROJECT_DIR / "tests" / "data" / "astronaut.jpg"), "astronaut.jpg")
    assert row[4:8] == [0, 0, 512, 512]
