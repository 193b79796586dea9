"""gtag's exit codes: one table for every command, what scripts test ``$?`` against.

docs/exit-codes.md shows this table (tests/test_exit_codes.py keeps the two alike). The numbers of
earlier releases (0-3, 130, 143) keep their meaning; a new reason gets a new number. No imports
beyond the standard library: the CLI reads this before numpy or ONNX Runtime load.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Exit", "MEANINGS"]


class Exit(IntEnum):
    """Why a gtag command ended (an int: ``sys.exit(Exit.USAGE)`` exits 2)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NO_MODELS = 3
    NO_AUDIO = 4
    HUNG_UP = 129  # 128 + SIGHUP: the terminal (or ssh session) went away
    INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
    PIPE = 141  # 128 + SIGPIPE: the reader of standard output went away
    TERMINATED = 143  # 128 + SIGTERM


# One line per code, as docs/exit-codes.md shows it.
MEANINGS: dict[Exit, str] = {
    Exit.OK: "done: every file tagged, unchanged or skipped by policy (`tag`), every file predicted "
             "(`predict`), the model written (`learn`), the models listed (`models`)",
    Exit.FAILED: "at least one file failed (one `error:` line each; the others were processed), or the "
                 "`--report` could not be written (`tag`); fewer than two genres to learn (`learn`)",
    Exit.USAGE: "bad arguments or configuration, found before any file is touched: an unknown option, an "
                "invalid config file or genre in it, a `--report` folder that does not exist, an unusable "
                "cache, an unreadable `--map` file",
    Exit.NO_MODELS: "models missing, corrupt or unloadable, an invalid manifest, or a `--model` / `--models` "
                    "name that does not exist: nothing was processed",
    Exit.NO_AUDIO: "no audio files found under the paths given: nothing to do",
    Exit.INTERRUPTED: "interrupted (Ctrl-C, SIGINT): stopped cleanly, every file untouched or fully tagged; "
                      "run the same command again to resume",
    Exit.HUNG_UP: "hung up (SIGHUP: the terminal was closed): the same clean stop as SIGTERM",
    Exit.PIPE: "the reader of standard output went away (a pager, or `head`, closed the pipe): stopped quietly after the "
               "file in hand; run again to resume",
    Exit.TERMINATED: "terminated (SIGTERM, e.g. from `timeout` or a service manager): the same clean stop",
}
