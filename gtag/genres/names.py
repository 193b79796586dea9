"""Genre spellings: one key per genre however it is written, and merging lists without doubles.

Pure functions, no I/O: ``gtag tag --merge`` uses them to add genres to a file's own, and the
config file's whitelist and exclude list to match names however they are spelled.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["merge", "normalise"]

# "&", "+" and a lone "n" ("Rock 'n' Roll", "Drum n Bass") all stand for "and".
_AND = re.compile(r"[&+]|(?<!\w)'?n'?(?!\w)")
_NOT_WORD = re.compile(r"[\W_]+")


def normalise(name: str) -> str:
    """The key under which spellings of one genre compare equal.

    Case, accents, spaces and punctuation are ignored and "&", "+", "'n'" read as "and", so
    "Hip-Hop", "hip hop", "HipHop" and "Hip_Hop" are all ``"hiphop"``, and "R&B", "R and B" and
    "r & b" are all ``"randb"``.
    """
    text = unicodedata.normalize("NFKD", name).casefold()
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _AND.sub(" and ", text)
    return _NOT_WORD.sub("", text)


def merge(existing: Iterable[str], new: Iterable[str]) -> list[str]:
    """``existing`` followed by each of ``new`` that no earlier genre spells the same way.

    The file's own spelling wins: merging "Hip-Hop" into ["hip hop"] keeps ["hip hop"].
    """
    out: list[str] = []
    seen: set[str] = set()
    for name in [*existing, *new]:
        key = normalise(name)
        if key and key not in seen:
            seen.add(key)
            out.append(name)
    return out
