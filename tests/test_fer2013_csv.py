"""Kaggle's fer2013.csv imported as class folders: every rule of a row, every message, the counts
and the log line, checked on the importer itself (test_cli.py runs it through the command line)."""

import re

import numpy as np
import pytest
from PIL import Image

from facial_emotion import fer2013_csv
from facial_emotion.errors import UserError
from facial_emotion.fer2013_csv import import_fer2013_csv, parse_row, read_rows

GREY = " ".join(["7"] * (48 * 48))


def write_csv(path, rows, header="emotion,pixels,Usage"):
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return path


def pixels_of(values):
    return " ".join(map(str, values))


def refused(csv_path, message):
    """The UserError read_rows raises on csv_path, whose message must be exactly `message`."""
    with pytest.raises(UserError) as caught:
        read_rows(csv_path)
    assert str(caught.value) == message


def test_every_split_and_label_lands_in_its_folder_with_its_pixels_counted_and_logged(tmp_path):
    rng = np.random.default_rng(3)
    faces = [rng.integers(0, 256, 48 * 48) for _ in range(5)]
    rows = [(3, pixels_of(faces[0]), "Training"), (6, pixels_of(faces[1]), "PublicTest"),
            (0, pixels_of(faces[2]), "Training"), (5, pixels_of(faces[3]), "PrivateTest"),
            (3, pixels_of(faces[4]), "Training")]
    lines = []
    counts = import_fer2013_csv(write_csv(tmp_path / "fer.csv", rows), tmp_path / "out", log=lines.append)
    assert counts == {"train": 3, "validation": 1, "test": 1}
    assert lines == [f"wrote 5 images to {tmp_path / 'out'}: test 1, train 3, validation 1"]
    expected = {"train/happy/train_00000.png": 0, "validation/neutral/validation_00001.png": 1,
                "train/angry/train_00002.png": 2, "test/surprise/test_00003.png": 3,
                "train/happy/train_00004.png": 4}
    written = sorted(str(path.relative_to(tmp_path / "out")) for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert written == sorted(expected)
    for name, index in expected.items():
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (48, 48)
            np.testing.assert_array_equal(np.asarray(image).ravel(), faces[index])


def test_a_folder_with_files_is_refused_unless_overwrite_is_asked(tmp_path):
    table = write_csv(tmp_path / "fer.csv", [(2, GREY, "Training")])
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as caught:
        import_fer2013_csv(table, output, log=lambda line: None)
    assert str(caught.value) == f"{output}: already holds files; choose an empty folder or pass --overwrite"
    assert import_fer2013_csv(table, output, overwrite=True, log=lambda line: None) == {"train": 1}
    assert (output / "notes.txt").read_text() == "mine"


def test_a_missing_csv_and_an_output_that_is_a_file_are_named(tmp_path):
    with pytest.raises(UserError) as caught:
        import_fer2013_csv(tmp_path / "none.csv", tmp_path / "out")
    assert str(caught.value) == f"{tmp_path / 'none.csv'}: no such CSV file"
    table = write_csv(tmp_path / "fer.csv", [(2, GREY, "Training")])
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError) as caught:
        import_fer2013_csv(table, tmp_path / "a-file")
    assert str(caught.value) == f"{tmp_path / 'a-file'}: exists and is not a folder"


def test_a_class_folder_that_cannot_be_made_is_named_with_the_reason(tmp_path):
    table = write_csv(tmp_path / "fer.csv", [(2, GREY, "Training")])
    output = tmp_path / "out"
    (output / "train").mkdir(parents=True)
    (output / "train" / "fear").write_text("a file where the class folder goes")
    with pytest.raises(UserError) as caught:
        import_fer2013_csv(table, output, overwrite=True)
    assert str(caught.value) == f"{output / 'train' / 'fear'}: cannot create (File exists)"


def test_an_image_name_taken_names_the_data_dir_flag(tmp_path, monkeypatch):
    table = write_csv(tmp_path / "fer.csv", [(2, GREY, "Training")])
    output = tmp_path / "out"
    real = fer2013_csv.create_new_file

    def taken_meanwhile(path, write, what="file", renumber=False):
        path.write_bytes(b"made by someone else")
        return real(path, write, what, renumber)

    monkeypatch.setattr(fer2013_csv, "create_new_file", taken_meanwhile)
    with pytest.raises(UserError) as caught:
        import_fer2013_csv(table, output)
    assert str(caught.value) == f"{output / 'train' / 'fear' / 'train_00000.png'}: already exists; choose another --data-dir"


@pytest.mark.parametrize("header, missing", [("emotion,Usage", "pixels"), ("pixels", "Usage, emotion"),
                                             ("Emotion,Pixels,usage", "Usage, emotion, pixels")])
def test_missing_columns_are_listed_in_order(tmp_path, header, missing):
    table = tmp_path / "fer.csv"
    table.write_text(header + "\n1,2,3\n")
    refused(table, f"{table}: missing column(s) {missing} (expected emotion, pixels, Usage)")


def test_a_binary_file_an_empty_table_and_a_huge_field_are_refused(tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"emotion,pixels,Usage\n\xff\xfe\x00\x81,\x9f\n")
    refused(binary, f"{binary}: not a text CSV file")
    empty = write_csv(tmp_path / "empty.csv", [])
    refused(empty, f"{empty}: holds no images")
    huge = tmp_path / "huge.csv"
    huge.write_text("emotion,pixels,Usage\n1,\"" + "1 " * 40_000 + "\",Training\n")
    with pytest.raises(UserError, match=re.escape(f"{huge}: not a FER-2013 CSV file (field larger than field limit")):
        read_rows(huge)


def row(emotion="2", pixels=GREY, usage="Training"):
    return {"emotion": emotion, "pixels": pixels, "Usage": usage}


@pytest.mark.parametrize("emotion, label", [("0", 0), ("6", 6), (" 4 ", 4), ("006", 6)])
def test_labels_0_to_6_of_up_to_three_digits_are_read(emotion, label):
    assert parse_row("t.csv", 2, row(emotion=emotion))[0] == label


@pytest.mark.parametrize("emotion", ["0006", "1" * 4000, "x", "", None, "2.0"])
def test_labels_that_are_not_short_whole_numbers_are_refused(emotion):
    with pytest.raises(UserError) as caught:
        parse_row("t.csv", 9, row(emotion=emotion))
    assert str(caught.value) == "t.csv:9: emotion and pixels must be numbers"


@pytest.mark.parametrize("emotion", ["7", "-1"])
def test_labels_outside_0_to_6_are_refused(emotion):
    with pytest.raises(UserError) as caught:
        parse_row("t.csv", 4, row(emotion=emotion))
    assert str(caught.value) == f"t.csv:4: emotion {emotion} is not 0..6"


def test_pixels_are_2304_values_0_to_255_in_rows_of_48():
    values = np.arange(48 * 48) % 256
    label, pixels, split = parse_row("t.csv", 2, row(emotion="5", pixels=pixels_of(values), usage=" PublicTest "))
    assert (label, split, pixels.dtype, pixels.shape) == (5, "validation", np.uint8, (48, 48))
    np.testing.assert_array_equal(pixels[1], values[48:96])
    assert parse_row("t.csv", 2, row(usage="PrivateTest"))[2] == "test"


@pytest.mark.parametrize("pixels", [
    pixels_of([7] * 2303), pixels_of([7] * 2305), "", None,
    pixels_of([256] + [7] * 2303), pixels_of([-1] + [7] * 2303), pixels_of([300] * 2304)])
def test_pixels_of_another_count_or_outside_0_to_255_are_refused(pixels):
    with pytest.raises(UserError) as caught:
        parse_row("t.csv", 3, row(pixels=pixels))
    assert str(caught.value) == "t.csv:3: pixels must be 2304 values 0..255"


@pytest.mark.parametrize("value", ["0255", "1e99", "7.5", "x"])
def test_a_pixel_longer_than_three_characters_or_not_a_number_is_refused(value):
    with pytest.raises(UserError) as caught:
        parse_row("t.csv", 3, row(pixels=pixels_of([value] + [7] * 2303)))
    assert str(caught.value) == "t.csv:3: emotion and pixels must be numbers"


@pytest.mark.parametrize("usage, shown", [("Validation", "'Validation'"), ("", "''"), (None, "'None'"),
                                          ("x" * 100, repr("x" * 40))])
def test_an_unknown_usage_is_quoted_and_the_known_ones_listed(usage, shown):
    with pytest.raises(UserError) as caught:
        parse_row("t.csv", 5, row(usage=usage))
    assert str(caught.value) == f"t.csv:5: Usage {shown} is not one of Training, PublicTest, PrivateTest"


def test_a_bad_row_is_named_by_its_line_in_the_file(tmp_path):
    table = write_csv(tmp_path / "fer.csv", [(2, GREY, "Training"), (9, GREY, "Training")])
    refused(table, f"{table}:3: emotion 9 is not 0..6")


def test_a_failed_import_takes_back_the_images_it_wrote(tmp_path, monkeypatch):
    table = write_csv(tmp_path / "fer.csv", [(2, GREY, "Training")] * 4)
    real, calls = fer2013_csv.create_new_file, []

    def full_disk_at_the_third(path, write, what="file", renumber=False):
        calls.append(path)
        if len(calls) == 3:
            raise UserError(f"{path}: cannot write {what} (No space left on device)")
        return real(path, write, what, renumber)

    monkeypatch.setattr(fer2013_csv, "create_new_file", full_disk_at_the_third)
    with pytest.raises(UserError, match="No space left"):
        import_fer2013_csv(table, tmp_path / "out")
    assert len(calls) == 3 and not any(path.is_file() for path in (tmp_path / "out").rglob("*"))
