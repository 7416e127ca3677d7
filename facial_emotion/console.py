"""What a command line needs besides its error lines (errors.py): help that shows the defaults,
Ctrl-C and SIGTERM at safe points, and native libraries and Python warnings kept quiet."""

import argparse
import contextlib
import os
import signal
import sys
import warnings



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except for switches and flags whose default is "not given"
    (a default of 0 is shown: `0 in (None, False)` would hide it, as 0 == False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


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
