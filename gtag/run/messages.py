"""The words for a file gtag could not read, decode or write, and for one it leaves as it was.

One place, so that `gtag tag`, `gtag predict`, `gtag learn` and the report say the same thing
about the same file, whichever reader met the problem first (mutagen reading the tags, or the
decoder reading the audio). Pure functions apart from ``path_problem``'s ``stat``; docs/exit-codes.md
lists the outcomes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from gtag.config import GenrePolicy
from gtag.run.library import not_regular

__all__ = ["NO_AUDIO", "file_failure", "folders_without_audio", "low_confidence_reason", "missing_audio",
           "not_a_regular_file", "path_problem", "refusal_reason"]

NO_AUDIO = "no audio files found"


def path_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with ``path`` itself, before any reader looks inside (None: nothing):
    missing, not a regular file, empty, or not readable. ``stat`` only: a FIFO is never opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "no such file"
    except PermissionError:
        return "permission denied, cannot read the file"
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or type(exc).__name__})"
    except ValueError:  # a NUL in the name: the reader reports it
        return None
    if not stat.S_ISREG(st.st_mode):
        return not_a_regular_file(not_regular(path) or "another kind of file")
    if st.st_size == 0:
        return "empty file"
    if not os.access(path, os.R_OK):
        return "permission denied, cannot read the file"
    return None


def not_a_regular_file(what: str) -> str:
    """The words for a FIFO, a device, a socket or a folder where a file was expected."""
    return f"{what}, not a regular file"


def file_failure(path: str | os.PathLike, exc: BaseException) -> str:
    """The one line a user sees for ``path`` failing with ``exc``, in every command and the report:
    ``PATH: what``. A problem of the file itself (``path_problem``) wins over a reader's words, so an
    empty ``.mp3`` is "empty file" whether mutagen or the decoder met it first."""
    problem = path_problem(path)
    if problem is not None:
        return f"{path}: {problem}"
    msg = str(exc).strip() or type(exc).__name__
    return msg if str(path) in msg else f"{path}: {msg}"


def folders_without_audio(paths: Iterable[str | os.PathLike], files: Sequence[Path]) -> list[Path]:
    """The folders among ``paths`` that hold none of ``files`` (the walk's result), leaving out a
    folder that is, or lies inside, one named before it (the walk visits a folder once)."""
    out: list[Path] = []
    seen: list[str] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.is_dir():
            continue
        real = os.path.realpath(p)
        inside = any(real == s or real.startswith(s.rstrip(os.sep) + os.sep) for s in seen)
        seen.append(real)
        if not inside and not any(f.is_relative_to(p) for f in files):
            out.append(p)
    return out


def missing_audio(paths: Sequence[str | os.PathLike], files: Sequence[Path]) -> tuple[str | None, list[str]]:
    """What to say about ``paths`` without audio files, given the walk's ``files``: (error, notes).
    The error when none holds any (the command then ends with ``Exit.NO_AUDIO``: nothing to do),
    else one note per folder that holds none (the others are processed)."""
    if not files:
        return f"{NO_AUDIO} under {', '.join(str(p) for p in paths)}", []
    return None, [f"{p}: {NO_AUDIO}" for p in folders_without_audio(paths, files)]


def refusal_reason(ranked: Sequence[tuple[str, float]], min_probability: float,
                   policy: GenrePolicy) -> str | None:
    """Why nothing is written when the config refused the most probable genre: which list refused
    it, and that no allowed genre reaches ``min_probability``. None when the config did not refuse
    it (then the genre was only not probable enough: ``low_confidence_reason``). ``ranked``: every
    label with its probability, most probable first."""
    top, p = ranked[0]
    rule = policy.refusal(top)
    if rule is None:
        return None
    listed = "on the config's exclude list" if rule == "exclude" else "not on the config's only list"
    allowed = next(((g, q) for g, q in ranked if policy.allowed(g)), None)
    if allowed is None:
        return f"{policy.name(top)} {p:.0%} is {listed}, and no other genre is allowed"
    shown, needed = _pcts(allowed[1], min_probability)
    return (f"{policy.name(top)} {p:.0%} is {listed}; the best allowed genre, {policy.name(allowed[0])} {shown}, "
            f"is below the {needed} a written genre needs")


def low_confidence_reason(genre: str, confidence: float, min_probability: float) -> str:
    """Why ``genre`` (the written name) is not written: it is less probable than ``min_probability``."""
    shown, needed = _pcts(confidence, min_probability)
    return f"{genre} {shown} is below the {needed} a written genre needs"


def _pcts(value: float, bar: float) -> tuple[str, str]:
    """``value`` and ``bar`` as percentages, with a decimal where whole ones would look equal."""
    a, b = f"{value:.0%}", f"{bar:.0%}"
    return (f"{value:.1%}", f"{bar:.1%}") if a == b else (a, b)
