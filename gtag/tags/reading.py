"""Reading what a file's tags hold: its genres, album, artists and gtag's own extra fields,
through the one format table of gtag.tags.formats.
"""

from __future__ import annotations

import os

try:
    import fcntl  # locks on the temporary copies (POSIX)
except ImportError:  # pragma: no cover - Windows
    fcntl = None
from pathlib import Path
from typing import BinaryIO

import mutagen
from mutagen.apev2 import APETextValue

from gtag.tags import riffinfo
from gtag.tags.formats import FormatSpec, _format_name, _get, _is_id3v23, _open, _split_read


def read_genres(path: str | os.PathLike[str], separator: str | None = None) -> list[str]:
    """The genres stored in ``path``'s tag, in order; an empty list when there are none.

    Values are split on ``separator`` when one is given, and ID3v2.3 values on '/' (how mutagen
    and Picard join several genres there).  A WAV without an ID3 genre falls back to the IGNR
    item of its RIFF INFO chunk, which other taggers write and FFmpeg-based players show.
    """
    path = Path(path)
    return _genres(path, *_open(path), separator)


def read_format_and_genres(path: str | os.PathLike[str], separator: str | None = None) -> tuple[str, list[str]]:
    """``(format_name(path), read_genres(path, separator))`` from one parse of the file's tags:
    `gtag tag` reads both for every file before deciding whether it needs analysing."""
    path = Path(path)
    spec, audio = _open(path)
    return _format_name(path, spec, audio), _genres(path, spec, audio, separator)


def _genres(path: Path, spec, audio, separator: str | None) -> list[str]:
    genres = _read_genres(spec, audio, separator)
    if not genres and spec.name == "mp3":  # an mp3 whose only genre is in its APEv2 tag keeps it
        genres = _split_read(_ape_genres(path) or [], False, separator)
    if not genres and spec.name == "wav":
        try:
            values = [info["IGNR"] for info in riffinfo.read_info(path) if info.get("IGNR")][:1]
        except (OSError, riffinfo.RiffError):
            values = []
        genres = _split_read(values, False, separator)
    return genres


def _read_genres(spec: FormatSpec, audio: mutagen.FileType, separator: str | None = None) -> list[str]:
    if audio.tags is None:
        return []
    values = [v for v in _get(spec.style, audio.tags, spec.style.genre_key) if v]
    return _split_read(values, _is_id3v23(spec, audio), separator)


# Album and album artist keys per container (mediafile's), for `gtag tag --album`.
ALBUM_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "id3": (("TALB",), ("TPE2",)),
    "mp4": (("\xa9alb",), ("aART",)),
    "vorbis": (("ALBUM",), ("ALBUMARTIST", "ALBUM ARTIST", "ALBUM_ARTIST")),
    "asf": (("WM/AlbumTitle",), ("WM/AlbumArtist",)),
    "ape": (("Album",), ("Album Artist", "AlbumArtist")),
}


def read_album(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """(album, album artist) from ``path``'s tag; None for each one that is absent or empty."""
    spec, audio = _open(Path(path))
    if audio.tags is None:
        return None, None
    found = []
    for keys in ALBUM_KEYS[spec.style.container]:
        values = [v.strip() for key in keys for v in _get(spec.style, audio.tags, key) if v.strip()]
        found.append(values[0] if values else None)
    return found[0], found[1]


def read_extra(path: str | os.PathLike[str], name: str) -> str | None:
    """The value of one extra field written by ``write_genres`` (None when absent)."""
    spec, audio = _open(Path(path))
    return _read_extra(spec, audio, name)


def _read_extra(spec: FormatSpec, audio: mutagen.FileType, name: str) -> str | None:
    if audio.tags is None:
        return None
    values = _get(spec.style, audio.tags, spec.style.extra_key.format(name=name))
    return values[0] if values else None


def _ape_genres(fh: BinaryIO | Path) -> list[str] | None:
    """The genres of an mp3's APEv2 tag; None when it has no APEv2 tag."""
    from mutagen.apev2 import APENoHeaderError, APEv2

    try:
        ape = APEv2(fh)
    except APENoHeaderError:
        return None
    except Exception:  # a damaged APE tag: no genre gtag can read there
        return []
    value = ape.get("Genre")
    return [v for v in value if v] if isinstance(value, APETextValue) else []


# --- who made a track (for grouping by artist) -------------------------------------------------

# (album artist key, artist key) per container, as mediafile reads them.
PEOPLE_KEYS = {
    "id3": ("TPE2", "TPE1"),
    "mp4": ("aART", "\xa9ART"),
    "vorbis": ("ALBUMARTIST", "ARTIST"),
    "asf": ("WM/AlbumArtist", "Author"),
    "ape": ("Album Artist", "Artist"),
}


def read_track_info(path: str | os.PathLike[str]) -> tuple[list[str], str | None, str | None]:
    """(genres, album artist, artist) of ``path``, read in one open; a missing value is None."""
    spec, audio = _open(Path(path))
    genres = _read_genres(spec, audio)
    if audio.tags is None:
        return genres, None, None
    keys = PEOPLE_KEYS.get(spec.style.container, ())
    found = [next((v.strip() for v in _get(spec.style, audio.tags, k) if v.strip()), None) for k in keys]
    return genres, *(found + [None, None])[:2]
