"""Each person followed through a real two-person clip, end to end through predict.py."""

import csv
import json

import cv2
import numpy as np

import predict
from conftest import PROJECT_DIR, SAMPLE_DIR
from facial_emotion.images import read_image, to_rgb

ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
FRAMES = 24


def two_person_clip(path):
    """640x480, 24 frames: the test photo's face (150 px) walks right along the top while a
    FER-2013 face walks left along the bottom, moving away (160 to 70 px): their paths pass each
    other, and late in the clip the second face becomes the smaller, so the order in which the
    detector lists them (largest first) swaps."""
    first = np.asarray(to_rgb(read_image(ASTRONAUT)).crop((140, 30, 310, 200)).resize((150, 150)))[:, :, ::-1]
    face = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]
    second = to_rgb(read_image(face))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (640, 480))
    for index in range(FRAMES):
        frame = np.full((480, 640, 3), 110, np.uint8)
        frame[40:190, 20 + 18 * index:170 + 18 * index] = first
        side = 160 - 90 * index // (FRAMES - 1)
        frame[290:290 + side, 470 - 18 * index:470 - 18 * index + side] = np.asarray(second.resize((side, side)))[:, :, ::-1]
        writer.write(frame)
    writer.release()
    return path


def test_two_people_keep_two_stable_tracks_in_json_csv_and_the_annotated_video(tmp_path, capsys):
    clip = two_person_clip(tmp_path / "two people.avi")
    table = tmp_path / "faces.csv"
    status = predict.main([str(clip), "--json", "--csv", str(table), "--annotate", str(tmp_path / "out")])
    assert status == 0
    frames = json.loads(capsys.readouterr().out)
    assert len(frames) == FRAMES
    by_track = {}
    for frame in frames:
        for face in frame["faces"]:
            by_track.setdefault(face["person"], []).append((frame["frame"], face["box"]))
    assert len(by_track) == 2, f"two people, two tracks: {sorted(by_track)}"
    walking = {}
    for track, seen in by_track.items():
        assert len(seen) >= 0.8 * FRAMES, "each person is found in most frames"
        xs = [box[0] for _, box in seen]
        ys = {round(box[1] / 100) for _, box in seen}
        assert len(ys) == 1, "a track stays on one person's row"
        steps = np.sign(np.diff(xs))
        assert abs(steps.sum()) >= len(steps) - 2, "and follows that person's direction"
        walking[track] = steps.sum() > 0
    assert sorted(walking.values()) == [False, True], "one walks right, the other left"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["person"] for row in rows} == {str(track) for track in by_track}
    assert (tmp_path / "out" / "two people_annotated.mp4").stat().st_size > 10_000
