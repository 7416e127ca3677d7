"""Image loading, class folders and the training/prediction parity."""

import io

import numpy as np
import pytest
from PIL import Image

import emotion_recognition as er
from conftest import SAMPLE_DIR, copy_sample
from facial_emotion import images
from facial_emotion.detection import FaceDetector
from facial_emotion.pipeline import Classifier, Pipeline


def first_sample(split="validation", name="happy"):
    return sorted((SAMPLE_DIR / split / name).iterdir())[0]


class RecordingModel:
    """Stands in for a Keras model: records what prediction feeds it, answers uniform scores."""

    def __init__(self, classes):
        self.classes = classes
        self.seen = []

    def __call__(self, batch, training=False):
        self.seen.append(np.array(batch))
        return np.full((len(batch), self.classes), 1.0 / self.classes, dtype=np.float32)


def test_training_batches_and_predict_give_the_same_input_array(tmp_path):
    # One colour image larger than 48x48 per class, so the resize is compared too: through the
    # training loader and its (un-augmented) batches, and through predict.py.
    rng = np.random.default_rng(0)
    files = []
    for name in ("happy", "sad"):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        files.append(folder / "face.png")
        Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), "RGB").save(files[-1])
    x, y, listed = er.load_split(tmp_path / "train", ["happy", "sad"])
    assert listed == [str(path) for path in files]
    batch_x, batch_y = next(er.augmented_batches(x, y, None, batch_size=2, seed=0, augment=False))
    assert sorted(batch_y.tolist()) == [0, 1], "integer labels, one face of each class"
    model = RecordingModel(2)
    classifier = Classifier(model, {"class_names": ["happy", "sad"]})
    results = list(Pipeline(classifier, FaceDetector("haar")).images(files))
    assert [result.file for result in results] == [str(path) for path in files]
    assert all(result.error is None and len(result.faces) == 1 for result in results)
    seen = np.concatenate(model.seen)  # the faces in the order prediction classified them
    assert len(seen) == 2
    for index in range(2):
        label = int(batch_y[index])
        np.testing.assert_array_equal(batch_x[index], x[label])
        np.testing.assert_array_equal(seen[label], x[label])
    assert x[0].shape == (48, 48, 1) and x.dtype == np.float32
    assert x.max() > 1.0, "pixels stay 0..255: scaling is the model's Rescaling layer"


def test_training_reads_every_image_type_prediction_reads_and_counts_the_same_files(tmp_path):
    data = copy_sample(tmp_path / "data", train_per_class=2)
    face = Image.open(first_sample())
    (data / "train" / "happy" / "nested").mkdir()
    for name in ("a.webp", "b.gif", "c.pgm", "nested/d.png"):
        face.save(data / "train" / "happy" / name)
    x, _, files = er.load_split(data / "train", ["happy", "sad"])
    assert len(x) == 2 + 4 + 2 and len(files) == len(x)
    assert all(images.is_image_file(path) for path in files)
    assert len(er.list_images(data / "train" / "happy")) == 6


def test_colour_photo_is_loaded_as_grayscale_48x48(tmp_path):
    path = tmp_path / "colour.png"
    Image.new("RGB", (120, 90), (200, 30, 30)).save(path)
    face = images.load_face(path)
    assert face.shape == (48, 48, 1)
    expected = np.asarray(Image.new("RGB", (1, 1), (200, 30, 30)).convert("L"))[0, 0]
    assert np.all(face == expected)


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_every_common_image_mode_loads(tmp_path, mode):
    base = Image.open(first_sample()).convert("RGB").resize((64, 64))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert image.mode.startswith("I;16")
        suffix = ".png"
    elif mode == "CMYK":
        image, suffix = base.convert("CMYK"), ".jpg"
    else:
        image, suffix = base.convert(mode), ".png"
    path = tmp_path / f"face{suffix}"
    image.save(path)
    face = images.load_face(path)
    assert face.shape == (48, 48, 1)
    if mode in ("I;16", "RGBA", "P", "LA"):
        # Same picture as the 8-bit original, give or take rounding and the palette.
        reference = images.preprocess_face(base.convert("L"))
        assert np.abs(face - reference).mean() < 12


def test_exif_orientation_is_applied(tmp_path):
    # A 60x30 image whose left half is black, stored with "rotate 90" in EXIF: upright it is
    # 30 wide and 60 tall, black on top or bottom, not left.
    pixels = np.full((30, 60), 255, dtype=np.uint8)
    pixels[:, :30] = 0
    image = Image.fromarray(pixels, "L")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    upright = images.read_image(path)
    assert upright.size == (30, 60)
    array = np.asarray(upright, dtype=float)
    assert abs(array[:30].mean() - array[30:].mean()) > 200


def test_class_names_come_from_sorted_folder_names(tmp_path):
    data = copy_sample(tmp_path / "data", classes=("surprise", "angry", "neutral"))
    assert er.check_class_folders(data / "train") == ["angry", "neutral", "surprise"]


def test_test_folder_is_accepted_in_place_of_validation(tmp_path):
    data = copy_sample(tmp_path / "data", validation_name="test")
    assert er.find_splits(data) == (data / "train", data / "test")


def test_broken_image_in_class_folder_is_skipped_with_a_warning(tmp_path, capsys):
    data = copy_sample(tmp_path / "data", train_per_class=3)
    (data / "train" / "happy" / "broken.jpg").write_bytes(b"not really a jpeg")
    x, y, files = er.load_split(data / "train", ["happy", "sad"], log=print)
    assert len(x) == 6
    assert "broken.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no such data folder"),
    (lambda d: (d / "validation").mkdir(parents=True), "has no train/ folder"),
    (lambda d: (d / "train" / "happy").mkdir(parents=True), "has no validation/ or test/"),
])
def test_bad_data_folder_layouts_are_reported(tmp_path, setup, message):
    data = tmp_path / "data"
    setup(data)
    with pytest.raises(er.UserError, match=message):
        er.find_splits(data)


def test_empty_class_folder_and_mismatched_classes_are_reported(tmp_path):
    data = copy_sample(tmp_path / "data")
    (data / "train" / "fear").mkdir()
    with pytest.raises(er.UserError, match="fear: holds 0 images"):
        er.check_class_folders(data / "train")
    for path in (data / "train" / "fear").iterdir():
        path.unlink()
    (data / "train" / "fear").rmdir()
    (data / "validation" / "fear").mkdir()
    (data / "validation" / "fear" / "x.jpg").write_bytes(first_sample().read_bytes())
    with pytest.raises(er.UserError, match=r"classes differ from train/ \(extra fear\)"):
        er.check_class_folders(data / "validation", ["happy", "sad"])


def test_load_face_errors_name_the_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(er.UserError, match="notes.jpg: not an image"):
        images.load_face(text)
    with pytest.raises(er.UserError, match="missing.png: no such file"):
        images.load_face(tmp_path / "missing.png")
    truncated = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.open(first_sample()).resize((200, 200)).save(buffer, "JPEG")
    truncated.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(er.UserError, match="cut.jpg"):
        images.load_face(truncated)
