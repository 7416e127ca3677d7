"""Kaggle's fer2013.csv as class folders: Training -> train/, PublicTest -> validation/,
PrivateTest -> test/.

    python emotion_recognition.py --import-csv fer2013.csv --data-dir fer2013
"""

import csv
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facial_emotion.errors import UserError
from facial_emotion.files import create_new_file, describe_oserror, holds_files, remove_quietly
from facial_emotion.images import IMAGE_SIZE

# Kaggle's fer2013.csv label order (emotion column 0..6) and its Usage column -> split folders.
FER2013_CSV_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_CSV_SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
# A pixels field is 2,304 numbers of up to 3 digits: about 9 KB. Python's csv module refuses
# fields over 128 KB with an error of its own; 64 KB says "not this file" in our words first.
MAX_FIELD_CHARACTERS = 65_536


def import_fer2013_csv(csv_path, output_dir, overwrite=False, log=print):
    """Write fer2013.csv's images as PNG class folders under `output_dir`; returns {split: count}.
    Every row is checked first, so a bad file writes nothing."""
    csv_path, output_dir = Path(csv_path), Path(output_dir)
    if not os.path.isfile(csv_path):
        raise UserError(f"{csv_path}: no such CSV file")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"{output_dir}: exists and is not a folder")
    rows = read_rows(csv_path)
    if os.path.isdir(output_dir) and holds_files(output_dir) and not overwrite:
        raise UserError(f"{output_dir}: already holds files; choose an empty folder or pass --overwrite")
    counts, written = {}, []
    try:
        for index, (label, pixels, split) in enumerate(rows):
            folder = output_dir / split / FER2013_CSV_CLASSES[label]
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"{folder}: cannot create ({describe_oserror(error)})") from None
            image = Image.fromarray(pixels, "L")
            written.append(create_new_file(folder / f"{split}_{index:05d}.png",
                                           lambda partial: image.save(partial, format="PNG"), "--data-dir"))
            counts[split] = counts.get(split, 0) + 1
    except BaseException:  # a full disk, Ctrl-C: the images this import wrote go too, so a rerun starts clean
        for path in written:
            remove_quietly(path)
        raise
    log(f"wrote {len(rows)} images to {output_dir}: "
        + ", ".join(f"{split} {count}" for split, count in sorted(counts.items())))
    return counts


def read_rows(csv_path):
    """Every row of the CSV as (label, 48x48 uint8 pixels, split folder), checked."""
    rows = []
    previous_limit = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD_CHARACTERS)
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))} "
                                "(expected emotion, pixels, Usage)")
            for line, row in enumerate(reader, start=2):
                rows.append(parse_row(csv_path, line, row))
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not a text CSV file") from None
    except csv.Error as error:
        raise UserError(f"{csv_path}: not a FER-2013 CSV file ({error})") from None
    finally:
        csv.field_size_limit(previous_limit)
    if not rows:
        raise UserError(f"{csv_path}: holds no images")
    return rows


def parse_row(csv_path, line, row):
    try:
        if len((row["emotion"] or "").strip()) > 3:  # a huge integer is no label 0..6
            raise ValueError
        label = int(row["emotion"])
        values = (row["pixels"] or "").split()
        if any(len(value) > 3 for value in values):  # "1e999" or a 4,000-digit integer: not a pixel
            raise ValueError
        pixels = np.array(values, dtype=np.int64)
    except (ValueError, AttributeError, TypeError):
        raise UserError(f"{csv_path}:{line}: emotion and pixels must be numbers") from None
    if not 0 <= label < len(FER2013_CSV_CLASSES):
        raise UserError(f"{csv_path}:{line}: emotion {label} is not 0..6")
    if pixels.size != IMAGE_SIZE[0] * IMAGE_SIZE[1] or pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"{csv_path}:{line}: pixels must be {IMAGE_SIZE[0] * IMAGE_SIZE[1]} values 0..255")
    split = FER2013_CSV_SPLITS.get((row.get("Usage") or "").strip())
    if split is None:
        raise UserError(f"{csv_path}:{line}: Usage {str(row.get('Usage'))[:40]!r} is not one of "
                        f"{', '.join(FER2013_CSV_SPLITS)}")
    return label, pixels.reshape(IMAGE_SIZE).astype(np.uint8), split


if __name__ == "__main__":
    sys.exit("use: python emotion_recognition.py --import-csv fer2013.csv --data-dir FOLDER")
