"""How the command lines speak and end: user errors as one line, exit statuses, help with
defaults, quiet native libraries, and Ctrl-C or SIGTERM at safe points."""

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import warnings

# Exit status for errors the user can fix (bad path, bad file); argparse uses 2 for bad flags.
EXIT_USER_ERROR = 1
# Exit status after Ctrl-C or SIGTERM, as shells report a SIGINT death.
EXIT_INTERRUPTED = 130
# Control characters in a file name (a newline is legal on Linux) would break the one line per
# result and per error; they are printed escaped. JSON escapes them itself, CSV quotes them.
LINE_ESCAPES = {**{code: f"\\x{code:02x}" for code in [*range(32), 127, 0x85]},
                ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except for switches and flags whose default is "not given"."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


class UserError(Exception):
    """A problem the user can fix (bad path, bad file). Shown as one line, never a traceback."""


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
    """One line on stderr (escaped, see one_line)."""
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


@contextlib.contextmanager
def quiet_native_stderr():
    """Mute file descriptor 2 (native libraries' own messages: TensorFlow, FFmpeg) for a block."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet_python_warnings():
    """NumPy's and Pillow's warnings (NaN pixels, malformed EXIF) are about a file the user
    already gets one line for, or none: they are not shown as several lines of their own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class StopSignals:
    """Ctrl-C, SIGTERM or SIGHUP (kill, a job scheduler, a closed terminal) asks a run to stop at
    its next safe point: after the result in hand, or after the training batch in hand, never in
    the middle of writing a file. A second one stops at once (KeyboardInterrupt), except inside
    `shielded()`.

    Prediction reads `requested` after each result; training calls `check()`, which raises
    KeyboardInterrupt at a safe point once a stop was asked for.
    """

    def __init__(self):
        self.requested, self.previous, self.shield = False, {}, False

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self.previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, number, frame):
        if self.requested and not self.shield:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def shielded(self):
        """A block no signal interrupts, not even a second one (writing files that must agree
        with each other); a stop asked for meanwhile is seen at the next check()."""
        self.shield = True
        try:
            yield
        finally:
            self.shield = False

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        return False

    def check(self):
        if self.requested:
            raise KeyboardInterrupt
