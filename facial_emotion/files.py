"""Files the tool reads and writes: folder walks, whole-or-nothing writes, run-folder locks,
paths that travel with a model."""

import errno
import fcntl
import hashlib
import importlib.resources as resources
import json
import os
import stat
import tempfile
from pathlib import Path

from facial_emotion.errors import UserError, first_line

# The project's own files (models/, dataset/) are found from the package's folder, never from the
# working directory.
PROJECT_DIR = Path(__file__).resolve().parent.parent


def shipped_file(name):
    """A file the project ships in models/ (the model, the face detector): inside the installed
    package (facial_emotion/models, put there by pyproject.toml), else in the clone's models/."""
    installed = resources.files("facial_emotion").joinpath("models", name)
    return Path(str(installed)) if installed.is_file() else PROJECT_DIR / "models" / name


# The lock file of a run folder; hidden, so that it never counts as the folder holding files.
LOCK_NAME = ".run.lock"
# The deepest JSON a model description or run state may nest: real ones nest 4 levels; Python's
# parser would recurse past its limit on a hostile file 50,000 levels deep.
MAX_JSON_DEPTH = 64
# The largest JSON read: a model description or run state is under 20 KB; a gigabyte one would
# take seconds and gigabytes of memory to refuse.
MAX_JSON_BYTES = 10_000_000


def describe_oserror(error):
    return error.strerror or str(error)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def check_regular_file(path):
    """A path that exists and is a regular file; FIFOs, sockets and devices are refused (opening
    a FIFO waits forever for a writer). Errors name the path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({describe_oserror(error)})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: not a regular file (a FIFO, socket or device); skipped")


def walk_files(folder, accept, confine=False, skipped=None):
    """The regular files below `folder` whose names `accept` takes, in walking order (folders and
    files sorted); hidden ones skipped; linked folders followed, each real folder once, so a
    symlink loop is walked once, not forever.

    `confine`: links that lead out of `folder` are not followed (a class folder's images are the
    files under it). What is passed over for a reason (a link leading out, a FIFO) is appended to
    `skipped` as (path, reason).
    """
    skipped = [] if skipped is None else skipped
    found, seen, top = [], set(), os.path.realpath(folder)
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if confine and not _is_inside(real, top):
            skipped.append((Path(root), f"a link that leads out of {folder}"))
            folders[:] = []
            continue
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not accept(name):
                continue
            path = Path(root) / name
            reason = _why_not_readable(path, top if confine else None)
            if reason:
                skipped.append((path, reason))
            else:
                found.append(path)
    return found


def _is_inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _why_not_readable(path, confined_to):
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return describe_oserror(error)
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, socket or device)"
    if confined_to is not None and not _is_inside(os.path.realpath(path), confined_to):
        return "a link that leads out of its class folder"
    return None


def read_json(path, what="file"):
    """A JSON file's content; a file that is not JSON, or nests absurdly deep, is a UserError."""
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise UserError(f"{path}: not a valid {what} (over {MAX_JSON_BYTES // 1_000_000} MB)")
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: unreadable {what} ({describe_oserror(error) if isinstance(error, OSError) else first_line(error)})") from None
    depth = max_bracket_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise UserError(f"{path}: not a valid {what} (nested {depth} levels deep)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise UserError(f"{path}: not a valid {what} ({first_line(error)})") from None


def max_bracket_depth(text):
    """An upper bound of a JSON text's nesting, counted without parsing it (brackets inside
    strings count too, which only makes the bound higher)."""
    depth = deepest = 0
    for character in text:
        if character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    return deepest


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing: whole or not at all
# ---------------------------------------------------------------------------------------------
def temporary_path(path):
    """A new, empty, uniquely named hidden file beside `path`, with the same suffix (Keras and
    matplotlib pick the format from it), created exclusively: no other run, and no link planted
    under a predictable name, can share or redirect it. The caller writes it and renames it."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    try:
        os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp's 0600 would hide the file from others
    finally:
        os.close(handle)
    return Path(name)


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_atomically(path, write):
    """Call write(temporary sibling), then rename it over `path`: a crash, a full disk, Ctrl-C or
    a refused write never leaves a broken file where a good one was. Errors a user can fix
    (permissions, no space, a name too long) become one line naming the file."""
    path, partial = Path(path), None
    try:
        partial = temporary_path(path)
        write(partial)
        os.replace(partial, path)
    except BaseException as error:
        # Any exception, Ctrl-C and SIGTERM (raised as KeyboardInterrupt) included: a
        # half-written file must not outlive the write that made it.
        if partial is not None:
            remove_quietly(partial)
        if isinstance(error, OSError):
            raise UserError(f"{path}: cannot write ({describe_oserror(error)}); nothing there was changed") from None
        raise


def create_new_file(path, write, what="file", renumber=False):
    """Call write(temporary sibling), then give it the name `path` only if that name is still
    free: the file appears whole or not at all, and never replaces anything, even a file made
    since the run started (with `renumber`, it then takes the next free name: see give_name).
    A failed write leaves nothing that would block a retry. Returns the name given."""
    path, partial = Path(path), None
    try:
        partial = temporary_path(path)
        write(partial)
        return link_new_name(partial, path, renumber)
    except FileExistsError:
        raise UserError(f"{path}: already exists; choose another {what}") from None
    except OSError as error:
        raise UserError(f"{path}: cannot write {what} ({describe_oserror(error)})") from None
    finally:
        if partial is not None:
            remove_quietly(partial)


def give_name(partial, path, what="file", renumber=False):
    """Give a finished partial file its name, only if that name is still free (never over a
    file), and remove the partial either way. With `renumber`, a name taken during the run (by
    another run writing the same output) gives way to NAME_2, NAME_3, ...: the work is kept under
    a free name. Returns the name given."""
    try:
        return link_new_name(partial, path, renumber)
    except FileExistsError:
        raise UserError(f"{path}: appeared during the run; the {what} was not written over it") from None
    except OSError as error:
        raise UserError(f"{path}: cannot write {what} ({describe_oserror(error)})") from None
    finally:
        remove_quietly(partial)


def link_new_name(partial, path, renumber):
    """os.link to `path`, which fails with FileExistsError if the name is taken (unlike a
    rename); with `renumber`, to the first free of NAME_2, NAME_3, ... instead."""
    path = Path(path)
    if not renumber:
        os.link(partial, path)
        return path
    for number in range(1, 1000):
        candidate = path if number == 1 else path.with_name(f"{path.stem}_{number}{path.suffix}")
        try:
            os.link(partial, candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(path)


def remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json_atomically(data, path):
    def write(partial):
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")

    replace_atomically(path, write)


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run folder, held while a run writes there: a second run into the
    same folder is refused, naming the process that holds it. The operating system releases it
    when the process ends, however it ends, so a killed run leaves no stale lock."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_NAME
        self.handle = None

    def acquire(self):
        try:  # O_NOFOLLOW: a link planted as the lock file is refused, never written through
            handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+", encoding="utf-8")
        except OSError as error:
            raise UserError(f"{self.path.parent}: cannot be locked ({describe_oserror(error)})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(f"{self.path.parent}: in use by another run ({holder}); "
                                "wait for it or choose another --output-dir") from None
            raise UserError(f"{self.path.parent}: cannot be locked ({describe_oserror(error)})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self.handle = handle
        return self

    def release(self):
        if self.handle is not None:
            self.handle.close()  # closing the file releases the lock
            self.handle = None


def holds_files(folder):
    """Whether a folder holds anything but its lock file."""
    return any(entry.name != LOCK_NAME for entry in Path(folder).iterdir())


def claim_run_folder(output_dir, runs_dir, stem="train", overwrite=False, protected=()):
    """The run folder, created and locked (returns (folder, RunLock)): the user's, refused if it
    holds files unless `overwrite`, or the first free one of runs_dir/<stem>, <stem>2, ... The
    lock is taken before the folder is checked, so two runs started at once cannot both pass."""
    if output_dir is None:
        output_dir = next(runs_dir / (stem if index == 1 else f"{stem}{index}") for index in range(1, 100000)
                          if not (runs_dir / (stem if index == 1 else f"{stem}{index}")).exists())
    output_dir = Path(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"{output_dir}: exists and is not a folder")
    if any(output_dir.resolve() == Path(folder).resolve() for folder in protected) and not overwrite:
        raise UserError(f"{output_dir}: holds the shipped model; pass --overwrite to replace it")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{output_dir}: cannot create ({describe_oserror(error)})") from None
    if not os.access(output_dir, os.W_OK):
        raise UserError(f"{output_dir}: not writable")
    lock = RunLock(output_dir).acquire()
    if holds_files(output_dir) and not overwrite:
        lock.release()
        raise UserError(f"{output_dir}: already holds files from another run; "
                        "choose another --output-dir or pass --overwrite")
    return output_dir, lock


# ---------------------------------------------------------------------------------------------
# Paths that travel with a model
# ---------------------------------------------------------------------------------------------
def portable_path(path):
    """A path for a model's JSON that says nothing about this machine: relative to the project
    when inside it, else as given when relative, else its last two parts."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(Path(*path.parts[-2:]))


def portable_record(value):
    """A JSON record (an older run's, say) with every absolute path in it made portable."""
    if isinstance(value, dict):
        return {key: portable_record(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable_record(item) for item in value]
    if isinstance(value, str) and "/" in value:
        return " ".join(portable_path(part) if os.path.isabs(part) else part for part in value.split(" "))
    return value


def portable_command(argv):
    """The command line, with absolute paths made portable (see portable_path)."""
    return " ".join([Path(argv[0]).name] + [portable_path(arg) if os.path.isabs(arg) else arg for arg in argv[1:]])
