"""Stop signals of a `gtag tag` run: SIGINT (Ctrl-C), SIGTERM and SIGHUP end it cleanly.

Each raises KeyboardInterrupt (``Terminated`` for SIGTERM, ``HungUp`` for SIGHUP: the terminal
was closed) in the main thread, so one code path
stops the worker pool, closes the cache and prints the summary of what was done. The signal is
also recorded, and the tagger checks the record between files: a library that swallows the
KeyboardInterrupt (numba printing it as "ignored" during a compile) cannot make the run go on.
Once the command has acknowledged the stop, further signals are recorded but do not interrupt
the clean-up and the summary.

A stop signal that was ignored when gtag started stays ignored. That is the Unix convention: a
shell without job control (a script's `cmd &`) starts a background job with SIGINT ignored, so a
Ctrl-C meant for the foreground does not stop it; Python itself keeps such a SIG_IGN, so every
command behaves alike. SIGTERM still stops such a run cleanly.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from gtag.exitcodes import Exit

EXIT_INTERRUPTED = Exit.INTERRUPTED  # 130 = 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = Exit.TERMINATED  # 143 = 128 + SIGTERM
EXIT_HUNG_UP = Exit.HUNG_UP  # 129 = 128 + SIGHUP: the terminal (or ssh session) went away
EXIT_PIPE = Exit.PIPE  # 141 = 128 + SIGPIPE: the reader of standard output went away (`gtag tag … | head`)

# The signals a run stops on (SIGHUP is not on Windows).
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (e.g. from `timeout` or a service manager)."""


class HungUp(Terminated):
    """SIGHUP arrived: the terminal that started the run was closed. Stopped as SIGTERM stops it."""


_state = {"received": [], "acknowledged": False}


def _stop_exception(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGTERM:
        return Terminated()
    return HungUp() if signum == getattr(signal, "SIGHUP", None) else KeyboardInterrupt()


def _handler(signum, frame) -> None:
    _state["received"].append(signum)
    if not _state["acknowledged"]:
        raise _stop_exception(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Route the STOP_SIGNALS through ``_handler`` while the block runs (main thread only)."""
    _state.update(received=[], acknowledged=False)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A stop signal ignored when gtag started (a script's background job, nohup) stays ignored.
    old = {s: signal.signal(s, _handler) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state.update(received=[], acknowledged=False)


def check() -> None:
    """Raise the stop a signal asked for, if one arrived and was not acted on yet."""
    if _state["received"] and not _state["acknowledged"]:
        raise _stop_exception(_state["received"][-1])


def acknowledge(exc: BaseException | None = None) -> int:
    """The run is stopping: later signals no longer interrupt. Returns the exit code to use."""
    _state["acknowledged"] = True
    if isinstance(exc, HungUp) or getattr(signal, "SIGHUP", None) in _state["received"]:
        return EXIT_HUNG_UP
    if isinstance(exc, Terminated) or signal.SIGTERM in _state["received"]:
        return EXIT_TERMINATED
    return EXIT_INTERRUPTED
