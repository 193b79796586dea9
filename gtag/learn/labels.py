"""A library's own genres as labels: every file's genres and artist read through gtag's one tag
reader, spellings merged (``normalise``, ``ALIASES``, the user's map), rare genres dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from gtag.genres.names import normalise as spelling_key

# Written-name-independent keys of spellings that mean one genre, beyond what ``normalise`` merges.
ALIASES = {
    "altrock": "alternativerock",
    "alternative": "alternativerock",
    "hiphoprap": "hiphop",
    "rap": "hiphop",
    "rnb": "randb",
    "rhythmandblues": "randb",
    "electronica": "electronic",
    "electro": "electronic",
    "drumnbass": "drumandbass",
    "dnb": "drumandbass",
    "classic": "classical",
    "rocknroll": "rockandroll",
    "synthpop": "synthpop",
    "newage": "newage",
    "soundtracks": "soundtrack",
    "ost": "soundtrack",
}
DROP = "-"  # in a map file, "Soundtrack = -" drops a genre
DEFAULT_MIN_TRACKS = 8


def normalise(name: str) -> str:
    """Spelling-free key of a genre (``gtag.genres.names.normalise``: case, accents, spaces, punctuation,
    "&"/"and"/"'n'") followed by ``ALIASES`` (abbreviations and synonyms: "Alt. Rock", "RnB")."""
    key = spelling_key(name)
    return ALIASES.get(key, key)


def read_map(path: str | Path) -> dict[str, str]:
    """A user map file: ``Old Name = New Name`` merges, ``Name = -`` drops; ``#`` comments.
    Returns normalised old key -> new written name (or ``DROP``)."""
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"{path}:{n}: expected 'Genre = Other Genre' or 'Genre = -', got {line!r}")
        old, new = (part.strip() for part in line.split("=", 1))
        if not old or not new:
            raise ValueError(f"{path}:{n}: empty genre name in {line!r}")
        out[normalise(old)] = new
    return out


@dataclass(frozen=True)
class LibraryTrack:
    path: Path
    genres: tuple[str, ...]  # as tagged
    group: str  # album artist, else artist, else folder: the unit of cross-validation


def group_of(path: Path, album_artist: str | None, artist: str | None) -> str:
    """Who a track belongs to for cross-validation: album artist, else artist, else its folder."""
    if album_artist:
        return f"artist:{album_artist.casefold()}"
    if artist:
        return f"artist:{artist.casefold()}"
    return f"folder:{path.parent}"


def read_library(paths: Iterable[Path], on_error: Callable[[str], None] = lambda m: None) -> list[LibraryTrack]:
    """Genres and group of every file (unreadable ones reported through ``on_error`` and left out)."""
    from gtag.run.messages import file_failure
    from gtag.tags.formats import TagError
    from gtag.tags.reading import read_track_info

    out = []
    for p in paths:
        try:
            genres, album_artist, artist = read_track_info(p)
        except TagError as exc:
            on_error(file_failure(p, exc))  # the words gtag tag and gtag predict use for this file
            continue
        out.append(LibraryTrack(Path(p), tuple(genres), group_of(Path(p), album_artist, artist)))
    return out


@dataclass
class Labelling:
    """Which tracks learn which genre, and what was merged or dropped on the way."""

    labels: tuple[str, ...]  # written names, sorted by track count (most first)
    tracks: list[LibraryTrack]  # the kept tracks
    y: np.ndarray  # label index of each kept track
    merged: dict[str, list[str]] = field(default_factory=dict)  # written name -> spellings merged into it
    dropped: dict[str, int] = field(default_factory=dict)  # genre -> tracks, below min_tracks or mapped to -
    untagged: int = 0


def label_tracks(tracks: list[LibraryTrack], min_tracks: int = DEFAULT_MIN_TRACKS,
                 user_map: dict[str, str] | None = None) -> Labelling:
    """Each track's label: its first genre, spelling-normalised and mapped; the written name of a
    merged genre is the map's, else its most common spelling."""
    user_map = user_map or {}
    spellings: dict[str, Counter] = {}
    first_key: list[str | None] = []
    dropped_by_map: Counter = Counter()
    for t in tracks:
        key = None
        if t.genres:
            raw = t.genres[0]
            mapped = user_map.get(normalise(raw))
            if mapped == DROP:
                dropped_by_map[raw] += 1
            else:
                name = mapped or raw
                key = normalise(name)
                spellings.setdefault(key, Counter())[name if mapped else raw] += 1
                if mapped:
                    spellings[key][mapped] += 10**6  # the map's spelling wins
        first_key.append(key)
    written = {k: c.most_common(1)[0][0] for k, c in spellings.items()}
    counts = Counter(k for k in first_key if k is not None)
    kept = sorted((k for k in counts if counts[k] >= min_tracks), key=lambda k: (-counts[k], written[k]))
    dropped = {written[k]: counts[k] for k in counts if counts[k] < min_tracks}
    dropped.update({f"{g} (mapped to -)": n for g, n in dropped_by_map.items()})
    index = {k: i for i, k in enumerate(kept)}
    keep = [(t, index[k]) for t, k in zip(tracks, first_key) if k in index]
    merged = {written[k]: sorted(s for s in spellings[k] if s != written[k]) for k in kept}
    return Labelling(
        labels=tuple(written[k] for k in kept),
        tracks=[t for t, _ in keep],
        y=np.array([i for _, i in keep], dtype=int),
        merged={k: v for k, v in merged.items() if v},
        dropped=dropped,
        untagged=sum(1 for t in tracks if not t.genres),
    )
