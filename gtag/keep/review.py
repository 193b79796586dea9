"""`gtag tag --from-report reviewed.csv`: write exactly what a person reviewed, as Picard's review-then-save.

The report of a ``gtag tag --dry-run --report r.csv`` (or ``.json``) run lists each file with the
genres it has (``existing``) and the ones gtag proposes (``written``). A person edits ``written``,
deletes the rows they reject, and applies the rest: no model is loaded, no file is analysed. A row
is refused, in one line, when the file's genres are no longer the ``existing`` of the report (the
file changed since). A row with an empty ``written`` is never applied (a review adds or corrects
genres; it does not strip them). Every write goes through the undo journal like any other.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gtag.run.cache import file_identity
from gtag.tags import formats, reading

__all__ = ["ReviewRow", "apply_review", "read_review"]

APPLIED, WOULD_APPLY, SAME, REFUSED, FAILED = "written", "would write", "unchanged", "refused", "failed"


class ReviewError(ValueError):
    """A report that cannot be read as one (one line)."""


@dataclass(frozen=True)
class ReviewRow:
    path: str
    existing: list[str]
    written: list[str]


def _values(value) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value or "").split(";") if v.strip()]  # the CSV report joins with ';'


def read_review(path: Path) -> list[ReviewRow]:
    """The rows of a CSV or JSON report of `gtag tag` (path, existing, written)."""
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
                raise ReviewError(f"{path}: not a gtag report (a JSON array of objects)")
            rows = data
        else:
            with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
                rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        if isinstance(exc, ReviewError):
            raise
        raise ReviewError(f"{path}: cannot read the report ({exc})") from None
    missing = [k for k in ("path", "existing", "written") if rows and k not in rows[0]]
    if missing:
        raise ReviewError(f"{path}: not a gtag report (no {', '.join(missing)} column)")
    return [ReviewRow(str(r["path"]), _values(r.get("existing")), _values(r.get("written"))) for r in rows]


def apply_review(rows: list[ReviewRow], writer, separator: str | None, dry_run: bool) -> Iterator[tuple[str, str, str]]:
    """(path, status, one-line message) per applicable row; ``writer`` has ``write_genres`` (a
    ``gtag.keep.journal.RunJournal``, or ``gtag.tags`` itself)."""
    for row in rows:
        if not row.written:
            continue
        path = Path(row.path)
        identity = file_identity(path)
        try:
            now = reading.read_genres(path, separator)
        except formats.TagError as exc:
            yield row.path, FAILED, str(exc)
            continue
        if now != row.existing:
            yield row.path, REFUSED, (f"{row.path}: changed since the report (it has {'; '.join(now) or 'no genre'}, "
                                      f"the report says {'; '.join(row.existing) or 'no genre'}), not written")
            continue
        if now == row.written:
            yield row.path, SAME, f"{row.path}: already {'; '.join(now)}"
            continue
        change = f"{'; '.join(now) or '—'} → {'; '.join(row.written)}"
        if dry_run:
            yield row.path, WOULD_APPLY, f"{row.path}: {change} (would write)"
            continue
        try:
            stored = writer.write_genres(path, row.written, None, separator=separator, expect=identity)
        except (formats.TagError, OSError, ValueError) as exc:
            yield row.path, FAILED, str(exc).splitlines()[0] if str(exc) else f"{row.path}: not written"
            continue
        kept = "" if stored == row.written else f"; the tag holds {'; '.join(stored)}"
        yield row.path, APPLIED, f"{row.path}: {change} (wrote, as reviewed{kept})"


def run_review(report: Path, writer, separator: str | None, dry_run: bool, out, err) -> int:
    """``gtag tag --from-report``: its exit code (1 when a row was refused or failed, 2: no report)."""
    from rich.markup import escape

    from gtag.exitcodes import Exit
    from gtag.output import one_line

    try:
        rows = read_review(report)
    except ReviewError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        return Exit.USAGE
    counts: dict[str, int] = {}
    for _, status, message in apply_review(rows, writer, separator, dry_run):
        counts[status] = counts.get(status, 0) + 1
        line = escape(one_line(message))
        if status in (REFUSED, FAILED):
            err.print(f"[{'red' if status == FAILED else 'yellow'}]{status}:[/] {line}")
        else:
            out.print(line)
    out.print(", ".join(f"{n} {s}" for s, n in counts.items()) or "no row to apply")
    return Exit.FAILED if counts.get(REFUSED) or counts.get(FAILED) else Exit.OK
