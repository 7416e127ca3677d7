"""predict.py against hostile inputs, interruptions and a machine without a display: one clear
line per bad file, results kept as they are done, plots, nothing a user made overwritten.

The command-line runs use the shipped model, as a user would; the in-process tests stand a fixed
model in for it, so they skip TensorFlow's start-up.
"""

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import predict
from facial_emotion import predict_cli
from conftest import PROJECT_DIR, SAMPLE_DIR
from facial_emotion import pipeline, plots
from facial_emotion.errors import EXIT_INTERRUPTED
from facial_emotion.pipeline import Classifier, Face, Pipeline, Result
from facial_emotion.annotation import AnnotateSink
from facial_emotion.outputs import Run

ASTRONAUT = PROJECT_DIR / "tests" / "data" / "astronaut.jpg"
CLASSES = ["angry", "happy", "sad"]
LONG_STEM = "n" * 245  # fits in a file name (255 bytes); with "_annotated.mp4" added it does not


def run_predict(*args):
    return subprocess.run([sys.executable, "predict.py", *map(str, args)], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=300)


def sample_faces(emotion, count):
    return sorted((SAMPLE_DIR / "validation" / emotion).iterdir())[:count]


def make_video(path, frames, side=64, fps=10, fourcc="MJPG"):
    """Real FER-2013 faces, happy and sad in turn, as whole frames."""
    import cv2

    faces = [np.asarray(Image.open(face).convert("RGB").resize((side, side)))
             for face in (*sample_faces("happy", 1), *sample_faces("sad", 1))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (side, side))
    for index in range(frames):
        writer.write(cv2.cvtColor(faces[index % 2], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def png_declaring(path, width, height, complete=True):
    """A 1-bit PNG of one colour declaring width x height. Complete: every row is there, a real
    decompression bomb of a few hundred kilobytes; otherwise the first rows only."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte, then 8 pixels a byte
    rows, compressor = (height if complete else 8), zlib.compressobj(6)
    data = b"".join(compressor.compress(row * min(1000, rows - start)) for start in range(0, rows, 1000))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data + compressor.flush())
                     + chunk(b"IEND", b""))
    return path


def read_rows(table):
    with open(table, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# Hostile inputs: one command-line run over all of them, then one test per claim.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    happy, sad = sample_faces("happy", 3), sample_faces("sad", 9)
    frames = [Image.open(path) for path in happy]  # mode L: GIF keeps gray levels exactly
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(root / "first_frame.png")
    Image.open(sad[0]).save(root / "png_named.jpg", format="PNG")
    Image.open(sad[1]).save(root / "smile\nface.png")
    Image.open(sad[2]).resize((16, 16)).save(root / "sixteen.png")
    Image.new("L", (1, 1), 128).save(root / "one_pixel.png")
    Image.new("L", (40, 15), 128).save(root / "thin.png")
    png_declaring(root / "bomb.png", 30000, 30000)
    png_declaring(root / "too_big.png", 10001, 10000, complete=False)  # just over 100 MP
    make_video(root / "zero_frames.mp4", 0, fourcc="mp4v")
    make_video(root / "zero_frames.avi", 0)
    (root / "empty.mp4").write_bytes(b"")
    (root / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    many = root / "many"
    many.mkdir()
    for index, face in enumerate(sad):
        Image.open(face).save(many / f"{index + (index >= 4):02d}.png")
    (many / "04.png").write_bytes(Image.open(sad[0]).tobytes()[:500])  # raw pixels, no image header
    inputs = ["animated.gif", "first_frame.png", "png_named.jpg", "smile\nface.png", "sixteen.png",
              "one_pixel.png", "thin.png", "bomb.png", "too_big.png", "zero_frames.mp4", "zero_frames.avi",
              "empty.mp4", "noise.mp4", "many"]
    result = run_predict(*(root / name for name in inputs), "--csv", root / "out.csv", "--plot", root / "counts.png")
    return {"root": root, "result": result, "out": result.stdout.splitlines(), "err": result.stderr.splitlines(),
            "rows": read_rows(root / "out.csv")}


def error_for(hostile, name):
    [line] = [line for line in hostile["err"] if name in line]
    return line


def test_hostile_batch_goes_on_with_one_line_per_bad_file_and_exit_1(hostile):
    assert hostile["result"].returncode == 1
    assert "Traceback" not in hostile["result"].stderr
    bad = ["one_pixel.png", "thin.png", "bomb.png", "too_big.png", "zero_frames.mp4", "zero_frames.avi",
           "empty.mp4", "noise.mp4", "04.png"]
    # No FFmpeg line ("moov atom not found"), no Python warning: exactly one line per bad file.
    assert len(hostile["err"]) == len(bad), hostile["err"]
    assert all(line.startswith("error: ") for line in hostile["err"])
    assert all(sum(name in line for line in hostile["err"]) == 1 for name in bad)
    assert len(hostile["out"]) == len(hostile["rows"]) == 14  # 5 images, 9 in the folder less 1: one face each


@pytest.mark.parametrize("name, message", [
    ("zero_frames.mp4", "not a video file OpenCV can read"),
    ("zero_frames.avi", "no frames could be read"),
    ("empty.mp4", "not a video file OpenCV can read"),
    ("noise.mp4", "not a video file OpenCV can read"),
    ("one_pixel.png", "too small to hold a face (1x1 pixels)"),
    ("thin.png", "too small to hold a face (40x15 pixels)"),
    ("bomb.png", "refused"),  # Pillow's own limit (its error): before any pixel is decoded
    ("too_big.png", "refused"),  # over the project's 100 MP, which Pillow's own guard is set to
    ("04.png", "not an image file Pillow can read"),
])
def test_each_bad_file_gets_its_own_clear_line(hostile, name, message):
    line = error_for(hostile, name)
    assert line.startswith(f"error: {hostile['root']}/") and message in line


def test_an_animated_gif_is_its_first_frame(hostile):
    root = hostile["root"]
    gif, first = ([row for row in hostile["rows"] if row["file"] == str(root / name)]
                  for name in ("animated.gif", "first_frame.png"))
    assert len(gif) == 1 and {k: v for k, v in gif[0].items() if k != "file"} == \
        {k: v for k, v in first[0].items() if k != "file"}


def test_content_not_extension_decides_and_sixteen_pixels_is_enough(hostile):
    root = hostile["root"]
    for name in ("png_named.jpg", "sixteen.png"):
        [line] = [line for line in hostile["out"] if line.startswith(f"{root / name}: ")]
        assert line.endswith("%)")
    [row] = [row for row in hostile["rows"] if row["file"] == str(root / "sixteen.png")]
    assert (row["x"], row["y"], row["w"], row["h"]) == ("0", "0", "16", "16")  # taken whole


def test_a_newline_in_a_file_name_keeps_one_line_per_result_and_a_valid_csv(hostile):
    shown = str(hostile["root"] / "smile\nface.png").replace("\n", "\\n")
    assert sum(line.startswith(f"{shown}: ") for line in hostile["out"]) == 1
    assert sum(row["file"] == str(hostile["root"] / "smile\nface.png") for row in hostile["rows"]) == 1


def test_a_folder_with_an_unreadable_file_in_the_middle_predicts_all_the_others(hostile):
    many = hostile["root"] / "many"
    predicted = [row["file"] for row in hostile["rows"] if row["file"].startswith(str(many))]
    assert predicted == [str(many / f"{index:02d}.png") for index in range(10) if index != 4]


def test_the_image_plot_is_a_real_picture(hostile):
    with Image.open(hostile["root"] / "counts.png") as plot:
        assert plot.format == "PNG" and 600 <= plot.width <= 2000 and 300 <= plot.height <= 1200


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def face(box, emotion, scores=None, person=None):
    scores = scores or {name: (0.8 if name == emotion else 0.1) for name in CLASSES}
    return Face(box, emotion, scores[emotion], scores, person)


def test_emotion_counts_cover_every_class_and_only_image_faces():
    results = [
        Result("a.jpg", [face([0, 0, 9, 9], "happy"), face([20, 0, 5, 5], "sad")]),
        Result("b.jpg", [face([0, 0, 9, 9], "happy")]),
        Result("bad.jpg", error="bad.jpg: broken image"),
        Result("clip.mp4", [face([0, 0, 9, 9], "angry")], video=True, frame=0, time=0.0),
    ]
    assert plots.emotion_counts(results, CLASSES) == {"angry": 0, "happy": 2, "sad": 1}


def test_emotion_timeline_follows_the_main_face_of_the_first_video():
    results = [Result("a.jpg", [face([0, 0, 9, 9], "angry")])]
    for index, emotion in enumerate(["happy", None, "sad", "happy"]):
        faces = [] if emotion is None else [face([0, 0, 50, 50], emotion), face([60, 0, 10, 10], "angry")]
        results.append(Result("clip.mp4", faces, video=True, frame=2 * index, time=0.2 * index))
    results.append(Result("other.mp4", [face([0, 0, 9, 9], "angry")], video=True, frame=0, time=0.0))
    video = plots.first_video(results)
    assert [(result.file, result.frame) for result in video] == [("clip.mp4", 0), ("clip.mp4", 2), ("clip.mp4", 4),
                                                                  ("clip.mp4", 6)]
    # Without tracks the largest face of each frame is the one person followed.
    [timeline] = plots.person_timelines(video, CLASSES)
    np.testing.assert_allclose(timeline["time"], [0, 0.2, 0.4, 0.6])
    np.testing.assert_allclose(timeline["scores"]["happy"], [0.8, np.nan, 0.1, 0.8])
    # "led": the share of the frames with the person that each emotion led; "present": of all frames.
    assert timeline["led"] == pytest.approx({"angry": 0, "happy": 2 / 3, "sad": 1 / 3})
    assert timeline["present"] == 0.75
    smoothed = plots.smooth(timeline["scores"]["happy"], timeline["time"], seconds=0.6)
    np.testing.assert_allclose(smoothed, [0.8, np.nan, 0.45, 0.45])  # 3-frame window; the gap stays
    assert plots.first_video(results[:1]) == [] and plots.person_timelines([], CLASSES) == []


def test_each_tracked_person_gets_a_timeline_of_their_own():
    results = []
    for index in range(20):
        faces = [face([0, 0, 50, 50], "happy", person=7)]
        if index < 10:
            faces.append(face([60, 0, 40, 40], "sad", person=3))
        if index == 0:
            faces.append(face([120, 0, 20, 20], "angry", person=9))  # a passer-by: in 1 frame of 20
        results.append(Result("clip.mp4", faces, video=True, frame=index, time=index / 10))
    timelines = plots.person_timelines(plots.first_video(results), CLASSES)
    assert [(timeline["person"], timeline["present"]) for timeline in timelines] == [(7, 1.0), (3, 0.5)]
    assert timelines[0]["led"]["happy"] == 1.0 and timelines[1]["led"]["sad"] == 1.0
    sad = timelines[1]["scores"]["sad"]
    assert np.isnan(sad[10:]).all() and not np.isnan(sad[:10]).any(), "gaps where the person is absent"


def test_plot_refuses_to_overwrite_and_needs_its_folder_before_any_work(tmp_path):
    image = sample_faces("happy", 1)[0]
    mine, table = tmp_path / "mine.png", tmp_path / "table.csv"
    mine.write_bytes(b"precious")
    missing = tmp_path / "nowhere" / "plot.png"
    for plot, message in [(mine, f"{mine}: already exists; choose another --plot file"),
                          (missing, f"{missing}: folder {missing.parent} does not exist"),
                          (tmp_path / "plot.txt", f"{tmp_path / 'plot.txt'}: name the --plot file .png, .pdf, .svg, .jpg, .jpeg")]:
        result = run_predict(image, "--plot", plot, "--csv", table)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip() == f"error: {message}"
        assert not table.exists(), "refused before any work"
    assert mine.read_bytes() == b"precious"


def test_video_plot_csv_and_annotated_copies_that_cannot_be_written(tmp_path):
    import cv2

    clip = make_video(tmp_path / "clip.avi", 10)
    long_video = make_video(tmp_path / f"{LONG_STEM}.avi", 3)
    long_image = tmp_path / f"{LONG_STEM}.png"
    Image.open(sample_faces("sad", 1)[0]).save(long_image)
    out, table, plot = tmp_path / "out", tmp_path / "table.csv", tmp_path / "timeline.png"
    result = run_predict(clip, long_video, long_image, "--annotate", out, "--csv", table, "--plot", plot)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    video_error, image_error = result.stderr.splitlines()
    assert video_error.startswith(f"error: {out / LONG_STEM}_annotated.mp4: cannot write annotated video")
    assert image_error == f"error: {out / LONG_STEM}_annotated.png: cannot write annotated image (File name too long)"
    assert not [path for path in out.iterdir() if LONG_STEM in path.name], "no empty file left behind"
    lines = result.stdout.splitlines()  # a copy that cannot be written stops no other output
    assert len(lines) == 14 and lines[0].startswith(f"{clip} [frame 0, 0.00s]: ")
    assert [row["frame"] for row in read_rows(table)] == [str(index) for index in [*range(10), *range(3)]] + [""]
    annotated = cv2.VideoCapture(str(out / "clip_annotated.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    annotated.release()
    with Image.open(plot) as picture:
        assert picture.format == "PNG" and 600 <= picture.width <= 2000 and 300 <= picture.height <= 1200


# ---------------------------------------------------------------------------------------------
# Interruptions, streaming, memory, webcam
# ---------------------------------------------------------------------------------------------
def test_sigterm_during_a_folder_keeps_the_rows_done(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(200):
        (folder / f"{index:03d}.jpg").symlink_to(ASTRONAUT)  # one face each; detection takes a while
    table = tmp_path / "out.csv"
    process = subprocess.Popen([sys.executable, "predict.py", str(folder), "--csv", str(table)], cwd=PROJECT_DIR,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # streamed: it comes long before the last photo is done
    process.send_signal(signal.SIGTERM)
    rest, err = process.stdout.read(), process.stderr.read()  # not communicate(): it skips readline's buffer
    process.wait(timeout=120)
    lines = [first.rstrip("\n"), *rest.splitlines()]
    assert first and process.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    done = len(lines)
    assert 0 < done < 200
    assert err.splitlines() == [f"interrupted after {done} of 200 files; results so far are in {table}"]
    assert [row["file"] for row in read_rows(table)] == [str(folder / f"{index:03d}.jpg") for index in range(done)]


class FixedModel:
    """Stands in for the Keras model: every face scores happy 0.7. `on_call(n)` runs on the nth call."""

    output_shape = (None, len(CLASSES))

    def __init__(self, on_call=None):
        self.calls, self.on_call = 0, on_call

    def __call__(self, batch, training=False):
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return np.tile(np.float32([0.2, 0.7, 0.1]), (len(batch), 1))


def use_model(monkeypatch, model):
    monkeypatch.setattr(predict_cli, "load_model", lambda *args, **kwargs: (model, {"class_names": CLASSES}))


def test_ctrl_c_during_a_video_keeps_the_frames_done_and_prints_their_json(tmp_path, monkeypatch, capsys):
    video = make_video(tmp_path / "clip.avi", 8)
    use_model(monkeypatch, FixedModel(on_call=lambda calls: calls == 3 and os.kill(os.getpid(), signal.SIGINT)))
    table = tmp_path / "out.csv"
    status = predict.main([str(video), "--csv", str(table), "--json"])
    captured = capsys.readouterr()
    assert status == EXIT_INTERRUPTED
    assert captured.err.strip() == f"interrupted after 3 of 8 frames of {video}; results so far are in {table}"
    assert [result["frame"] for result in json.loads(captured.out)] == [0, 1, 2]
    assert [row["frame"] for row in read_rows(table)] == ["0", "1", "2"]


def test_annotation_holds_a_bounded_number_of_images_whatever_the_batch(tmp_path, monkeypatch):
    paths = []
    for index in range(30):
        paths.append(tmp_path / f"{index:02d}.png")
        Image.open(sample_faces("happy", 30)[index]).resize((120, 120)).save(paths[-1])
    reads = [0]
    read_image = pipeline.read_image

    def counted(path):
        reads[0] += 1
        return read_image(path)

    monkeypatch.setattr(pipeline, "read_image", counted)
    monkeypatch.setattr(pipeline, "MAX_PIXELS_HELD", 3 * 120 * 120)
    out = tmp_path / "out"
    out.mkdir()
    classifier = Classifier(FixedModel(), {"class_names": CLASSES})
    sink, results, most = AnnotateSink(out, Run(CLASSES)), [], 0
    for result in Pipeline(classifier, None).images(paths, pictures=True):
        most = max(most, reads[0] - len(results))  # pictures read and not yet handed over
        assert result.picture.shape == (120, 120, 3)
        assert sink.add(result) is None
        result.picture = None
        results.append(result)
    assert 1 <= most <= 4, f"{most} full images held at once"
    assert [result.annotated for result in results] == [str(out / f"{index:02d}_annotated.png") for index in range(30)]
    assert all(path.is_file() for path in out.iterdir()) and len(list(out.iterdir())) == 30


def test_webcam_on_a_build_without_windows_is_one_line(monkeypatch, capsys):
    import cv2

    frame = cv2.cvtColor(np.asarray(Image.open(sample_faces("happy", 1)[0]).resize((64, 64))), cv2.COLOR_GRAY2BGR)

    class Camera:
        def __init__(self, index):
            self.left = 3

        def isOpened(self):
            return True

        def read(self):
            self.left -= 1
            return (True, frame.copy()) if self.left >= 0 else (False, None)

        def release(self):
            pass

    def no_windows(*args):  # what opencv-python-headless does
        raise cv2.error("The function is not implemented. Rebuild the library with GUI support")

    use_model(monkeypatch, FixedModel())
    monkeypatch.setattr(cv2, "VideoCapture", Camera)
    for name in ("imshow", "waitKey", "destroyAllWindows"):
        monkeypatch.setattr(cv2, name, no_windows)
    assert predict.main(["--webcam"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --webcam needs an OpenCV build with windows")
