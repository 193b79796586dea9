"""Stop signals of a `gtag tag` run: SIGINT (Ctrl-C) and SIGTERM end it cleanly.

Both raise KeyboardInterrupt (``Terminated`` for SIGTERM) in the main thread, so one code path
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

from .exitcodes import Exit

EXIT_INTERRUPTED = Exit.INTERRUPTED  # 130 = 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = Exit.TERMINATED  # 143 = 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (e.g. from `timeout` or a service manager)."""


_state = {"received": [], "acknowledged": False}


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame) -> None:
    _state["received"].append(signum)
    if not _state["acknowledged"]:
        raise _stop_exception(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Route SIGINT and SIGTERM through ``_handler`` while the block runs (main thread only)."""
    _state.update(received=[], acknowledged=False)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)
           if signal.getsignal(s) is not signal.SIG_IGN}
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
    if isinstance(exc, Terminated) or signal.SIGTERM in _state["received"]:
        return EXIT_TERMINATED
    return EXIT_INTERRUPTED
