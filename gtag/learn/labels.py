"""A library's own genres as labels: every file's genres and artist read through gtag's one tag
reader, spellings merged (``normalise``: the taxonomy's aliases; the user's map), a rare style folded
into its genre where that genre is a label, other rare genres dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from gtag.genres.names import normalise as spelling_key
from gtag.genres.taxonomy import default_taxonomy

DROP = "-"  # in a map file, "Soundtrack = -" drops a genre
DEFAULT_MIN_TRACKS = 8


def normalise(name: str) -> str:
    """Spelling-free key of a genre: the taxonomy node it names, in any of its aliases ("Alt. Rock",
    "RnB", "Electronica": gtag/data/taxonomy.toml), else the name itself; both through
    ``gtag.genres.names.normalise`` (case, accents, spaces, punctuation, "&"/"and"/"'n'")."""
    node = default_taxonomy().find(name)
    return spelling_key(node.name if node is not None else name)


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
    folded: dict[str, list[str]] = field(default_factory=dict)  # written name -> rare styles of it, "Ambient (1)"
    # tracks of dropped genres the taxonomy says are none of the labels (Hard Rock beside Alternative
    # Rock): the library's own "none of these", taught with the reference set's
    outside: list[LibraryTrack] = field(default_factory=list)
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
    into = fold_into(written, counts, set(kept), min_tracks)
    folded: dict[str, list[str]] = {}
    for k, parent in sorted(into.items(), key=lambda kv: (-counts[kv[0]], written[kv[0]])):
        folded.setdefault(written[parent], []).append(f"{written[k]} ({counts[k]})")
    dropped = {written[k]: counts[k] for k in counts if counts[k] < min_tracks and k not in into}
    dropped.update({f"{g} (mapped to -)": n for g, n in dropped_by_map.items()})
    index = {k: i for i, k in enumerate(kept)}
    first_key = [into.get(k, k) if k is not None else None for k in first_key]
    keep = [(t, index[k]) for t, k in zip(tracks, first_key) if k in index]
    labels = tuple(written[k] for k in kept)
    rare = {k for k in counts if counts[k] < min_tracks and k not in into and unrelated(written[k], labels)}
    merged = {written[k]: sorted(s for s in spellings[k] if s != written[k]) for k in kept}
    return Labelling(
        labels=labels,
        tracks=[t for t, _ in keep],
        y=np.array([i for _, i in keep], dtype=int),
        merged={k: v for k, v in merged.items() if v},
        folded=folded,
        outside=[t for t, k in zip(tracks, first_key) if k in rare],
        dropped=dropped,
        untagged=sum(1 for t in tracks if not t.genres),
    )


def fold_into(written: dict[str, str], counts: Counter, kept: set[str], min_tracks: int) -> dict[str, str]:
    """Key of each rare genre (fewer than ``min_tracks``) -> the key of its nearest taxonomy ancestor
    that is a kept label: an Ambient track is an Electronic one, so it teaches Electronic rather than
    being dropped. A rare genre with no kept ancestor (Hard Rock beside Alternative Rock: a sibling,
    not a parent) is not folded."""
    tax = default_taxonomy()
    out: dict[str, str] = {}
    for k in counts:
        if counts[k] < min_tracks:
            parent = next((a for a in map(normalise, tax.ancestors(written[k])) if a in kept), None)
            if parent is not None:
                out[k] = parent
    return out


def unrelated(name: str, labels: tuple[str, ...]) -> bool:
    """Whether the taxonomy says ``name`` is none of ``labels``: a node that is no label, no label's
    style and no label's genre (Hard Rock beside Alternative Rock are siblings under Rock). A name
    it does not know might be any of them: False."""
    tax = default_taxonomy()
    return tax.find(name) is not None and not any(
        tax.same(name, lab) or tax.is_finer(name, lab) or tax.is_finer(lab, name) for lab in labels)


def label_paths(labels: tuple[str, ...]) -> dict[str, list[str]]:
    """Each label's place in the taxonomy, genre first (["Rock", "Alternative Rock"]; [] when it
    names no node): recorded with a learned model, shown by `gtag models`."""
    tax = default_taxonomy()
    return {lab: tax.path(lab) for lab in labels}
