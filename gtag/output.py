"""Standard output and error that cannot break a run: `gtag tag … > /dev/full`, `| head -1`, a
terminal that went away, or one whose encoding is not UTF-8.

``GuardedStream`` is the file of gtag's rich consoles. It looks the stream up at each write (so
click's test runner, which swaps ``sys.stdout``, still sees everything) and:

- writes what the stream's encoding cannot hold with ASCII stand-ins ("—" as "-", "→" as "->",
  anything else as a ``\\uXXXX`` escape) instead of raising UnicodeEncodeError;
- turns a failed write into a note (``lost``) instead of an exception, and points the descriptor
  at /dev/null so that later writes, Python's own flush at exit included, cannot fail again. The
  tagging goes on; the command says once, on stderr, that its output was lost.
- notes a closed pipe (EPIPE: the reader of `gtag tag … | head -1` has gone) in ``closed_pipe``:
  the command stops at the next file boundary, quietly, as `git log | head` does.
"""

from __future__ import annotations

import errno
import os
import re
import sys

# Stand-ins for the non-ASCII characters gtag's own messages and rich's tables use.
ASCII = str.maketrans({
    "—": "-", "–": "-", "→": "->", "…": "...", "·": "-", "≥": ">=", "≤": "<=", "×": "x",
    "‘": "'", "’": "'", "“": '"', "”": '"', "━": "-", "─": "-", "│": "|", "┃": "|", "╇": "+",
    "┼": "+", "┡": "+", "┩": "+",
})  # fmt: skip


def fit_encoding(text: str, encoding: str) -> str:
    """``text`` as ``encoding`` can hold it: the ASCII stand-ins first, then escapes."""
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    text = text.translate(ASCII)
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding, "replace")
    except LookupError:
        return text.encode("ascii", "backslashreplace").decode("ascii")


class GuardedStream:
    """A text stream for rich's Console over ``sys.stdout`` or ``sys.stderr`` (by name)."""

    def __init__(self, name: str):
        self.name = name
        self.lost: str | None = None  # why the output was lost (e.g. "No space left on device")
        self.closed_pipe = False  # the reader went away (EPIPE)

    @property
    def stream(self):
        stream = getattr(sys, self.name)
        # While a progress bar shows on a terminal, rich points sys.stdout/sys.stderr at a proxy that
        # writes through the console, i.e. back here: write to the stream it stands for.
        while hasattr(stream, "rich_proxied_file"):
            stream = stream.rich_proxied_file
        return stream

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def reset(self) -> None:
        """A new command starts (click's test runner runs several in one process)."""
        self.lost, self.closed_pipe = None, False

    def isatty(self) -> bool:
        try:
            return self.stream is not None and bool(self.stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self.stream.fileno()

    def write(self, text: str) -> int:
        if self.lost is None and self.stream is None:  # started with the stream closed (`>&-`)
            self.lost = "it is closed"
        if self.lost is None:
            try:
                try:
                    self.stream.write(text)
                except UnicodeEncodeError:  # nothing was written: the whole text is encoded first
                    self.stream.write(fit_encoding(text, self.encoding))
                self.stream.flush()
            except OSError as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if self.lost is None and self.stream is not None:
            try:
                self.stream.flush()
            except OSError as exc:
                self._lose(exc)

    def _lose(self, exc: OSError) -> None:
        self.lost = exc.strerror or str(exc) or type(exc).__name__
        self.closed_pipe = isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE
        try:  # what is still buffered, and every later write, goes to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real descriptor (click's test runner): nothing more can fail there


STDOUT = GuardedStream("stdout")
STDERR = GuardedStream("stderr")


def one_line(text: str) -> str:
    """``text`` safe to print as one line: control characters (a newline in a file name) written
    as escapes, and the bytes of a non-UTF-8 name as \\xNN instead of an encoding error."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


# C0 and C1 controls (U+009B is a terminal's CSI, like ESC [), and the bidirectional overrides and
# isolates (U+202E shows "3pm.exe" as "exe.mp3"): shown as escapes, never sent to the terminal raw.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
