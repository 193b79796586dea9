"""The undo journal: every genre write gtag makes, recorded (and committed) before the file changes.

One SQLite file next to the prediction cache (``undo.sqlite3``; ``$GTAG_JOURNAL`` or ``--journal``
elsewhere). Each write is a row: the run, the time, the file's content key (``gtag.tags.content``: the
same after a retag, a move or a rename), its path and format, its genre fields before (exactly as
stored, ``gtag.tags.genrefields``) and after, and a state: ``pending`` when recorded, ``written`` once
the file was replaced, ``failed`` when the write did not happen. A kill -9 between the two leaves a
``pending`` row, which `gtag undo` settles by looking at the file: still as before (nothing to
undo) or as gtag meant to write it (restored). The journal only ever adds to what a write risks:
a journal that cannot be written means the file is not written. Format: docs/undo.md.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gtag import __version__
from gtag.tags import formats, writing
from gtag.tags.content import ContentError, content_key
from gtag.tags.genrefields import EXTRA_NAMES, Fields, read_fields

__all__ = ["Entry", "Journal", "JournalError", "RunJournal", "default_journal_path", "expected_fields"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    command TEXT NOT NULL,
    version TEXT NOT NULL,
    signature TEXT NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    time REAL NOT NULL,
    content TEXT,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    state TEXT NOT NULL,
    undone TEXT
);
CREATE INDEX IF NOT EXISTS writes_content ON writes (content);
CREATE INDEX IF NOT EXISTS writes_path ON writes (path);
"""
PENDING, WRITTEN, FAILED = "pending", "written", "failed"


class JournalError(Exception):
    """The journal cannot be opened or appended to; the message is one line."""


def default_journal_path() -> Path:
    """$GTAG_JOURNAL, else ``undo.sqlite3`` beside the prediction cache (e.g. ~/.cache/gtag/)."""
    env = os.environ.get("GTAG_JOURNAL")
    if env:
        return Path(env).expanduser()
    from gtag.run.cache import default_cache_path

    return default_cache_path().parent / "undo.sqlite3"


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def path_text(path: str | os.PathLike[str]) -> str:
    """A resolved path as SQLite text (a non-UTF-8 name keeps its bytes as escapes)."""
    return os.fsencode(Path(path).resolve()).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Entry:
    """One recorded write."""

    seq: int
    run: str
    time: float
    content: str | None
    path: str
    format: str
    before: Fields
    after: Fields
    state: str
    undone: str | None
    command: str = "tag"


class Journal:
    """The journal file, opened (and created) once per command."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            if self.path.is_dir():
                raise JournalError(f"undo journal {self.path} is a folder, not a file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut
            self.db.executescript(SCHEMA)
            self.db.commit()
        except JournalError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot use the undo journal {self.path} ({_reason(exc)}); "
                               "pass --journal with another file") from None

    def start_run(self, command: str, signature: str = "", options: Mapping | None = None) -> str:
        """A new run's id (``YYYYmmddTHHMMSSZ-xxxx``), recorded."""
        run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)
        self._commit("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                     (run, time.time(), command, __version__, signature, json.dumps(dict(options or {}))))
        return run

    def _commit(self, sql: str, args: Sequence) -> int:
        try:
            cur = self.db.execute(sql, args)
            self.db.commit()
            return cur.lastrowid
        except sqlite3.Error as exc:
            try:
                self.db.rollback()
            except sqlite3.Error:
                pass
            raise JournalError(f"undo journal {self.path} cannot be written ({_reason(exc)})") from None

    def record(self, run: str, path: str | os.PathLike[str], content: str | None, fmt: str,
               before: Fields, after: Fields) -> int:
        """Append a pending write and commit it; its ``seq``. JournalError when it cannot."""
        return self._commit("INSERT INTO writes (run, time, content, path, format, before, after, state) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (run, time.time(), content, path_text(path), fmt, json.dumps(before),
                             json.dumps(after), PENDING))

    def settle(self, seq: int, state: str, after: Fields | None = None) -> None:
        """Mark a write done or failed. Best effort: a row left pending is settled by `gtag undo`."""
        try:
            if after is None:
                self._commit("UPDATE writes SET state=? WHERE seq=?", (state, seq))
            else:
                self._commit("UPDATE writes SET state=?, after=? WHERE seq=?", (state, json.dumps(after), seq))
        except JournalError:
            pass

    def mark_undone(self, seq: int, run: str) -> None:
        self._commit("UPDATE writes SET undone=? WHERE seq=?", (run, seq))

    def candidates(self, content: str | None, path: str | os.PathLike[str], run: str | None = None) -> list[Entry]:
        """gtag tag writes (not failed, not undone) of this content or at this path, newest first."""
        sql = ("SELECT w.seq, w.run, w.time, w.content, w.path, w.format, w.before, w.after, w.state, w.undone, "
               "r.command FROM writes w JOIN runs r ON r.id = w.run WHERE r.command = 'tag' AND w.state != ? "
               "AND w.undone IS NULL AND (w.content = ? OR w.path = ?)")
        args: list = [FAILED, content, path_text(path)]
        if run is not None:
            sql += " AND w.run = ?"
            args.append(run)
        return self._entries(sql + " ORDER BY w.seq DESC", args)

    def run_entries(self, run: str) -> list[Entry]:
        sql = ("SELECT w.seq, w.run, w.time, w.content, w.path, w.format, w.before, w.after, w.state, w.undone, "
               "r.command FROM writes w JOIN runs r ON r.id = w.run WHERE w.run = ? ORDER BY w.seq")
        return self._entries(sql, [run])

    def _entries(self, sql: str, args: Sequence) -> list[Entry]:
        try:
            rows = self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"undo journal {self.path} cannot be read ({_reason(exc)})") from None
        out = []
        for seq, run, t, content, path, fmt, before, after, state, undone, command in rows:
            try:
                out.append(Entry(seq, run, t, content, path, fmt, json.loads(before), json.loads(after), state,
                                 undone, command))
            except (TypeError, ValueError):
                continue  # a damaged row: that write cannot be undone, the others still can
        return out

    def runs(self) -> list[dict]:
        """Every run, oldest first, with how many files it wrote and how many are undone."""
        try:
            rows = self.db.execute(
                "SELECT r.id, r.started, r.command, r.version, r.signature, "
                "SUM(w.state != 'failed'), SUM(w.undone IS NOT NULL) FROM runs r LEFT JOIN writes w ON w.run = r.id "
                "GROUP BY r.id ORDER BY r.started").fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"undo journal {self.path} cannot be read ({_reason(exc)})") from None
        return [{"run": r[0], "started": r[1], "command": r[2], "version": r[3], "signature": r[4],
                 "files": r[5] or 0, "undone": r[6] or 0} for r in rows]

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


def expected_fields(before: Fields, fmt: str, genres: Sequence[str], extra: Mapping[str, str] | None,
                    separator: str | None) -> Fields:
    """The fields a ``writing.write_genres`` of these arguments leaves (what a pending row expects)."""
    after = dict(before)
    container = fmt.split("/", 1)[1] if "/" in fmt else fmt
    style = next(s for s in formats.STYLES if container.startswith(s.container))
    genre_key = f"{style.container}:{style.genre_key}"
    after[genre_key] = formats._stored(list(genres), container == "id3v2.3", separator)
    for key in style.stale_keys:
        after[f"{style.container}:{key}"] = []
    for name in EXTRA_NAMES:
        if extra and name in extra:
            after[f"{style.container}:{style.extra_key.format(name=name)}"] = [extra[name]]
    if "riff:IGNR" in before:
        ignr = formats._info_genre(list(genres), separator)
        after["riff:IGNR"] = [ignr] if ignr else []
    return after


class RunJournal:
    """One `gtag tag` run's journal: ``write_genres`` as ``gtag.tags.writing.write_genres``, recorded first."""

    def __init__(self, journal: Journal, run: str):
        self.journal, self.run = journal, run

    def write_genres(self, path, genres, extra=None, separator=None, *, expect=None) -> list[str]:
        fmt, before = read_fields(path)
        try:
            content = content_key(path)
        except (OSError, ContentError):
            content = None  # found by its path only
        after = expected_fields(before, fmt, genres, extra, separator)
        try:
            seq = self.journal.record(self.run, path, content, fmt, before, after)
        except JournalError as exc:
            raise formats.TagError(f"{path}: {exc}; file not modified") from None
        try:
            stored = writing.write_genres(path, genres, extra, separator=separator, expect=expect)
        except formats.TagError:
            self.journal.settle(seq, FAILED)  # the original is untouched
            raise
        # Anything else (Ctrl-C at any point) leaves the row pending: `gtag undo` looks at the file.
        try:
            after = read_fields(path)[1]
        except formats.TagError:
            pass  # the expected fields stay recorded
        self.journal.settle(seq, WRITTEN, after)
        return stored
