"""Errors a user can cause and how they are said: UserError, one escaped line on stderr, exit
statuses, and the one-line answer for a missing package extra. (Help, signals and quiet native
libraries: console.py.)"""

import importlib.util
import sys

# Exit status for errors the user can fix (bad path, bad file); argparse uses 2 for bad flags.
EXIT_USER_ERROR = 1
# Exit status after Ctrl-C or SIGTERM, as shells report a SIGINT death.
EXIT_INTERRUPTED = 130
# Control characters in a file name (a newline is legal on Linux) would break the one line per
# result and per error; they are printed escaped. JSON escapes them itself, CSV quotes them.
LINE_ESCAPES = {**{code: f"\\x{code:02x}" for code in [*range(32), 127, 0x85]},
                ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class UserError(Exception):
    """A problem the user can fix (bad path, bad file). Shown as one line, never a traceback."""


class OutOfResources(UserError):
    """The process itself cannot go on (no file handles left): not one file's fault, so the batch
    stops with one line instead of blaming every file after it."""


def require_extra(module, what, extra):
    """A one-line UserError naming the package extra to install when `module` is missing: a
    prediction-only install (`pip install facial-emotion`) has no TensorFlow, say."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs {module}, which is not installed: pip install \"facial-emotion[{extra}]\"")


def emit(line, stream):
    """A line on stdout or stderr, past the progress bar if one is showing, flushed at once."""
    from tqdm import tqdm

    tqdm.write(line, file=stream)
    stream.flush()


def print_note(message):
    """One line on stderr (escaped, see one_line); nothing when stderr is closed (tqdm would
    write to stdout instead, into the JSON)."""
    if sys.stderr is None:
        return
    try:
        emit(one_line(message), sys.stderr)
    except (OSError, ValueError, AttributeError):  # stderr closed or full: nowhere left to say it
        pass


def print_error(message):
    print_note(f"error: {message}")


def first_line(error, limit=200):
    """An exception's message as one short line (its type when it has no message): how a
    library's multi-line error reaches the user inside a UserError."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def one_line(text):
    """Text safe to print as one line on any terminal: control characters escaped, and bytes of
    a file name that are not UTF-8 (kept by Python as lone surrogates) shown as \\xNN."""
    text = str(text).translate(LINE_ESCAPES)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


