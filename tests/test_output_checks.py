"""outputs.py's checks before any work (each refusal's exact words) and how Outputs feeds its
sinks: the table's order, a sink's problem with one result, a sink that cannot go on, a sink that
fails to open or to close. Sinks are stood in where their own files are not the point."""

import argparse
import errno
import tempfile
from pathlib import Path

import pytest

from facial_emotion import outputs
from facial_emotion.errors import UserError
from facial_emotion.outputs import OUTPUTS, Output, Outputs, add_output_flags, asked_for, check_outputs, wanted
from facial_emotion.pipeline import Result


def refusal(chosen):
    with pytest.raises(UserError) as caught:
        check_outputs(chosen)
    return str(caught.value)


def test_each_check_s_words(tmp_path):
    taken = tmp_path / "taken.csv"
    taken.write_text("mine")
    assert refusal({"csv": taken}) == f"{taken}: already exists; choose another --csv file"
    missing = tmp_path / "nowhere" / "a.csv"
    assert refusal({"csv": missing}) == f"{missing}: folder {tmp_path / 'nowhere'} does not exist"
    assert refusal({"plot": tmp_path / "a.gif"}) == f"{tmp_path / 'a.gif'}: name the --plot file .png, .pdf, .svg, .jpg, .jpeg"
    inside = tmp_path / "copies" / "a.srt"
    assert refusal({"annotate": tmp_path / "copies", "srt": inside}) == (
        f"{inside}: inside the --annotate folder, where an output may take its name; put the --srt file elsewhere")
    same = tmp_path / "a.png"
    assert refusal({"csv": same, "plot": same}) == f"{same}: --csv and --plot name the same file"
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert refusal({"annotate": a_file}) == f"{a_file}: exists and is not a folder"
    assert refusal({"annotate": a_file / "sub"}) == f"{a_file / 'sub'}: cannot create (Not a directory)"
    assert taken.read_text() == "mine" and not (tmp_path / "copies").exists()


def test_suffixes_are_matched_whatever_their_case_and_folders_are_made_with_their_parents(tmp_path):
    check_outputs({"srt": tmp_path / "A.SRT", "plot": tmp_path / "chart.JPEG", "csv": tmp_path / "rows.anything",
                   "annotate": tmp_path / "deep" / "copies"})
    assert (tmp_path / "deep" / "copies").is_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["deep"]  # the write test leaves nothing


def test_an_unwritable_folder_is_found_before_any_work(tmp_path, monkeypatch):
    real = tempfile.TemporaryFile

    def refused(dir=None):
        if Path(dir) in (tmp_path, tmp_path / "out"):  # the output's own folder is the one tried
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(dir=dir)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert refusal({"csv": tmp_path / "a.csv"}) == f"{tmp_path / 'a.csv'}: folder {tmp_path} cannot be written (Permission denied)"
    assert refusal({"annotate": tmp_path / "out"}) == f"{tmp_path / 'out'}: folder {tmp_path / 'out'} cannot be written (Permission denied)"


def test_a_missing_extra_is_named_before_the_paths_are_checked(tmp_path, monkeypatch):
    asked = []

    def missing(module, flag, extra):
        asked.append((module, flag, extra))
        raise UserError(f"{flag} needs {module}")

    monkeypatch.setattr(outputs, "require_extra", missing)
    assert refusal({"parquet": tmp_path / "nowhere" / "a.parquet"}) == "--parquet needs pyarrow"
    assert asked == [("pyarrow", "--parquet", "parquet")]
    check_outputs({"csv": tmp_path / "a.csv"})  # an output without an extra asks for none
    assert len(asked) == 1


def test_the_flags_come_from_the_table():
    parser = argparse.ArgumentParser()
    add_output_flags(parser)
    by_flag = {action.option_strings[0]: action for action in parser._actions if action.option_strings[1:2] == []
               and action.option_strings}
    assert by_flag["--json"].dest == "json" and by_flag["--json"].nargs == 0
    assert by_flag["--csv"].metavar == "FILE" and by_flag["--annotate"].metavar == "DIR"
    assert by_flag["--srt"].help.endswith(" (.srt)") and by_flag["--csv"].help == outputs.BY_NAME["csv"].help
    assert by_flag["--plot"].help.endswith(" (.png, .pdf, .svg, .jpg, .jpeg)")
    assert by_flag["--json"].help == outputs.BY_NAME["json"].help
    args = parser.parse_args(["--csv", "a.csv", "--json"])
    assert args.csv == Path("a.csv") and asked_for(args) == {"json": True, "csv": Path("a.csv")}
    assert asked_for(parser.parse_args([])) == {}


def test_text_goes_unless_json_is_asked_and_progress_always():
    text, progress, json_ = outputs.BY_NAME["text"], outputs.BY_NAME["progress"], outputs.BY_NAME["json"]
    assert wanted(text, {}) and not wanted(text, {"json": True})
    assert wanted(progress, {}) and wanted(progress, {"json": True})
    assert wanted(json_, {"json": True}) and not wanted(json_, {"csv": "a.csv"})


class Recorder:
    """A sink that records what it is fed; `problem`, `fails_on`, `fails_to_open`, `fails_to_close`
    set its misbehaviour."""
    log, behaviour = [], {}

    def __init__(self, target, run):
        self.name = Path(target).stem if target not in (None, True) else "?"
        if self.behaviour.get("fails_to_open") == self.name:
            raise UserError(f"{self.name}: cannot open")
        self.log.append(("open", self.name))

    def add(self, result):
        self.log.append(("add", self.name, result.file))
        if self.behaviour.get("fails_on") == (self.name, result.file):
            raise UserError(f"{self.name}: disk full")
        if self.behaviour.get("problem") == (self.name, result.file):
            return f"{result.file}: cannot draw"
        return None

    def close(self):
        self.log.append(("close", self.name))
        if self.behaviour.get("fails_to_close") == self.name:
            raise UserError(f"{self.name}: cannot close")


@pytest.fixture
def recorders(monkeypatch):
    table = (Output("first", "--first", "file", Recorder), Output("drawn", "--drawn", "folder", Recorder, pixels=True),
             Output("second", "--second", "file", Recorder))
    monkeypatch.setattr(outputs, "OUTPUTS", table)
    monkeypatch.setattr(outputs, "BY_NAME", {output.name: output for output in table})
    Recorder.log, Recorder.behaviour = [], {}
    return Recorder


CHOSEN = {"first": Path("first.txt"), "drawn": Path("drawn"), "second": Path("second.txt")}


def test_pixel_sinks_open_and_are_fed_first_then_the_table_s_order(recorders):
    run = Outputs(CHOSEN, ["a", "b"])
    assert run.pixels and run.files == [Path("first.txt"), Path("second.txt")] and not run.only_stdout
    run.add(Result("x.jpg"))
    run.close()
    assert recorders.log == [("open", "drawn"), ("open", "first"), ("open", "second"),
                             ("add", "drawn", "x.jpg"), ("add", "first", "x.jpg"), ("add", "second", "x.jpg"),
                             ("close", "drawn"), ("close", "first"), ("close", "second")]
    assert run.failures == 0 and run.sinks == []


def test_a_sink_s_problem_with_one_result_becomes_its_error_once(recorders, capsys):
    recorders.behaviour = {"problem": ("drawn", "x.jpg")}
    run = Outputs(CHOSEN, ["a"])
    result = Result("x.jpg", picture=object())
    run.add(result)
    assert result.error == "x.jpg: cannot draw" and result.picture is None and run.failures == 1
    assert capsys.readouterr().err == "error: x.jpg: cannot draw\n"
    kept = Result("y.jpg", error="y.jpg: broken image")
    run.add(kept)  # an error of its own is kept and counted
    assert kept.error == "y.jpg: broken image" and run.failures == 2


def test_a_sink_that_cannot_go_on_is_dropped_and_closed_and_the_others_go_on(recorders, capsys):
    recorders.behaviour = {"fails_on": ("first", "x.jpg")}
    run = Outputs(CHOSEN, ["a"])
    run.add(Result("x.jpg"))
    run.add(Result("y.jpg"))
    run.close()
    assert ("close", "first") in recorders.log and ("add", "first", "y.jpg") not in recorders.log
    assert ("add", "second", "x.jpg") in recorders.log and ("add", "second", "y.jpg") in recorders.log
    assert run.failures == 1 and capsys.readouterr().err == "error: first: disk full\n"


def test_a_sink_that_fails_to_open_closes_those_already_open(recorders):
    recorders.behaviour = {"fails_to_open": "second"}
    with pytest.raises(UserError, match="second: cannot open"):
        Outputs(CHOSEN, ["a"])
    assert recorders.log == [("open", "drawn"), ("open", "first"), ("close", "drawn"), ("close", "first")]


def test_a_sink_that_fails_to_close_is_counted_and_the_others_still_close(recorders, capsys):
    recorders.behaviour = {"fails_to_close": "drawn"}
    run = Outputs(CHOSEN, ["a"])
    run.close()
    assert [entry for entry in recorders.log if entry[0] == "close"] == [("close", "drawn"), ("close", "first"),
                                                                        ("close", "second")]
    assert run.failures == 1 and capsys.readouterr().err == "error: drawn: cannot close\n"


def test_the_real_table_s_run_knows_its_stdout_only_outputs_and_its_progress(tmp_path):
    run = Outputs({"json": True}, ["a"], top_k=2, total_files=3)
    assert run.only_stdout and not run.pixels and run.files == []
    assert run.run.top_k == 2 and run.run.total_files == 3 and run.run.class_names == ["a"]
    assert type(run.progress).__name__ == "ProgressSink"
    assert [type(sink).__name__ for sink in run.sinks] == ["JsonSink", "ProgressSink"]
    run.close()
    assert [output.name for output in OUTPUTS][:2] == ["text", "json"]


def test_an_annotate_folder_that_exists_already_is_used():
    import tempfile as temporary

    with temporary.TemporaryDirectory() as folder:
        check_outputs({"annotate": Path(folder)})


def test_a_run_s_defaults_and_its_problems_are_counted(recorders, capsys):
    run = Outputs(CHOSEN, ["a"])
    assert run.run.top_k == 1 and run.run.total_files == 0
    run.run.report("copy.mp4: cannot be finished")
    assert run.failures == 1 and capsys.readouterr().err == "error: copy.mp4: cannot be finished\n"
    run.run.stdout.problem = "stdout: cannot write (No space left on device)"
    recorders.behaviour = {"fails_to_close": "first"}
    run.close()
    assert run.failures == 2
    assert capsys.readouterr().err.splitlines() == ["error: first: cannot close",
                                                    "error: stdout: cannot write (No space left on device)"]


def test_every_sink_dropped_or_failing_to_close_is_counted(recorders, capsys):
    recorders.behaviour = {"fails_on": ("first", "x.jpg")}
    run = Outputs(CHOSEN, ["a"])
    run.add(Result("x.jpg"))
    recorders.behaviour = {"fails_on": ("second", "y.jpg")}
    run.add(Result("y.jpg"))
    assert run.failures == 2
    recorders.behaviour = {"fails_to_close": "drawn"}
    run.close()
    assert run.failures == 3
