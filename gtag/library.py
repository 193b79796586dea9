"""Walking a music library: which files gtag looks at, in a stable order."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .audio import AUDIO_EXTENSIONS


def is_audio_name(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def walk(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Audio files under ``paths``, sorted per folder, each real file once.

    Rules users expect from a tagger: hidden files and folders (dot names) are skipped; other
    extensions are ignored quietly; symbolic links are followed, but a folder already visited (a
    symlink loop, or two links to one folder) is not entered again. A file named explicitly is
    always yielded, whatever its name, so `gtag tag odd.bin` reports what happens to it.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def once(p: Path, seen: set[tuple[int, int]]) -> bool:
        try:
            st = p.stat()
        except OSError:
            return True  # broken link or vanished file: let the caller report it
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True

    def visit(d: Path) -> Iterator[Path]:
        if not once(d, seen_dirs):
            return
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return  # unreadable folder: nothing to tag there
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                yield from visit(p)
            elif is_audio_name(p) and once(p, seen_files):
                yield p

    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            yield from visit(p)
        elif once(p, seen_files):
            yield p
