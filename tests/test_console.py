"""facial_emotion.console: help that shows defaults, quiet native stderr and warnings, and the
stop signals (Ctrl-C, SIGTERM, SIGHUP) that end a run at a safe point."""

import argparse
import os
import signal
import threading
import warnings

import pytest

from facial_emotion.console import HelpFormatter, StopSignals, quiet_native_stderr, quiet_python_warnings

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def test_help_shows_defaults_but_not_for_switches_or_flags_not_given():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--epochs", type=int, default=60, help="most epochs")
    parser.add_argument("--output-dir", default=None, help="where results go")
    parser.add_argument("--overwrite", action="store_true", help="allow it")
    parser.add_argument("--rate", type=float, default=0.0, help="a rate")
    parser.add_argument("--seed", type=int, default=0, help="a seed")
    text = " ".join(parser.format_help().split())
    assert "most epochs (default: 60)" in text and "a rate (default: 0.0)" in text
    assert "a seed (default: 0)" in text  # 0 == False, and is still a default worth showing
    assert "where results go" in text and "allow it" in text and text.count("(default:") == 3


def test_native_stderr_is_muted_inside_the_block_only(capfd):
    os.write(2, b"before\n")
    with quiet_native_stderr():
        os.write(2, b"muted\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_python_warnings_are_hidden_inside_the_block_only():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_python_warnings():
            warnings.warn("inside")
        warnings.warn("outside")
    assert [str(warning.message) for warning in seen] == ["outside"]


@pytest.mark.parametrize("number", STOPPING)
def test_the_first_signal_asks_for_a_stop_and_the_second_stops_at_once(number):
    with StopSignals() as stop:
        assert not stop.requested
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), number)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), number)


def test_a_shielded_block_is_not_interrupted_and_the_stop_is_seen_after_it():
    with StopSignals() as stop:
        with stop.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # a second one, too, waits for the block's end
            assert stop.shield
        assert not stop.shield and stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        with pytest.raises(KeyboardInterrupt):  # outside the block, a second signal stops again
            os.kill(os.getpid(), signal.SIGTERM)


def test_the_shield_is_lifted_when_its_block_fails():
    stop = StopSignals()
    with pytest.raises(OSError), stop.shielded():
        raise OSError("disk full")
    assert not stop.shield


def test_the_earlier_handlers_come_back_afterwards():
    calls = []
    before = {number: signal.signal(number, lambda *args: calls.append(args[0])) for number in STOPPING}
    try:
        installed = {number: signal.getsignal(number) for number in STOPPING}
        with StopSignals() as stop:
            assert all(signal.getsignal(number) == stop._handle for number in STOPPING)
        assert {number: signal.getsignal(number) for number in STOPPING} == installed
        os.kill(os.getpid(), signal.SIGHUP)
        assert calls == [signal.SIGHUP]
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_a_handler_python_did_not_install_comes_back_as_the_default():
    stop = StopSignals()
    stop.previous = {signal.SIGHUP: None}  # what signal.signal answers for a handler set outside Python
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop.__exit__(None, None, None)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


def test_outside_the_main_thread_signals_are_left_alone():
    before = {number: signal.getsignal(number) for number in STOPPING}
    seen = []

    def run():
        with StopSignals() as stop:
            seen.append((stop.previous, {number: signal.getsignal(number) for number in STOPPING}))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [({}, before)]
