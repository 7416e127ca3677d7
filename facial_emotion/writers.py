"""Where results go: one writer per output format (text lines, JSON, CSV), annotated copies of
photos and videos, and the `Outputs` that feeds them as results come."""

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facial_emotion.errors import UserError, one_line
from facial_emotion.files import create_new_file, describe_oserror, give_name, remove_quietly, temporary_path
from facial_emotion.images import to_rgb
from facial_emotion.video import VideoWriter

# --csv: one row per face per image or frame; every class's score follows these columns.
CSV_COLUMNS = ["file", "frame", "time", "person", "x", "y", "w", "h", "emotion", "confidence"]
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"): such text cells get a leading apostrophe, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def emit(line, stream):
    """A line on stdout or stderr, past the progress bar if one is showing, flushed at once."""
    from tqdm import tqdm

    tqdm.write(line, file=stream)
    stream.flush()


def print_note(message):
    """One line on stderr (escaped, see one_line)."""
    try:
        emit(one_line(message), sys.stderr)
    except (OSError, ValueError, AttributeError):  # stderr closed or full: nowhere left to say it
        pass


def print_error(message):
    print_note(f"error: {message}")


def format_result(result, top_k=1):
    """One line: the file (and frame), then each face's top_k emotions, highest first."""
    prefix = one_line(result.file) + (f" [frame {result.frame}, {result.time:.2f}s]" if result.frame is not None else "")
    if not result.faces:
        return f"{prefix}: no face found"
    parts = []
    for face in result.faces:
        ranked = sorted(face.scores.items(), key=lambda item: -item[1])[:top_k]
        who = f" person {face.person}" if face.person is not None else ""
        parts.append(", ".join(f"{one_line(name)} ({score:.1%})" for name, score in ranked)
                     + (f" at {face.box}{who}" if len(result.faces) > 1 or who else ""))
    return f"{prefix}: " + "; ".join(parts)


def spreadsheet_safe(text):
    """A text cell a spreadsheet shows as text, never runs as a formula."""
    text = str(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class Stdout:
    """Standard output that may go away: a closed pipe (`| head`) ends printing quietly; a full
    or closed stdout ends it with one error line. Either way the run goes on for its files."""

    def __init__(self):
        self.gone, self.problem = False, None

    def write(self, text):
        if self.gone:
            return
        try:
            if sys.stdout is None:
                raise OSError("standard output is closed")
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            # A terminal that cannot show a character (an ASCII locale) gets its \\u escape.
            emit(text.encode(encoding, "backslashreplace").decode(encoding), sys.stdout)
        except BrokenPipeError:  # `predict.py ... | head`: the reader has all it wanted
            self._silence()
        except (OSError, ValueError) as error:
            self.problem = f"stdout: cannot write ({describe_oserror(error) if isinstance(error, OSError) else error})"
            self._silence()

    def _silence(self):
        self.gone = True
        try:  # Python's own flush at exit would fail again, with a traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        except OSError:
            pass


class TextWriter:
    """A line per image or analysed frame on stdout."""

    def __init__(self, stdout, top_k=1):
        self.stdout, self.top_k = stdout, top_k

    def add(self, result):
        if result.analysed:
            self.stdout.write(format_result(result, self.top_k))

    def close(self):
        pass


class JsonWriter:
    """One JSON list on stdout at the end, one object per image or analysed frame. File names
    stay exact: one that is not UTF-8 is written with \\u escapes rather than failing."""

    def __init__(self, stdout):
        self.stdout, self.records = stdout, []

    def add(self, result):
        self.records.append(result.to_dict())

    def close(self):
        text = json.dumps(self.records, indent=2, ensure_ascii=False)
        try:
            text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):
            text = json.dumps(self.records, indent=2, ensure_ascii=True)
        self.stdout.write(text)


class CsvWriter:
    """One row per face per image or frame. Rows go to a hidden partial file as results come
    (flushed at once), which takes the CSV's name when the run ends, interrupted or not: the CSV
    appears whole or not at all, and never over a file. Text cells are made spreadsheet-safe;
    non-UTF-8 bytes of a file name are kept as they are."""

    def __init__(self, path, class_names):
        self.path, self.class_names = Path(path), class_names
        try:
            self.partial = temporary_path(path)
            self.handle = open(self.partial, "w", newline="", encoding="utf-8", errors="surrogateescape")
        except OSError as error:
            raise UserError(f"{path}: cannot be written ({describe_oserror(error)})") from None
        self.writer = csv.writer(self.handle)
        self._write_row([*CSV_COLUMNS, *map(spreadsheet_safe, class_names)])

    def add(self, result):
        for face in result.faces:
            self._write_row([spreadsheet_safe(result.file), "" if result.frame is None else result.frame,
                             "" if result.time is None else result.time, "" if face.person is None else face.person,
                             *face.box, spreadsheet_safe(face.emotion), face.confidence,
                             *(face.scores[name] for name in self.class_names)])

    def _write_row(self, row):
        try:
            self.writer.writerow(row)
            self.handle.flush()
        except OSError as error:
            self.handle.close()
            remove_quietly(self.partial)
            raise UserError(f"{self.path}: cannot be written ({describe_oserror(error)})") from None

    def close(self):
        """Give the rows written so far the CSV's name."""
        if self.handle.closed:
            return
        try:
            self.handle.close()
        except OSError as error:
            remove_quietly(self.partial)
            raise UserError(f"{self.path}: cannot be written ({describe_oserror(error)})") from None
        give_name(self.partial, self.path, "CSV")


class Outputs:
    """Every writer the user asked for, fed each result as it comes; errors go to stderr."""

    def __init__(self, writers, stdout):
        self.writers, self.stdout = writers, stdout
        self.failures = 0

    def add(self, result):
        for writer in self.writers:
            writer.add(result)
        if result.error:
            self.failures += 1
            print_error(result.error)

    def close(self):
        for writer in self.writers:
            try:
                writer.close()
            except UserError as error:
                self.failures += 1
                print_error(error)
        if self.stdout.problem:
            print_error(self.stdout.problem)


def get_writers(class_names, top_k=1, as_json=False, csv_path=None):
    """The writers of a run, one per format (as openai/whisper's get_writer): text lines or JSON on stdout,
    and a CSV file when asked for."""
    stdout = Stdout()
    writers = [JsonWriter(stdout) if as_json else TextWriter(stdout, top_k)]
    if csv_path is not None:
        writers.append(CsvWriter(csv_path, class_names))
    return Outputs(writers, stdout)


# ---------------------------------------------------------------------------------------------
# Annotated copies
# ---------------------------------------------------------------------------------------------
def unused_path(folder, source, suffix=None):
    """folder/<name>_annotated<suffix>, numbered if taken: never writes over anything."""
    folder = Path(folder)
    suffix = suffix or source.suffix
    candidate = folder / f"{source.stem}_annotated{suffix}"
    index = 2
    # lexists: a dangling symlink counts as taken; a name too long reads as free and fails to open.
    while os.path.lexists(candidate) or candidate.resolve() == source.resolve():
        candidate = folder / f"{source.stem}_annotated_{index}{suffix}"
        index += 1
    return candidate


def draw_faces(rgb, faces):
    """Boxes and labels (emotion, confidence, and the person in a video) drawn on an RGB uint8
    array (returned)."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 40)))
    for face in faces:
        x, y, w, h = face.box
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 255, 0), width=line)
        label = (f"person {face.person}: " if face.person is not None else "") + f"{face.emotion} {face.confidence:.0%}"
        left, top, right, bottom = draw.textbbox((x, y), label, font=font)
        top_edge = y - (bottom - top) - 2 * line if y - (bottom - top) - 2 * line >= 0 else y + h
        draw.rectangle([x, top_edge, x + (right - left) + 2 * line, top_edge + (bottom - top) + 2 * line],
                       fill=(0, 255, 0))
        draw.text((x + line, top_edge + line - (top - y)), label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


class Annotator:
    """Annotated copies in a folder: photos in their own format where Pillow writes it, videos as
    .mp4; each appears whole or not at all and never over another file."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def image(self, image, result):
        """Write the annotated copy of a photo; a copy that cannot be written is the result's error."""
        source = Path(result.file)
        # The input's own format where Pillow can write it (a file named "face" or "x.dat" cannot be).
        image_format = Image.registered_extensions().get(source.suffix.lower())
        writable = image_format in Image.SAVE
        try:
            path = unused_path(self.folder, source, source.suffix if writable else ".png")
        except OSError as error:
            result.error = f"{self.folder}: cannot write annotated image ({describe_oserror(error)})"
            return
        drawn = Image.fromarray(draw_faces(np.asarray(to_rgb(image)).copy(), result.faces))
        try:
            create_new_file(path, lambda partial: drawn.save(partial, format=image_format if writable else "PNG"),
                            "annotated image")
        except UserError as error:
            result.error = str(error)
        except ValueError as error:  # Pillow cannot write this mode in this format
            result.error = f"{path}: cannot write annotated image ({error})"
        else:
            result.annotated = str(path)

    def video_writer(self, source, fps, shape):
        return VideoWriter(unused_path(self.folder, Path(source), ".mp4"), fps, shape)

    @staticmethod
    def draw_bgr(rgb, faces):
        """draw_faces on a copy of a frame, in OpenCV's BGR order."""
        import cv2

        return cv2.cvtColor(draw_faces(rgb.copy(), faces), cv2.COLOR_RGB2BGR)
