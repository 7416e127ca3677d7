"""The labels predict.py prints are right: the shipped model on the 350 real FER-2013 sample faces,
in-process through predict.main, on ONNX Runtime (no TensorFlow)."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import predict

PROJECT_DIR = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT_DIR / "dataset" / "validation"
ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
CLASSES = sorted(path.name for path in SAMPLE.iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def sample_records():
    """predict.py dataset/validation --json, parsed: one record per sample face."""
    with pytest.MonkeyPatch.context() as patch:
        captured = []
        patch.setattr("facial_emotion.sinks.Stdout.write", lambda self, text: captured.append(text))
        assert predict.main([str(SAMPLE), "--json"]) == 0
    records = json.loads("".join(captured))
    assert len(records) == 350
    return records


def test_most_sample_faces_are_named_right(sample_records):
    right, seen = Counter(), Counter()
    for record in sample_records:
        truth = Path(record["file"]).parent.name
        face, = record["faces"]
        assert face["box"] == [0, 0, 48, 48]  # a 48x48 crop is taken whole
        seen[truth] += 1
        right[truth] += face["emotion"] == truth
    accuracy = sum(right.values()) / len(sample_records)
    assert accuracy > 0.5, f"{accuracy:.1%} right; chance is {1 / len(CLASSES):.1%}"
    assert set(seen) == set(CLASSES)
    recall = {name: right[name] / seen[name] for name in CLASSES}
    assert recall["happy"] > 0.75 and recall["surprise"] > 0.6, recall
    assert all(value > 0.25 for value in recall.values()), recall


def test_the_named_emotion_is_the_top_score(sample_records):
    names = Counter()
    for record in sample_records:
        face, = record["faces"]
        assert list(face["scores"]) == CLASSES
        assert face["confidence"] == max(face["scores"].values())
        assert face["scores"][face["emotion"]] == face["confidence"]
        assert sum(face["scores"].values()) == pytest.approx(1.0, abs=0.01)
        names[face["emotion"]] += 1
    assert len(names) == len(CLASSES), f"every emotion is named for some face: {names}"


def test_top_k_is_printed_highest_first_and_starts_with_the_named_emotion(sample_records, capsys):
    happy = SAMPLE / "happy"
    assert predict.main([str(happy), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list(happy.glob("*.jpg")))
    named = {record["file"]: record["faces"][0] for record in sample_records}
    pattern = re.compile(r"^(.*): (\w+) \(([\d.]+)%\), (\w+) \(([\d.]+)%\), (\w+) \(([\d.]+)%\)$")
    for line in lines:
        file, first, p1, second, p2, third, p3 = pattern.match(line).groups()
        assert float(p1) >= float(p2) >= float(p3)
        assert len({first, second, third}) == 3
        face = named[file]
        assert first == face["emotion"] and float(p1) == pytest.approx(100 * face["confidence"], abs=0.0501)
        ranked = sorted(face["scores"].values(), reverse=True)
        assert float(p2) == pytest.approx(100 * ranked[1], abs=0.0501)
        assert float(p3) == pytest.approx(100 * ranked[2], abs=0.0501)


def test_the_astronaut_photo_as_the_readme_shows_it(capsys):
    assert predict.main([str(ASTRONAUT), "--json"]) == 0
    record, = json.loads(capsys.readouterr().out)
    face, = record["faces"]
    assert face["box"] == [164, 57, 119, 119]
    assert face["emotion"] == "happy" and face["confidence"] == pytest.approx(0.9792, abs=0.002)
