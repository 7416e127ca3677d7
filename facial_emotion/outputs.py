"""One table of outputs. Prediction produces results (pipeline.Pipeline.inputs); every output is
a sink fed each result as it comes: text or JSON on stdout, CSV, Parquet, SRT subtitles, a chart,
annotated copies, and the progress bar.

A row of OUTPUTS gives a sink its flag, its help, its path rule and whether it needs the
pictures; `predict_cli` builds its flags, its webcam conflicts and its output checks from the
table, and `Outputs` opens, feeds and closes the sinks asked for. A new format is one sink class
and one row (SRT is the example).
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from facial_emotion import sinks
from facial_emotion.annotation import AnnotateSink
from facial_emotion.errors import UserError, print_error, require_extra
from facial_emotion.plots import PLOT_FORMATS


@dataclass(frozen=True)
class Output:
    """One output. `target`: "stdout" (no path), "file" (a new file, never written over) or
    "folder" (made if missing); `flag` None: on without asking (text, unless --json; progress).
    `suffixes`: the file names it takes (empty: any). `pixels`: its sink draws on the pictures.
    `requires`: (module, extra) it needs beyond prediction's own packages."""
    name: str
    flag: str
    target: str
    sink: type
    help: str = ""
    suffixes: tuple = ()
    pixels: bool = False
    requires: tuple = None


OUTPUTS = (
    Output("text", None, "stdout", sinks.TextSink),
    Output("json", "--json", "stdout", sinks.JsonSink,
           "print a JSON list at the end, one object per image or video frame, instead of lines"),
    Output("csv", "--csv", "file", sinks.CsvSink, "also write one row per face (per frame) to this new CSV, "
           "as results come"),
    Output("parquet", "--parquet", "file", sinks.ParquetSink, "also write one row per face, and one for each "
           "image without a face or with an error, to this new Parquet file (with --ray: a new folder of them); "
           "needs pyarrow", (".parquet",), requires=("pyarrow", "parquet")),
    Output("srt", "--srt", "file", sinks.SrtSink, "write a new SRT subtitle file for the first video among the "
           "inputs: one subtitle per stretch in which a person's emotion holds", (".srt",)),
    Output("plot", "--plot", "file", sinks.PlotSink, "draw a new chart: for the first video among the inputs, each "
           "person's emotions over time; with no video, how many faces got each emotion", tuple(PLOT_FORMATS)),
    Output("annotate", "--annotate", "folder", AnnotateSink,
           "write copies with boxes and labels here (videos as .mp4)", pixels=True),
    Output("progress", None, "stderr", sinks.ProgressSink),
)
BY_NAME = {output.name: output for output in OUTPUTS}


def add_output_flags(parser):
    """The table's flags, each with its help; dest is the output's name."""
    for output in OUTPUTS:
        if output.flag is None:
            continue
        if output.target == "stdout":
            parser.add_argument(output.flag, dest=output.name, action="store_true", help=output.help)
        else:
            suffixes = f" ({', '.join(output.suffixes)})" if output.suffixes else ""
            parser.add_argument(output.flag, dest=output.name, type=Path, help=output.help + suffixes,
                                metavar="FILE" if output.target == "file" else "DIR")


def asked_for(args):
    """{name: path or True} of the flagged outputs that the parsed arguments ask for."""
    return {output.name: getattr(args, output.name) for output in OUTPUTS
            if output.flag is not None and getattr(args, output.name) not in (None, False)}


def check_outputs(chosen):
    """Before any work: output files must be new, in folders that exist, with a suffix their
    output takes, apart from each other and outside the output folders; folders must exist or be
    makeable. Nothing is ever written over."""
    for name in chosen:
        if BY_NAME[name].requires:
            module, extra = BY_NAME[name].requires
            require_extra(module, BY_NAME[name].flag, extra)
    files = {name: path for name, path in chosen.items() if BY_NAME[name].target == "file"}
    folders = {name: path for name, path in chosen.items() if BY_NAME[name].target == "folder"}
    for name, path in files.items():
        flag = BY_NAME[name].flag
        for folder_name, folder in folders.items():
            if Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder)):
                raise UserError(f"{path}: inside the {BY_NAME[folder_name].flag} folder, where an output may take its "
                                f"name; put the {flag} file elsewhere")
        if os.path.lexists(path):
            raise UserError(f"{path}: already exists; choose another {flag} file")
        if not os.path.isdir(path.parent):
            raise UserError(f"{path}: folder {path.parent} does not exist")
        suffixes = BY_NAME[name].suffixes
        if suffixes and path.suffix.lower() not in suffixes:
            raise UserError(f"{path}: name the {flag} file {', '.join(suffixes)}")
        check_writable(path.parent, path)
    resolved = {}
    for name, path in files.items():
        other = resolved.setdefault(path.resolve(), name)
        if other != name:
            raise UserError(f"{path}: {BY_NAME[other].flag} and {BY_NAME[name].flag} name the same file")
    for path in folders.values():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"{path}: exists and is not a folder") from None
        except OSError as error:
            raise UserError(f"{path}: cannot create ({error.strerror or error})") from None
        check_writable(path, path)


def check_writable(folder, named):
    """A folder a file can be made in, tried with a temporary file before any work: a read-only
    folder or file system fails here, not after every input was analysed."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UserError(f"{named}: folder {folder} cannot be written ({error.strerror or error})") from None


def wanted(output, chosen):
    """Whether a run has this output: a flagged one when asked for; text unless --json; progress
    always."""
    if output.flag is not None:
        return output.name in chosen
    return output.name != "text" or "json" not in chosen


@dataclass
class Run:
    """What every sink may need to know of the run; `report(problem)` says a problem that belongs
    to no one result (a video's copy that fails when it is closed) and counts it."""
    class_names: list
    top_k: int = 1
    total_files: int = 0
    stdout: sinks.Stdout = None
    report: object = print_error


class Outputs:
    """The sinks of a run, in the table's order, fed each result. A sink's `add` may return a
    problem with this one result (an annotated copy that cannot be written): it becomes the
    result's error. A sink that raises UserError cannot go on (a full disk under the CSV): one
    line, one failure, and the others go on without it. The pixel sinks come first, so that JSON
    records the annotated copy's name."""

    def __init__(self, chosen, class_names, top_k=1, total_files=0):
        self.run = Run(class_names, top_k, total_files, sinks.Stdout(), self._report)
        self.failures = 0
        self.only_stdout = all(BY_NAME[name].target == "stdout" for name in chosen)
        self.files = [chosen[name] for name in chosen if BY_NAME[name].target == "file"]
        self.sinks, self.pixels = [], False
        for output in sorted(OUTPUTS, key=lambda row: not row.pixels):
            if not wanted(output, chosen):
                continue
            try:
                self.sinks.append(output.sink(chosen.get(output.name), self.run))
            except UserError:
                self.close()  # the sinks already open leave no partial file
                raise
            self.pixels = self.pixels or output.pixels

    def _report(self, problem):
        self.failures += 1
        print_error(problem)

    @property
    def progress(self):
        return next(sink for sink in self.sinks if isinstance(sink, sinks.ProgressSink))

    def add(self, result):
        for sink in list(self.sinks):
            try:
                problem = sink.add(result)
            except UserError as error:
                self._drop(sink, error)
                continue
            if problem is not None:
                result.error = result.error or problem
        result.picture = None  # every sink has drawn what it needed
        if result.error:
            self.failures += 1
            print_error(result.error)

    def _drop(self, sink, error):
        self.sinks.remove(sink)
        self.failures += 1
        print_error(error)
        try:
            sink.close()
        except UserError:
            pass  # already said

    def close(self):
        for sink in list(self.sinks):
            self.sinks.remove(sink)
            try:
                sink.close()
            except UserError as error:
                self.failures += 1
                print_error(error)
        if self.run.stdout.problem:
            print_error(self.run.stdout.problem)
