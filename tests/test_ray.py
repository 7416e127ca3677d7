"""Prediction on Ray Data (facial_emotion.ray_predict), in local mode: one Ray start and one run
for the module, compared with the plain path's Parquet rows."""

import importlib.util
import os

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
