"""The sinks of outputs.OUTPUTS that write what they are fed: text lines or JSON on stdout, CSV,
Parquet and SRT files, the chart, and the progress bar. Each has `add(result)` (returning None,
or a problem with that one result) and `close()`; a UserError means the sink cannot go on."""

import csv
import json
import os
import sys
from pathlib import Path

from facial_emotion.errors import UserError, emit, one_line, print_note, require_extra
from facial_emotion.files import create_new_file, describe_oserror, give_name, remove_quietly, temporary_path

# --csv: one row per face per image or frame; every class's score follows these columns.
# --parquet adds `error`, and a row with no face for an image without one.
CSV_COLUMNS = ["file", "frame", "time", "person", "x", "y", "w", "h", "emotion", "confidence"]
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"): such text cells get a leading apostrophe, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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


class TextSink:
    """A line per image or analysed frame on stdout."""

    def __init__(self, target, run):
        self.stdout, self.top_k = run.stdout, run.top_k

    def add(self, result):
        if result.analysed:
            self.stdout.write(format_result(result, self.top_k))

    def close(self):
        pass


class JsonSink:
    """One JSON list on stdout at the end, one object per image or analysed frame. File names
    stay exact: one that is not UTF-8 is written with \\u escapes rather than failing."""

    def __init__(self, target, run):
        self.stdout, self.records = run.stdout, []

    def add(self, result):
        self.records.append(result.to_dict())

    def close(self):
        text = json.dumps(self.records, indent=2, ensure_ascii=False)
        try:
            text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):
            text = json.dumps(self.records, indent=2, ensure_ascii=True)
        self.stdout.write(text)


class CsvSink:
    """One row per face per image or frame. Rows go to a hidden partial file as results come
    (flushed at once), which takes the CSV's name when the run ends, interrupted or not: the CSV
    appears whole or not at all, and never over a file. Text cells are made spreadsheet-safe;
    non-UTF-8 bytes of a file name are kept as they are."""

    def __init__(self, path, run):
        self.path, self.class_names = Path(path), run.class_names
        try:
            self.partial = temporary_path(path)
            self.handle = open(self.partial, "w", newline="", encoding="utf-8", errors="surrogateescape")
        except OSError as error:
            raise UserError(f"{path}: cannot be written ({describe_oserror(error)})") from None
        self.writer = csv.writer(self.handle)
        self._write_row([*CSV_COLUMNS, *map(spreadsheet_safe, self.class_names)])

    def add(self, result):
        for row in face_rows(result, self.class_names):
            file, *numbers, emotion, confidence = row[:len(CSV_COLUMNS)]
            self._write_row([spreadsheet_safe(file), *("" if value is None else value for value in numbers),
                             spreadsheet_safe(emotion), confidence, *row[len(CSV_COLUMNS):]])

    def _write_row(self, row):
        try:
            self.writer.writerow(row)
            self.handle.flush()
        except OSError as error:
            self._discard()
            raise UserError(f"{self.path}: cannot be written ({describe_oserror(error)})") from None

    def _discard(self):
        """Drop the partial file without flushing again: a full disk would fail a second time."""
        try:
            os.close(self.handle.fileno())
        except (OSError, ValueError):
            pass
        try:
            self.handle.close()
        except (OSError, ValueError):
            pass
        remove_quietly(self.partial)

    def close(self):
        """Give the rows written so far the CSV's name."""
        if self.handle.closed:
            return
        try:
            self.handle.close()
        except OSError as error:
            self._discard()
            raise UserError(f"{self.path}: cannot be written ({describe_oserror(error)})") from None
        named = give_name(self.partial, self.path, "CSV", renumber=True)
        if named != self.path:
            print_note(f"warning: {self.path} appeared during the run (another run's?); these rows are in {named}")




def face_rows(result, class_names, faceless=False):
    """The rows of one result, one per face: lists of CSV_COLUMNS' values, then every class's
    score. `faceless`: a result without faces (none found, or an error) gives one row without a
    face, and every row ends with the result's error (Parquet's rows)."""
    base = [result.file, result.frame, result.time]
    rows = [[*base, face.person, *face.box, face.emotion, face.confidence, *(face.scores[name] for name in class_names)]
            for face in result.faces]
    if faceless and not rows:
        rows = [[*base, *[None] * (len(CSV_COLUMNS) - len(base) + len(class_names))]]
    return [[*row, result.error] for row in rows] if faceless else rows


class ParquetSink:
    """One row per face, and one without a face for an image with none or with an error (its
    `error` column), in a Parquet file written as results come (a row group every ROW_GROUP
    rows) under a hidden partial name that becomes the file's when the run ends."""

    ROW_GROUP = 1000  # rows held in memory before they are written

    def __init__(self, path, run):
        require_extra("pyarrow", "--parquet", "parquet")
        self.path, self.class_names, self.rows, self.writer, self.done = Path(path), run.class_names, [], None, False
        self.schema = parquet_schema(run.class_names)
        try:
            self.partial = temporary_path(path)
        except OSError as error:
            raise UserError(f"{path}: cannot be written ({describe_oserror(error)})") from None

    def add(self, result):
        self.rows += face_rows(result, self.class_names, faceless=True)
        if len(self.rows) >= self.ROW_GROUP:
            self._flush()

    def _flush(self):
        import pyarrow.parquet as pq

        try:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.partial, self.schema)
            self.writer.write_table(rows_table(self.rows, self.schema))
        except OSError as error:
            self._discard()
            raise UserError(f"{self.path}: cannot be written ({describe_oserror(error)})") from None
        self.rows = []

    def _discard(self):
        writer, self.writer, self.rows, self.done = self.writer, None, [], True
        try:
            if writer is not None:
                writer.close()
        except OSError:
            pass
        remove_quietly(self.partial)

    def close(self):
        if self.done:
            return
        if self.rows or self.writer is None:
            self._flush()
        try:
            self.writer.close()
        except OSError as error:
            self._discard()
            raise UserError(f"{self.path}: cannot be written ({describe_oserror(error)})") from None
        self.done = True
        named = give_name(self.partial, self.path, "Parquet file", renumber=True)
        if named != self.path:
            print_note(f"warning: {self.path} appeared during the run (another run's?); these rows are in {named}")


def rows_table(rows, schema):
    """face_rows as a pyarrow Table of `schema`. Parquet strings are UTF-8: a file name with other
    bytes is written with \\x escapes, as the text lines show it."""
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [[] for _ in schema.names]
    return pa.Table.from_arrays([pa.array([utf8(value) for value in column] if kind == pa.string() else column,
                                          type=kind) for column, kind in zip(columns, schema.types)], schema=schema)


def utf8(value):
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def parquet_schema(class_names):
    """The Parquet rows' columns: CSV_COLUMNS, every class's score, then `error`."""
    import pyarrow as pa

    clash = sorted(set(class_names) & {*CSV_COLUMNS, "error"})
    if clash:
        raise UserError(f"--parquet: a class is named like a column ({', '.join(clash)})")
    kinds = dict(file=pa.string(), frame=pa.int64(), time=pa.float64(), person=pa.int64(), x=pa.int64(),
                 y=pa.int64(), w=pa.int64(), h=pa.int64(), emotion=pa.string(), confidence=pa.float64())
    return pa.schema([*kinds.items(), *((name, pa.float64()) for name in class_names), ("error", pa.string())])


class SrtSink:
    """SubRip subtitles of the first video among the inputs: one subtitle per stretch of analysed
    frames in which a person shows the same emotion ("person 1: happy"), from its first frame to
    the frame after its last; written at the end, whole or not at all."""

    def __init__(self, path, run):
        self.path, self.video, self.frames = Path(path), None, []

    def add(self, result):
        if result.frame is None or (self.video is not None and result.file != self.video):
            return
        self.video = result.file
        self.frames.append((result.time, 1 / result.fps, {face.person: face.emotion for face in result.faces}))

    def close(self):
        if self.video is None:
            raise UserError(f"{self.path}: nothing to subtitle: no video frame was analysed")
        text = "".join(f"{number}\n{srt_time(start)} --> {srt_time(end)}\n{label}\n\n"
                       for number, (start, end, label) in enumerate(subtitles(self.frames), 1))
        create_new_file(self.path, lambda partial: partial.write_text(text, encoding="utf-8"), "--srt file")


def subtitles(frames):
    """[(start, end, "person N: emotion")] of [(time, step, {person: emotion})], by start time."""
    open_stretches, done = {}, []
    for time, step, people in [*frames, (None, 0, {})]:
        for person, (emotion, start, last) in list(open_stretches.items()):
            if people.get(person) != emotion:
                done.append((start, last, f"person {person}: {emotion}"))
                del open_stretches[person]
        for person, emotion in people.items():
            start = open_stretches[person][1] if person in open_stretches else time
            open_stretches[person] = (emotion, start, time + step)
    return sorted(done, key=lambda item: (item[0], item[2]))


def srt_time(seconds):
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d},{rest % 1000:03d}"


class PlotSink:
    """The chart of plots.save_plot, drawn at the end: it keeps the first video's results, or,
    while no video has come, the photos'."""

    def __init__(self, path, run):
        self.path, self.class_names, self.kept, self.video = Path(path), run.class_names, [], None

    def add(self, result):
        if self.video is None and result.video and result.frame is not None:
            self.video, self.kept = result.file, []
        if self.video is None or result.file == self.video:
            self.kept.append(result)

    def close(self):
        from facial_emotion.plots import save_plot

        if self.kept:
            save_plot(self.kept, self.class_names, self.path)


class ProgressSink:
    """How far a run has got: a progress bar for more than PROGRESS_BAR_FILES files, and the
    words for where an interrupted run stopped. A file counts once its results are all in."""

    PROGRESS_BAR_FILES = 20  # a few files need no bar

    def __init__(self, target, run):
        from tqdm import tqdm

        self.total_files, self.files_done = run.total_files, 0
        self.video, self.frames_done, self.frames_total = None, 0, 0
        self.bar = tqdm(total=run.total_files, unit="file", file=sys.stderr, leave=False,
                        disable=None if run.total_files > self.PROGRESS_BAR_FILES else True)

    def add(self, result):
        if self.video is not None and result.file != self.video:
            self._file_done()
        if result.frame is not None:
            self.video, self.frames_done, self.frames_total = result.file, result.frame + 1, result.frames_total
        else:  # an image, or a video that could not be read (or not to its end)
            self._file_done()

    def _file_done(self):
        self.files_done += 1
        self.video = None
        self.bar.update(1)

    def describe(self):
        if self.video is None:
            return f"{self.files_done} of {self.total_files} files"
        total = f" of {self.frames_total}" if self.frames_total else ""
        where = f" (file {self.files_done + 1} of {self.total_files})" if self.total_files > 1 else ""
        return f"{self.frames_done}{total} frames of {self.video}{where}"

    def close(self):
        self.bar.close()
