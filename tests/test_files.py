"""facial_emotion.files: folder walks, whole-or-nothing writes, JSON reading, run-folder locks."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import deadline
from facial_emotion.errors import UserError
from facial_emotion import files
from facial_emotion.files import (LOCK_NAME, RunLock, check_regular_file, claim_run_folder, create_new_file,
                                  give_name, read_json, replace_atomically, walk_files)

PROJECT_DIR = Path(__file__).resolve().parent.parent
ANY = lambda name: True  # noqa: E731




def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------------------------------
# walk_files
# ---------------------------------------------------------------------------------------------
def test_walk_is_sorted_folder_by_folder_and_skips_hidden_names(tmp_path):
    for name in ("z.jpg", "a.jpg", ".hidden.jpg", "b/y.jpg", "a/x.jpg", "a/c/w.jpg", ".cache/v.jpg", "b/notes.txt"):
        touch(tmp_path / name)
    found = walk_files(tmp_path, lambda name: name.endswith(".jpg"))
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["a.jpg", "z.jpg", "a/x.jpg", "a/c/w.jpg",
                                                                         "b/y.jpg"]


def test_a_symlink_loop_is_walked_once(tmp_path):
    touch(tmp_path / "top.jpg")
    touch(tmp_path / "sub" / "face.jpg")
    (tmp_path / "sub" / "loop").symlink_to("..")
    (tmp_path / "sub" / "self").symlink_to(".")
    with deadline(10):
        found = walk_files(tmp_path, ANY)
    assert sorted(os.path.realpath(path) for path in found) == sorted(
        os.path.realpath(tmp_path / name) for name in ("top.jpg", "sub/face.jpg"))


def test_confine_skips_links_leading_out_and_reports_them(tmp_path):
    outside = touch(tmp_path / "outside.jpg")
    happy = tmp_path / "train" / "happy"
    inside = touch(happy / "face.jpg")
    (happy / "up").symlink_to("..")
    (happy / "escape.jpg").symlink_to(outside)
    (happy / "alias.jpg").symlink_to("face.jpg")  # a link that stays inside is an ordinary file
    skipped = []
    found = walk_files(happy, ANY, confine=True, skipped=skipped)
    assert found == [happy / "alias.jpg", inside]
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"up", "escape.jpg"}
    assert "leads out" in reasons["up"] and "leads out" in reasons["escape.jpg"]
    # Without confine the same links are followed: the file link is an image like any other.
    assert happy / "escape.jpg" in walk_files(happy, ANY)


def test_a_fifo_is_skipped_reported_and_never_opened(tmp_path):
    touch(tmp_path / "a.jpg")
    fifo = tmp_path / "b.jpg"
    os.mkfifo(fifo)
    skipped = []
    with deadline(10):
        found = walk_files(tmp_path, ANY, skipped=skipped)
    assert found == [tmp_path / "a.jpg"]
    assert skipped == [(fifo, "not a regular file (a FIFO, socket or device)")]


# ---------------------------------------------------------------------------------------------
# Whole-or-nothing writes
# ---------------------------------------------------------------------------------------------
def test_replace_atomically_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = touch(tmp_path / "model.json", b"old")
    replace_atomically(path, lambda partial: partial.write_bytes(b"new"))
    assert path.read_bytes() == b"new"

    def half_then_crash(partial):
        partial.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(path, half_then_crash)
    assert path.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["model.json"]

    def disk_full(partial):
        partial.write_bytes(b"ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match=r"model\.json: cannot write \(No space left on device\); nothing there"):
        replace_atomically(path, disk_full)
    assert path.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["model.json"]


def test_create_new_file_never_replaces_and_leaves_no_partial(tmp_path):
    path = tmp_path / "plot.png"
    create_new_file(path, lambda partial: partial.write_bytes(b"first"))
    assert path.read_bytes() == b"first"
    with pytest.raises(UserError, match="already exists"):
        create_new_file(path, lambda partial: partial.write_bytes(b"second"))
    assert path.read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path)) == ["plot.png"], "no partial file left"

    other = tmp_path / "other.png"

    def broken(partial):
        partial.write_bytes(b"half a pic")
        raise RuntimeError("the drawing failed")

    with pytest.raises(RuntimeError):
        create_new_file(other, broken)
    assert not other.exists()
    assert sorted(os.listdir(tmp_path)) == ["plot.png"]
    # Nothing left over blocks a retry.
    create_new_file(other, lambda partial: partial.write_bytes(b"retry"))
    assert other.read_bytes() == b"retry"


# ---------------------------------------------------------------------------------------------
# read_json
# ---------------------------------------------------------------------------------------------
def test_read_json_refuses_absurd_nesting_with_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(UserError, match="nested 50000 levels deep"):
        read_json(path, "model description")
    path.write_text('{"class_names": [["a"]], "x": {"y": [1, 2]}}')
    assert read_json(path) == {"class_names": [["a"]], "x": {"y": [1, 2]}}
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(UserError, match=r"unreadable file \('utf-8' codec can't decode byte 0xff"):
        read_json(path)


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------
HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from facial_emotion.files import RunLock
lock = RunLock(sys.argv[1]).acquire()  # kept: the lock lives as long as its handle
print("holding", flush=True)
time.sleep(120)
"""


def test_a_held_lock_is_refused_naming_the_holder_and_freed_when_it_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(PROJECT_DIR)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(UserError, match=rf"in use by another run \(process {holder.pid}\)"):
            RunLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    lock = RunLock(tmp_path).acquire()  # a killed run leaves no stale lock
    try:
        assert (tmp_path / LOCK_NAME).read_text() == f"process {os.getpid()}"
    finally:
        lock.release()


def test_claim_run_folder_refuses_files_but_not_a_lone_lock_file(tmp_path):
    busy = tmp_path / "busy"
    touch(busy / "emotion_model.h5")
    with pytest.raises(UserError) as refused:
        claim_run_folder(busy, tmp_path / "runs")
    assert str(refused.value) == (f"{busy}: already holds files from another run; choose another --output-dir "
                                  "or pass --overwrite")
    folder, lock = claim_run_folder(busy, tmp_path / "runs", overwrite=True)
    lock.release()

    left = tmp_path / "left"
    touch(left / LOCK_NAME, b"process 1")  # what a killed run leaves
    folder, lock = claim_run_folder(left, tmp_path / "runs")
    lock.release()
    assert folder == left

    folder, lock = claim_run_folder(None, tmp_path / "runs")
    lock.release()
    folder2, lock2 = claim_run_folder(None, tmp_path / "runs")
    lock2.release()
    assert (folder.name, folder2.name) == ("train", "train2")


def test_claim_run_folder_refuses_a_file_the_shipped_folder_and_a_path_it_cannot_make(tmp_path):
    touch(tmp_path / "a_file")
    with pytest.raises(UserError, match=r"a_file: exists and is not a folder$"):
        claim_run_folder(tmp_path / "a_file", tmp_path / "runs")
    shipped = tmp_path / "models"
    with pytest.raises(UserError, match=r"models: holds the shipped model; pass --overwrite to replace it$"):
        claim_run_folder(tmp_path / "x" / ".." / "models", tmp_path / "runs", protected=[shipped])
    assert not shipped.exists()  # refused before it was made
    folder, lock = claim_run_folder(shipped, tmp_path / "runs", overwrite=True, protected=[shipped])
    lock.release()
    with pytest.raises(UserError, match=r"in: cannot create \(Not a directory\)$"):
        claim_run_folder(tmp_path / "a_file" / "in", tmp_path / "runs")


def test_claim_run_folder_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    # root writes anywhere, so the check's answer is given for it
    monkeypatch.setattr(files.os, "access", lambda path, mode: not (Path(path) == locked and mode == os.W_OK))
    with pytest.raises(UserError) as refused:
        claim_run_folder(locked, tmp_path / "runs")
    assert str(refused.value) == f"{locked}: not writable"


def test_default_run_folders_take_the_stem_and_skip_taken_numbers(tmp_path):
    runs = tmp_path / "runs"
    touch(runs / "evaluate" / "x")
    touch(runs / "evaluate3")
    names = []
    for _ in range(3):
        folder, lock = claim_run_folder(None, runs, stem="evaluate", overwrite=False)
        touch(folder / "result")
        lock.release()
        names.append(folder.name)
    assert names == ["evaluate2", "evaluate4", "evaluate5"]


def test_a_folder_holds_files_when_anything_but_its_lock_is_there(tmp_path):
    assert not files.holds_files(tmp_path)
    touch(tmp_path / LOCK_NAME)
    assert not files.holds_files(tmp_path)
    touch(tmp_path / ".hidden")
    assert files.holds_files(tmp_path)


def test_a_lock_file_planted_as_a_link_is_refused_not_written_through(tmp_path):
    target = touch(tmp_path / "victim.txt", b"precious")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(target, run / LOCK_NAME)
    with pytest.raises(UserError, match=r"run: cannot be locked \(.+\)$"):
        RunLock(run).acquire()
    assert target.read_bytes() == b"precious"


def test_a_released_lock_can_be_taken_again_and_release_twice_is_harmless(tmp_path):
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(UserError, match="in use by another run"):
        RunLock(tmp_path).acquire()  # the same process, another handle: flock refuses it too
    lock.release()
    lock.release()
    RunLock(tmp_path).acquire().release()


# ---------------------------------------------------------------------------------------------
# Single files: checks, names, partial files
# ---------------------------------------------------------------------------------------------
def test_check_regular_file_names_what_the_path_is(tmp_path):
    check_regular_file(touch(tmp_path / "a.jpg"))
    for path, message in ((tmp_path / "gone.jpg", "no such file"), (tmp_path, "is a folder, not a file")):
        with pytest.raises(UserError) as refused:
            check_regular_file(path)
        assert str(refused.value) == f"{path}: {message}"
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(UserError, match=r"pipe\.jpg: not a regular file \(a FIFO, socket or device\); skipped$"):
        check_regular_file(tmp_path / "pipe.jpg")
    with pytest.raises(UserError, match=r"x: cannot be read \(Not a directory\)$"):
        check_regular_file(tmp_path / "a.jpg" / "x")


def test_a_partial_file_is_hidden_beside_its_target_with_its_suffix_and_the_umask_s_mode(tmp_path):
    before = os.umask(0o027)
    try:
        partial = files.temporary_path(tmp_path / "model.h5")
    finally:
        os.umask(before)
    assert partial.parent == tmp_path and partial.name.startswith(".model.") and partial.name.endswith(".partial.h5")
    assert partial.stat().st_size == 0 and partial.stat().st_mode & 0o777 == 0o640
    before = os.umask(0)
    try:
        assert files.temporary_path(tmp_path / "open.json").stat().st_mode & 0o777 == 0o666
    finally:
        os.umask(before)
    assert files.current_umask() == before
    mask = os.umask(0)  # reading the umask left it as it was
    os.umask(mask)
    assert mask == before


def test_renumbered_names_take_the_first_free_number(tmp_path):
    touch(tmp_path / "out.csv")
    touch(tmp_path / "out_2.csv")
    first = touch(tmp_path / ".a.partial", b"one")
    assert give_name(first, tmp_path / "out.csv", renumber=True) == tmp_path / "out_3.csv"
    assert (tmp_path / "out_3.csv").read_bytes() == b"one" and not first.exists()
    second = touch(tmp_path / ".b.partial", b"two")
    with pytest.raises(UserError, match=r"out\.csv: appeared during the run; the table was not written over it$"):
        give_name(second, tmp_path / "out.csv", what="table")
    assert not second.exists() and (tmp_path / "out.csv").read_bytes() == b"x"
    assert create_new_file(tmp_path / "out.csv", lambda partial: partial.write_bytes(b"three"),
                           renumber=True) == tmp_path / "out_4.csv"


def test_renumbering_gives_up_after_999_names(tmp_path, monkeypatch):
    tried = []

    def taken(source, name):
        tried.append(Path(name).name)
        raise FileExistsError(name)

    monkeypatch.setattr(files.os, "link", taken)
    with pytest.raises(FileExistsError):
        files.link_new_name(tmp_path / "p", tmp_path / "a.png", renumber=True)
    assert tried[:3] == ["a.png", "a_2.png", "a_3.png"] and tried[-1] == "a_999.png" and len(tried) == 999


def test_a_write_that_fails_for_a_reason_the_user_can_fix_names_the_file(tmp_path):
    def disk_full(partial):
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError) as refused:
        create_new_file(tmp_path / "chart.png", disk_full, what="chart")
    assert str(refused.value) == f"{tmp_path / 'chart.png'}: cannot write chart (No space left on device)"
    partial = touch(tmp_path / ".c.partial")
    with pytest.raises(UserError, match=r"cannot write chart \(No such file or directory\)$"):
        give_name(partial, tmp_path / "gone" / "chart.png", what="chart")
    assert os.listdir(tmp_path) == []


def test_json_is_written_whole_with_a_final_newline(tmp_path):
    files.write_json_atomically({"b": [1, 2], "a": "é"}, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "\\u00e9"\n}\n'


def test_read_json_refuses_a_huge_file_before_reading_it(tmp_path, monkeypatch):
    path = touch(tmp_path / "big.json", b"{}")
    with open(path, "r+b") as handle:
        handle.truncate(files.MAX_JSON_BYTES + 1)
    monkeypatch.setattr(files.Path, "read_text", lambda *args, **kwargs: pytest.fail("read"))
    with pytest.raises(UserError) as refused:
        read_json(path, "run state")
    assert str(refused.value) == f"{path}: not a valid run state (over 10 MB)"


def test_read_json_at_the_size_and_depth_limits(tmp_path):
    path = tmp_path / "edge.json"
    path.write_text("[" * files.MAX_JSON_DEPTH + "]" * files.MAX_JSON_DEPTH)
    assert read_json(path) is not None
    path.write_text("[" * (files.MAX_JSON_DEPTH + 1) + "]" * (files.MAX_JSON_DEPTH + 1))
    with pytest.raises(UserError, match=f"nested {files.MAX_JSON_DEPTH + 1} levels deep"):
        read_json(path)
    path.write_text(" " * (files.MAX_JSON_BYTES - 2) + "{}")
    assert read_json(path) == {}


@pytest.mark.parametrize("text, message", [
    ("{not json", "{}: not a valid model description (Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1))"),
    ("", "{}: not a valid model description (Expecting value: line 1 column 1 (char 0))"),
])
def test_read_json_names_the_file_and_what_it_should_be(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(UserError) as refused:
        read_json(path, "model description")
    assert str(refused.value) == message.format(path)
    with pytest.raises(UserError) as refused:
        read_json(tmp_path / "gone.json", "model description")
    assert str(refused.value) == f"{tmp_path / 'gone.json'}: unreadable model description (No such file or directory)"


def test_bracket_depth_counts_opening_and_closing_of_both_kinds():
    assert files.max_bracket_depth('{"a": [1, {"b": []}], "c": {}}') == 4
    assert files.max_bracket_depth("[][][]") == 1
    assert files.max_bracket_depth("[{}][[]]") == 2 and files.max_bracket_depth("[][[]]") == 2
    assert files.max_bracket_depth('[["X", "X", ["X"]]]') == 3  # other characters do not count
    assert files.max_bracket_depth("") == 0


def test_file_sha256_is_the_content_s_digest(tmp_path):
    assert files.file_sha256(touch(tmp_path / "a", b"abc")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


# ---------------------------------------------------------------------------------------------
# Paths that travel with a model
# ---------------------------------------------------------------------------------------------
def test_portable_paths_say_nothing_about_this_machine(tmp_path):
    assert files.portable_path("runs/train/m.h5") == "runs/train/m.h5"  # relative: as given
    assert files.portable_path(files.PROJECT_DIR / "models" / "emotion_model.h5") == "models/emotion_model.h5"
    assert files.portable_path(tmp_path / "deep" / "run" / "m.h5") == "run/m.h5"
    record = {"command": f"emotion_recognition.py --data-dir {tmp_path}/data/fer --epochs 3",
              "members": [f"{tmp_path}/a/b.h5", "no/slash/absolute"], "n": 3, "plain": "text"}
    assert files.portable_record(record) == {"command": "emotion_recognition.py --data-dir data/fer --epochs 3",
                                             "members": ["a/b.h5", "no/slash/absolute"], "n": 3, "plain": "text"}
    assert files.portable_command(["/usr/bin/emotion_recognition.py", "--data-dir", f"{tmp_path}/x/data",
                                   "--seed", "3", "rel/dir"]) == "emotion_recognition.py --data-dir x/data --seed 3 rel/dir"


def test_shipped_files_are_found_from_the_package_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = files.shipped_file("emotion_model.h5")
    assert path.is_absolute() and path.is_file() and path.name == "emotion_model.h5"
    assert files.shipped_file("nothing.bin") == files.PROJECT_DIR / "models" / "nothing.bin"


def test_an_os_error_is_described_by_its_reason_or_else_its_text():
    assert files.describe_oserror(OSError(28, "No space left on device")) == "No space left on device"
    assert files.describe_oserror(OSError("the network share went away")) == "the network share went away"


def test_inside_means_the_folder_itself_or_below_it_not_a_name_that_starts_alike():
    assert files._is_inside("/data/train", "/data/train") and files._is_inside("/data/train/a", "/data/train/")
    assert files._is_inside("/data/train/a", "/") and files._is_inside("/x", "/")
    assert not files._is_inside("/data/training/a", "/data/train")


def test_an_installed_package_s_own_model_files_come_first(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    touch(tmp_path / "models" / "emotion_model.h5")
    monkeypatch.setattr(files.resources, "files", lambda package: tmp_path)  # the installed package's folder
    assert files.shipped_file("emotion_model.h5") == tmp_path / "models" / "emotion_model.h5"
    assert files.shipped_file("detector.onnx") == files.PROJECT_DIR / "models" / "detector.onnx"


def test_a_walk_without_a_skipped_list_passes_over_what_it_cannot_read(tmp_path):
    touch(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    assert walk_files(tmp_path, ANY) == [tmp_path / "a.jpg"]


def test_a_walk_goes_on_past_rejected_names_and_revisited_folders(tmp_path):
    for name in ("a/1.txt", "a/2.jpg", "a/3.txt", "a/4.jpg", "z/5.jpg"):
        touch(tmp_path / name)
    os.symlink(tmp_path / "a", tmp_path / "b")  # "a" again, walked once; "z" comes after it
    found = walk_files(tmp_path, lambda name: name.endswith(".jpg"))
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["a/2.jpg", "a/4.jpg", "z/5.jpg"]


def test_each_file_passed_over_in_a_walk_says_why(tmp_path):
    outside = touch(tmp_path / "outside.jpg")
    folder = tmp_path / "class"
    touch(folder / "good.jpg")
    os.symlink(outside, folder / "linked.jpg")
    os.symlink(tmp_path / "nowhere.jpg", folder / "dangling.jpg")
    skipped = []
    assert walk_files(folder, ANY, confine=True, skipped=skipped) == [folder / "good.jpg"]
    assert skipped == [(folder / "dangling.jpg", "No such file or directory"),
                       (folder / "linked.jpg", "a link that leads out of its class folder")]


def test_a_lock_file_gets_the_usual_mode_and_an_unused_lock_releases_quietly(tmp_path):
    RunLock(tmp_path / "never").release()  # never acquired: nothing to release
    before = os.umask(0o022)
    try:
        lock = RunLock(tmp_path).acquire()
    finally:
        os.umask(before)
    lock.release()
    assert (tmp_path / LOCK_NAME).stat().st_mode & 0o777 == 0o644


def test_a_lock_held_by_a_process_that_wrote_nothing_names_another_process(tmp_path):
    import fcntl

    with open(tmp_path / LOCK_NAME, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError) as refused:
            RunLock(tmp_path).acquire()
    assert str(refused.value) == (f"{tmp_path}: in use by another run (another process); wait for it or choose "
                                  "another --output-dir")


def test_a_lock_the_file_system_cannot_give_is_one_line(tmp_path, monkeypatch):
    import errno

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")  # NFS without a lock daemon

    monkeypatch.setattr(files.fcntl, "flock", no_locks)
    with pytest.raises(UserError) as refused:
        RunLock(tmp_path).acquire()
    assert str(refused.value) == f"{tmp_path}: cannot be locked (No locks available)"


def test_a_confined_walk_goes_on_past_a_folder_link_leading_out(tmp_path):
    (tmp_path / "outside").mkdir()
    happy = tmp_path / "happy"
    (happy / "b").mkdir(parents=True)
    (happy / "a_link").symlink_to(tmp_path / "outside")
    touch(happy / "b" / "face.jpg")
    skipped = []
    assert walk_files(happy, ANY, confine=True, skipped=skipped) == [happy / "b" / "face.jpg"]
    assert [path.name for path, _ in skipped] == ["a_link"]
