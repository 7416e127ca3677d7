"""Faces in real photos and videos: detection, boxes, annotation, video frames, CSV."""

import csv
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

import predict
from conftest import PROJECT_DIR, SAMPLE_DIR
from facial_emotion.detection import FaceDetector

ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"  # NASA, public domain (see tests/data/README.md)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_face_picture(path):
    """A smooth gradient with a few rectangles: nothing a face detector should fire on."""
    y, x = np.mgrid[0:300, 0:400]
    pixels = np.stack([x * 255 // 400, y * 255 // 300, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    pixels[50:120, 60:200] = (20, 160, 40)
    Image.fromarray(pixels).save(path)
    return path


def two_face_picture(path):
    """Two real FER-2013 faces, enlarged, on a plain background: one large, one smaller."""
    canvas = Image.new("L", (640, 360), 200)
    faces = sorted((SAMPLE_DIR / "validation" / "happy").iterdir())
    large = Image.open(faces[0]).resize((200, 200), Image.Resampling.BICUBIC)
    small = Image.open(faces[1]).resize((140, 140), Image.Resampling.BICUBIC)
    canvas.paste(large, (40, 80))
    canvas.paste(small, (420, 110))
    canvas.convert("RGB").save(path)
    return path


def test_haar_finds_the_face_in_a_real_photo():
    detector = FaceDetector("haar")
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    detections = detector.detect(image)
    assert len(detections) == 1
    x, y, w, h = detections[0].box
    # Eileen Collins's face sits around x 180-270, y 70-160 in this 512x512 picture.
    assert 150 < x + w / 2 < 260 and 80 < y + h / 2 < 150 and 60 < w < 140


def test_no_face_is_not_an_error(trained_run, tmp_path, capsys):
    picture = no_face_picture(tmp_path / "landscape.png")
    assert predict.main([str(picture), "--model", str(trained_run["model"])]) == 0
    assert capsys.readouterr().out.strip() == f"{picture}: no face found"
    assert predict.main([str(picture), "--model", str(trained_run["model"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"] == []


def test_every_face_is_classified_largest_first_with_boxes_in_original_pixels(trained_run, tmp_path, capsys):
    picture = two_face_picture(tmp_path / "two.jpg")
    assert predict.main([str(picture), "--model", str(trained_run["model"]), "--json"]) == 0
    faces = json.loads(capsys.readouterr().out)[0]["faces"]
    assert len(faces) == 2
    (x0, y0, w0, h0), (x1, y1, w1, h1) = faces[0]["box"], faces[1]["box"]
    assert w0 * h0 > w1 * h1
    # Pasted at (40, 80) 200 px wide and at (420, 110) 140 px wide. The box is the face, squared:
    # it may reach above the crop's forehead, but sits over the pasted square at its size.
    assert iou((x0, y0, w0, h0), (40, 80, 200, 200)) > 0.7 and 0.9 < w0 / 200 < 1.25
    assert iou((x1, y1, w1, h1), (420, 110, 140, 140)) > 0.85 and 0.9 < w1 / 140 < 1.15


def iou(a, b):
    width = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return width * height / (a[2] * a[3] + b[2] * b[3] - width * height)


def test_the_box_moves_with_the_face(trained_run, tmp_path, capsys):
    face = Image.open(sorted((SAMPLE_DIR / "validation" / "happy").iterdir())[0]).resize((200, 200))
    boxes = []
    for corner in ((40, 80), (300, 120)):  # both leave room for the box above the crop
        canvas = Image.new("L", (640, 360), 200)
        canvas.paste(face, corner)
        canvas.convert("RGB").save(tmp_path / "moved.png")
        assert predict.main([str(tmp_path / "moved.png"), "--model", str(trained_run["model"]), "--json"]) == 0
        [found] = json.loads(capsys.readouterr().out)[0]["faces"]
        boxes.append(np.array(found["box"]))
    # the detector sees this photo at 128 px wide, 5 photo pixels to its one: two of them is 10
    np.testing.assert_allclose(boxes[1] - boxes[0], [260, 40, 0, 0], atol=10)


def test_large_photo_is_detected_on_a_downscaled_copy(trained_run, tmp_path, capsys):
    big = tmp_path / "big.jpg"
    Image.open(ASTRONAUT).resize((3072, 3072), Image.Resampling.BICUBIC).save(big)
    assert predict.main([str(big), "--model", str(trained_run["model"]), "--json"]) == 0
    [face] = json.loads(capsys.readouterr().out)[0]["faces"]
    assert predict.main([str(ASTRONAUT), "--model", str(trained_run["model"]), "--json"]) == 0
    [small] = json.loads(capsys.readouterr().out)[0]["faces"]
    # six times the 512-px box, within 2% of the face's size
    np.testing.assert_allclose(face["box"], 6 * np.array(small["box"]), atol=0.02 * 6 * small["box"][2])


def test_small_crops_are_classified_whole_and_no_detect_takes_any_image_whole(trained_run, capsys):
    crop = sorted((SAMPLE_DIR / "validation" / "sad").iterdir())[0]
    assert predict.main([str(crop), "--model", str(trained_run["model"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"][0]["box"] == [0, 0, 48, 48]
    assert predict.main([str(ASTRONAUT), "--model", str(trained_run["model"]), "--json", "--no-detect"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"][0]["box"] == [0, 0, 512, 512]


def test_annotate_writes_copies_and_never_touches_inputs(trained_run, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "astronaut.jpg"
    photo.write_bytes(ASTRONAUT.read_bytes())
    before = digest(photo)
    # Annotating into the input folder itself must still not overwrite the input.
    assert predict.main([str(folder), "--model", str(trained_run["model"]), "--annotate", str(folder)]) == 0
    assert digest(photo) == before
    annotated = folder / "astronaut_annotated.jpg"
    assert annotated.is_file()
    original, marked = np.asarray(Image.open(photo)), np.asarray(Image.open(annotated))
    assert original.shape == marked.shape
    assert np.abs(original.astype(int) - marked).max() > 100, "boxes were drawn"
    # A second run does not overwrite the first annotation either.
    first = digest(annotated)
    assert predict.main([str(photo), "--model", str(trained_run["model"]), "--annotate", str(folder)]) == 0
    assert digest(annotated) == first and (folder / "astronaut_annotated_2.jpg").is_file()


def make_video(path, frames=6, fps=5):
    import cv2

    face = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    blank = np.full_like(face, 90)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (face.shape[1], face.shape[0]))
    for index in range(frames):
        writer.write(cv2.cvtColor(face if index % 3 != 2 else blank, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_frames_json_csv_and_annotated_video(trained_run, tmp_path, capsys):
    import cv2

    video = make_video(tmp_path / "clip.avi")
    before = digest(video)
    out = tmp_path / "out"
    table = tmp_path / "emotions.csv"
    status = predict.main([str(video), "--model", str(trained_run["model"]), "--json", "--every", "1",
                           "--csv", str(table), "--annotate", str(out)])
    assert status == 0
    results = json.loads(capsys.readouterr().out)
    assert [result["frame"] for result in results] == [0, 1, 2, 3, 4, 5]
    assert [result["time"] for result in results] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert [len(result["faces"]) for result in results] == [1, 1, 0, 1, 1, 0]
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 4
    assert list(rows[0]) == ["file", "frame", "time", "person", "x", "y", "w", "h", "emotion", "confidence",
                             "happy", "sad"]
    assert [row["frame"] for row in rows] == ["0", "1", "3", "4"]
    # One person throughout: a frame without the face does not give her a new track.
    tracks = [face["person"] for result in results for face in result["faces"]]
    assert len(tracks) == 4 and len(set(tracks)) == 1
    assert [row["person"] for row in rows] == [str(tracks[0])] * 4
    annotated = cv2.VideoCapture(str(out / "clip_annotated.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    annotated.release()
    assert digest(video) == before


def test_every_nth_frame(trained_run, tmp_path, capsys):
    video = make_video(tmp_path / "clip.avi")
    assert predict.main([str(video), "--model", str(trained_run["model"]), "--json", "--every", "2"]) == 0
    assert [result["frame"] for result in json.loads(capsys.readouterr().out)] == [0, 2, 4]


def test_folders_mix_images_and_videos_and_a_bad_file_does_not_stop_the_batch(trained_run, tmp_path, capsys):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    make_video(folder / "sub" / "clip.avi", frames=3)
    (folder / "face.jpg").write_bytes(ASTRONAUT.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    (folder / "sub" / "loop").symlink_to(folder)  # a symlink loop must not hang the walk
    status = predict.main([str(folder), "--model", str(trained_run["model"]), "--json"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert status == 1
    assert "broken.png" in captured.err
    files = {result["file"] for result in results}
    assert str(folder / "face.jpg") in files and str(folder / "sub" / "clip.avi") in files
    assert sum(1 for result in results if result["file"].endswith("clip.avi")) == 3


def test_mtcnn_finds_the_same_face_offline():
    detector = FaceDetector("mtcnn")
    detections = detector.detect(np.asarray(Image.open(ASTRONAUT).convert("RGB")))
    assert len(detections) == 1
    x, y, w, h = detections[0].box
    assert 150 < x + w / 2 < 260 and 80 < y + h / 2 < 150
    # MTCNN's five landmarks, eyes first, in the photo's pixels: the eyes level, inside the box.
    keypoints = detections[0].keypoints
    assert keypoints.shape == (5, 2) and detections[0].score >= 0.9
    (left_x, left_y), (right_x, right_y) = keypoints[:2]
    assert x < left_x < right_x < x + w and y < min(left_y, right_y) and abs(left_y - right_y) < h / 5


def test_a_broken_video_is_one_error_and_the_batch_goes_on(trained_run, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    status = predict.main([str(broken), str(ASTRONAUT), "--model", str(trained_run["model"])])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.strip() == f"error: {broken}: not a video file OpenCV can read"
    assert captured.out.startswith(f"{ASTRONAUT}: ")


def save_in_mode(mode, path):
    photo = Image.open(ASTRONAUT).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    elif mode == "RGBA":
        image = photo.convert("RGBA")
        image.putalpha(255)
    elif mode == "EXIF-rotated":
        # Stored sideways, with EXIF saying "rotate 90 degrees clockwise to display".
        exif = Image.Exif()
        exif[0x0112] = 6
        photo.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=92)
        return path
    else:
        image = photo.convert(mode)
    image.save(path)
    return path


@pytest.mark.parametrize("mode, suffix", [("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("L", ".png"),
                                          ("I;16", ".png"), ("CMYK", ".jpg"), ("EXIF-rotated", ".jpg")])
def test_the_face_is_found_in_every_image_mode(trained_run, tmp_path, capsys, mode, suffix):
    path = save_in_mode(mode, tmp_path / f"photo{suffix}")
    assert predict.main([str(path), "--model", str(trained_run["model"]), "--json"]) == 0
    [face] = json.loads(capsys.readouterr().out)[0]["faces"]
    x, y, w, h = face["box"]
    assert 150 < x + w / 2 < 260 and 80 < y + h / 2 < 150, face["box"]  # upright coordinates
