"""Walking a music library: which files gtag looks at, in a stable order."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from gtag.audio.decode import AUDIO_EXTENSIONS


def is_audio_name(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_regular(path: str | os.PathLike) -> str | None:
    """Why ``path`` (after following symlinks) must not be opened, e.g. ``"a FIFO"``; None for a
    regular file or one that cannot be stat'ed (its reader reports that). Only ``stat`` is used:
    opening a FIFO blocks until a writer comes, and ``/dev/zero`` never ends."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "another kind of file")


def unreadable_reason(exc: OSError) -> str:
    """An OSError in a few words for a line of output: "permission denied", "file name too long"."""
    return (exc.strerror or type(exc).__name__).lower()


def walk(paths: Iterable[str | os.PathLike],
         on_error: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Audio files under ``paths``, sorted per folder, each real file once.

    Rules users expect from a tagger: hidden files and folders (dot names) are skipped; other
    extensions are ignored quietly; symbolic links are followed, but a folder already visited (a
    symlink loop, or two links to one folder) is not entered again. A file named explicitly is
    always yielded, whatever its name, so `gtag tag odd.bin` reports what happens to it. An audio
    name that is not a regular file (a FIFO, a device, a socket) is yielded too, so that the
    tagger reports it in one line without opening it (see ``not_regular``). The walk is
    iterative: a folder tree thousands of levels deep costs no recursion. A folder that cannot be
    listed (no permission, a path beyond PATH_MAX) is passed to ``on_error`` with the reason, so
    that the caller names it: its files are not skipped in silence.
    """
    report = on_error or (lambda path, reason: None)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def once(p: Path, seen: set[tuple[int, int]]) -> bool:
        try:
            st = p.stat()
        except (OSError, ValueError):
            return True  # broken link or vanished file: let the caller report it
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True

    def entries(d: Path) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(d) as it:
                return iter(sorted(it, key=lambda e: e.name))
        except OSError as exc:
            report(d, unreadable_reason(exc))
            return iter(())

    def visit(root: Path) -> Iterator[Path]:
        if not once(root, seen_dirs):
            return
        stack = [entries(root)]  # one iterator per open folder, deepest last
        while stack:
            e = next(stack[-1], None)
            if e is None:
                stack.pop()
                continue
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError as exc:
                report(p, unreadable_reason(exc))
                continue
            if is_dir:
                if once(p, seen_dirs):
                    stack.append(entries(p))
            elif is_audio_name(p) and once(p, seen_files):
                yield p

    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            yield from visit(p)
        elif once(p, seen_files):
            yield p
