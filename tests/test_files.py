"""facial_emotion.files: folder walks, whole-or-nothing writes, JSON reading, run-folder locks."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import deadline
from facial_emotion.errors import UserError
from facial_emotion.files import (LOCK_NAME, RunLock, claim_run_folder, create_new_file, read_json,
                                  replace_atomically, walk_files)

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
    with pytest.raises(UserError, match="unreadable"):
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
    with pytest.raises(UserError, match="already holds files"):
        claim_run_folder(busy, tmp_path / "runs")
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
