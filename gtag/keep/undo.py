"""`gtag undo`: give files back the genre fields they had before gtag's last write (or a given run's).

Files are found in the journal (``gtag.keep.journal``) by their content key first, so a file moved or
renamed since is still found, and by path second (its content key could not be computed). A file
is restored only when its genre fields are still what gtag wrote; one that someone changed since
is refused (``--force`` restores it anyway), and one that is still as it was before the write (a
run killed before the rename) needs nothing. The restore is itself recorded in the journal and is
written as safely as a tag write (``gtag.tags.genrefields.restore_fields``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gtag.keep.journal import FAILED as FAILED_WRITE
from gtag.keep.journal import WRITTEN, Entry, Journal, JournalError, path_text
from gtag.run.cache import file_identity
from gtag.run.library import walk
from gtag.tags.content import ContentError, content_key
from gtag.tags.formats import TagError
from gtag.tags.genrefields import Fields, primary, read_fields, restore_fields

__all__ = ["UndoOptions", "UndoResult", "compare", "run_undo", "undo_files"]

RESTORED, WOULD_RESTORE, NOTHING, REFUSED, NOT_FOUND, NO_RECORD, FAILED = (
    "restored", "would restore", "nothing to undo", "refused", "not found", "no gtag write recorded", "failed")
AS_WRITTEN, AS_BEFORE, CHANGED = "as written", "as before", "changed"


@dataclass(frozen=True)
class UndoOptions:
    run: str | None = None  # undo this run's writes (default: each file's last gtag write)
    force: bool = False  # restore a file whose genre was changed since by someone else
    dry_run: bool = False  # say what would be restored, change nothing


@dataclass
class UndoResult:
    path: str
    status: str
    message: str = ""  # one line, without the path
    entry: Entry | None = None


def compare(entry: Entry, current: Fields) -> str:
    """Whether a file's genre fields are still as gtag wrote them, back as they were before, or
    changed since by someone else (the ID3v1 byte and an MP3's APEv2 tag are not looked at)."""
    after, before, now = primary(entry.after), primary(entry.before), primary(current)
    keys = set(after) | set(before)
    if all(now.get(k, []) == after.get(k, []) for k in keys):
        return AS_WRITTEN
    if all(now.get(k, []) == before.get(k, []) for k in keys):
        return AS_BEFORE
    return CHANGED


def _genre(fields: Fields) -> str:
    """The genre values of the main genre field, for a message."""
    key = next((k for k in fields if k.split(":", 1)[1] in ("TCON", "GENRE", "\xa9gen", "WM/Genre", "Genre")
                and not k.startswith(("id3v1:", "apev2:"))), None)
    values = fields.get(key, []) if key else []
    if not values and fields.get("riff:IGNR"):
        values = fields["riff:IGNR"]
    return "; ".join(values) or "no genre"


def _when(entry: Entry) -> str:
    return f"run {entry.run}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(entry.time))}"


def _pick(candidates: list[Entry], key: str | None, path: Path) -> Entry | None:
    """The newest write of this file: of its content, at this path first (copies of one track
    elsewhere have their own rows); a row at this path about other audio is never used."""
    here = path_text(path)
    mine = [c for c in candidates if c.content == key and key is not None]
    by_path = [c for c in candidates if c.path == here and (c.content is None or key is None)]
    return next(iter([c for c in mine if c.path == here] or mine or by_path), None)


def undo_files(journal: Journal, paths: Sequence[Path], opts: UndoOptions, undo_run: str | None) -> Iterator[UndoResult]:
    """One UndoResult per audio file under ``paths`` (``undo_run``: the journal run recording the
    restores; None in a dry run), then one NOT_FOUND per write of ``opts.run`` not found there."""
    used: set[int] = set()
    for path in walk(paths):
        identity = file_identity(path)
        try:
            fmt, current = read_fields(path)
        except TagError as exc:
            yield UndoResult(str(path), FAILED, _strip(str(exc), path))
            continue
        try:
            key = content_key(path)
        except (OSError, ContentError):
            key = None
        entry = _pick(journal.candidates(key, path, opts.run), key, path)
        if entry is None:
            yield UndoResult(str(path), NO_RECORD)
            continue
        used.add(entry.seq)
        yield _undo_one(journal, path, fmt, key, identity, current, entry, opts, undo_run)
    if opts.run is not None:
        roots = [path_text(p) for p in paths]
        for e in journal.run_entries(opts.run):
            if e.state != FAILED_WRITE and e.undone is None and e.seq not in used and _under(e.path, roots):
                yield UndoResult(e.path, NOT_FOUND, "not found under the given paths (moved out of them, or its "
                                 "audio changed); its genre before the run was " + _genre(e.before), e)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _strip(msg: str, path: Path) -> str:
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _undo_one(journal: Journal, path: Path, fmt: str, key: str | None, identity, current: Fields, entry: Entry,
              opts: UndoOptions, undo_run: str | None) -> UndoResult:
    state = compare(entry, current)
    moved = "" if entry.path == path_text(path) else f", then at {entry.path}"
    if state == AS_BEFORE:
        if undo_run is not None:
            journal.mark_undone(entry.seq, undo_run)
        why = "the write never happened (interrupted run)" if entry.state != WRITTEN else "it is back as before"
        return UndoResult(str(path), NOTHING, f"nothing to undo: {why}, {_genre(entry.before)} ({_when(entry)}{moved})",
                          entry)
    if state == CHANGED and not opts.force:
        return UndoResult(str(path), REFUSED, f"genre changed since gtag wrote it (now {_genre(current)}, gtag wrote "
                          f"{_genre(entry.after)}, {_when(entry)}): not restored; --force restores "
                          f"{_genre(entry.before)}", entry)
    change = f"{_genre(current)} → {_genre(entry.before)}"
    if opts.dry_run or undo_run is None:
        return UndoResult(str(path), WOULD_RESTORE, f"would restore {change} ({_when(entry)}{moved})", entry)
    try:
        seq = journal.record(undo_run, path, key, fmt, current, entry.before)
    except JournalError as exc:
        return UndoResult(str(path), FAILED, f"{exc}; file not modified", entry)
    try:
        back = restore_fields(path, entry.before, expect=identity)
    except TagError as exc:
        journal.settle(seq, FAILED_WRITE)
        return UndoResult(str(path), FAILED, _strip(str(exc), path), entry)
    journal.settle(seq, WRITTEN, back)
    journal.mark_undone(entry.seq, undo_run)
    inexact = [k for k, v in entry.before.items() if back.get(k, []) != v]
    note = f"; {', '.join(inexact)} read back as {', '.join(map(repr, (back.get(k) for k in inexact)))}" if inexact else ""
    return UndoResult(str(path), RESTORED, f"restored {change} ({_when(entry)}{moved}){note}", entry)


def run_undo(paths: Sequence[Path], opts: UndoOptions, journal_path: Path | None, out, err, list_runs: bool = False) -> int:
    """The `gtag undo` command; its exit code (1 when a file was refused, failed or not found)."""
    from rich.markup import escape

    from gtag.exitcodes import Exit
    from gtag.keep.journal import default_journal_path
    from gtag.output import one_line

    path = journal_path or default_journal_path()
    if not path.exists():
        err.print(f"[red]error:[/] no undo journal at {escape(one_line(str(path)))}: gtag has recorded no write there")
        return Exit.USAGE
    try:
        journal = Journal(path)
    except JournalError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        return Exit.USAGE
    try:
        if list_runs:
            for r in journal.runs():
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
                out.print(f"{r['run']}  {when}  gtag {r['command']:<4}  {r['files']} files written, {r['undone']} undone"
                          f"  [dim]gtag {escape(r['version'])} {escape(r['signature'][:12])}[/]")
            return Exit.OK
        undo_run = None if opts.dry_run else journal.start_run("undo", "", {"run": opts.run, "force": opts.force})
        counts: dict[str, int] = {}
        for res in undo_files(journal, paths, opts, undo_run):
            counts[res.status] = counts.get(res.status, 0) + 1
            line = f"{escape(one_line(res.path))}: {escape(one_line(res.message))}"
            if res.status in (FAILED, REFUSED, NOT_FOUND):
                err.print(f"[red]{res.status}:[/] {line}" if res.status == FAILED else f"[yellow]{res.status}:[/] {line}")
            elif res.status != NO_RECORD:
                out.print(line)
        out.print(", ".join(f"{n} {s}" for s, n in counts.items()) or "no audio files")
        bad = any(counts.get(s) for s in (FAILED, REFUSED, NOT_FOUND))
        return Exit.FAILED if bad else Exit.OK
    except JournalError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        return Exit.FAILED
    finally:
        journal.close()
