"""Reading and writing the genre tag, safely, for every tag container mutagen writes.

One declarative table (``FORMATS``, built on ``STYLES``) says where each format keeps its genre,
following beetbox/mediafile's field table, so beets, Picard and players read back exactly what
gtag wrote.  The few lines of code below the tables only translate between a container's value
types and plain strings.

A write never edits a file in place: the original is copied to a hidden temporary file in the
same folder, the copy is tagged and verified, and only then renamed over the original
(``os.replace`` is atomic on POSIX).  Any failure leaves the original byte-for-byte untouched.
"""

from __future__ import annotations

import errno
import os
import re

try:
    import fcntl  # locks on the temporary copies (POSIX)
except ImportError:  # pragma: no cover - Windows
    fcntl = None
import shutil
import signal
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import mutagen
from mutagen.aiff import AIFF
from mutagen.apev2 import APETextValue
from mutagen.asf import ASF
from mutagen.asf._objects import ExtendedContentDescriptionObject, HeaderExtensionObject
from mutagen.dsf import DSF
from mutagen.flac import FLAC
from mutagen.id3 import TXXX, Encoding, Frames
from mutagen.monkeysaudio import MonkeysAudio
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm
from mutagen.musepack import Musepack
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.optimfrog import OptimFROG
from mutagen.tak import TAK
from mutagen.wave import WAVE
from mutagen.wavpack import WavPack

from . import riffinfo

__all__ = [
    "FORMATS",
    "STYLES",
    "TEMP_PREFIX",
    "FileChanged",
    "FormatSpec",
    "TagError",
    "TagStyle",
    "UnsupportedFormat",
    "fit_genres",
    "read_album",
    "format_name",
    "predict_write_failure",
    "read_extra",
    "read_format_and_genres",
    "read_genres",
    "remove_stale_temp_files",
    "write_genres",
]

# Temporary copies are hidden and recognisable, so a crash that kills the process outright (the
# one case the cleanup below cannot handle) leaves something a user can identify and delete.
TEMP_PREFIX = ".gtag-"
# The copies a write holds locked (flock) while it runs: a later run removes an unlocked one at once,
# since its owner is provably gone (a kill -9 releases the lock). ".gtag-" + 8 characters without
# a dash: a copy of an older gtag (or of a filesystem without locks), removed after an hour.
LOCKED_TEMP_PREFIX = TEMP_PREFIX + "lk-"


class TagError(Exception):
    """A tag could not be read or written; the message is one line naming the file."""


class FileChanged(TagError):
    """Another program changed the file since gtag looked at it: nothing was written."""


class UnsupportedFormat(TagError):
    """mutagen opens the file, but gtag does not know where that format keeps a genre."""


@dataclass(frozen=True)
class TagStyle:
    """Where one tag container keeps the genre and gtag's extra fields."""

    container: str  # "id3", "mp4", "vorbis", "asf" or "ape"
    genre_key: str  # the mutagen key of the genre
    extra_key: str  # mutagen key of an extra field; "{name}" is replaced by the field's name
    multi_value: str  # how several genres are stored, in words (for the README)
    # Keys that hold a competing genre: removed on every genre write so that no reader shows two.
    stale_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormatSpec:
    """One audio format: its mutagen class, the usual extensions and its tag style."""

    name: str
    extensions: tuple[str, ...]
    mutagen_class: type[mutagen.FileType]
    style: TagStyle

    @property
    def mutagen_class_name(self) -> str:
        """Dotted name of the mutagen class, e.g. ``mutagen.mp3.MP3``."""
        return f"{self.mutagen_class.__module__}.{self.mutagen_class.__name__}"


# The same keys as mediafile's ``genres`` field (TCON, ©gen, GENRE, WM/Genre); APEv2 keys are
# case-insensitive, so mediafile's "GENRE" finds the conventional "Genre" written here.
ID3_STYLE = TagStyle(
    container="id3",
    genre_key="TCON",
    extra_key="TXXX:{name}",
    # Every reader but mutagen shows a '/'-joined ID3v2.3 value as ONE genre ("Blues/Country"):
    # v2.3 files get the top genre only, or all of them joined with a separator the user chose.
    multi_value="ID3v2.4: one text value each (null-separated); ID3v2.3: the top genre only",
)
MP4_STYLE = TagStyle(
    container="mp4",
    genre_key="\xa9gen",
    extra_key="----:com.apple.iTunes:{name}",
    # mutagen folds a numeric 'gnre' atom into ©gen when it reads a file and never writes one
    # back, so replacing ©gen also removes 'gnre'; no stale key is needed here.
    multi_value="one ©gen data atom per value",
)
VORBIS_STYLE = TagStyle(
    container="vorbis",
    genre_key="GENRE",
    extra_key="{name}",
    multi_value="one GENRE= comment per value",
)
ASF_STYLE = TagStyle(
    container="asf",
    genre_key="WM/Genre",
    extra_key="{name}",
    # mutagen puts the first value in the Extended Content Description object and the others in
    # the Metadata Library object; gtag moves that object's Header Extension after the former,
    # so readers that go through the file in order (TagLib, kid3, exiftool) see the genres in
    # order.  libavformat (through PyAV) then reports the last value it reads (see README).
    multi_value="one WM/Genre attribute per value, in file order",
    # Windows Media Player also writes WM/GenreID; a stale one would contradict the new genre.
    stale_keys=("WM/GenreID",),
)
APE_STYLE = TagStyle(
    container="ape",
    genre_key="Genre",
    extra_key="{name}",
    multi_value="one Genre item, values separated by a null byte",
)

STYLES: tuple[TagStyle, ...] = (ID3_STYLE, MP4_STYLE, VORBIS_STYLE, ASF_STYLE, APE_STYLE)

FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec("mp3", (".mp3",), MP3, ID3_STYLE),
    # mediafile (and so beets) reads WAV and AIFF tags from the ID3 chunk, not RIFF INFO.
    FormatSpec("aiff", (".aiff", ".aif", ".aifc"), AIFF, ID3_STYLE),
    FormatSpec("wav", (".wav", ".wave"), WAVE, ID3_STYLE),
    FormatSpec("dsf", (".dsf",), DSF, ID3_STYLE),
    FormatSpec("m4a", (".m4a", ".m4b", ".mp4", ".alac"), MP4, MP4_STYLE),
    FormatSpec("flac", (".flac",), FLAC, VORBIS_STYLE),
    FormatSpec("ogg", (".ogg", ".oga"), OggVorbis, VORBIS_STYLE),
    FormatSpec("opus", (".opus",), OggOpus, VORBIS_STYLE),
    FormatSpec("oggflac", (".oga", ".ogg"), OggFLAC, VORBIS_STYLE),
    FormatSpec("spx", (".spx",), OggSpeex, VORBIS_STYLE),
    FormatSpec("wma", (".wma", ".asf"), ASF, ASF_STYLE),
    FormatSpec("ape", (".ape",), MonkeysAudio, APE_STYLE),
    FormatSpec("wv", (".wv",), WavPack, APE_STYLE),
    FormatSpec("mpc", (".mpc", ".mp+"), Musepack, APE_STYLE),
    FormatSpec("ofr", (".ofr", ".ofs"), OptimFROG, APE_STYLE),
    FormatSpec("tak", (".tak",), TAK, APE_STYLE),
)


# --- opening -------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, so every TagError stays one line."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    # mutagen sometimes wraps a bare OSError (e.g. a truncated ID3 header): name the inner one.
    inner = exc.__cause__ or exc.__context__
    return _reason(inner) if inner is not None else type(exc).__name__


def _open(
    path: Path | BinaryIO, shown: str | os.PathLike[str] | None = None
) -> tuple[FormatSpec, mutagen.FileType]:
    """Open ``path`` (a name, or a file object whose ``name`` has the extension) with mutagen and
    find its row in ``FORMATS``; errors name ``shown``."""
    shown = path if shown is None else shown
    if isinstance(path, Path):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG  # mutagen reports it below, in its words
        if not stat.S_ISREG(mode):
            # Never opened: a FIFO blocks, and /dev/zero behind an audio name never ends.
            raise TagError(f"{shown}: not a regular file, not read")
    try:
        audio = mutagen.File(path)
    # mutagen wraps most failures in MutagenError, but a damaged file can surface as a raw
    # struct/Index/Value error from a parser; every one of them means "unreadable".
    except Exception as exc:
        if isinstance(exc, PermissionError) or isinstance(exc.__context__, PermissionError):
            raise TagError(f"{shown}: permission denied, cannot read the file") from exc
        raise TagError(f"{shown}: unreadable or corrupt audio file ({_reason(exc)})") from exc
    if audio is None:
        raise TagError(f"{shown}: not an audio file that mutagen recognises")
    for spec in FORMATS:
        if isinstance(audio, spec.mutagen_class):
            return spec, audio
    supported = ", ".join(spec.name for spec in FORMATS)
    raise UnsupportedFormat(
        f"{shown}: {type(audio).__name__} files have no genre tag gtag writes "
        f"(supported: {supported})"
    )


# --- container value types <-> plain strings ---------------------------------------------------


def _id3_write_version(audio: mutagen.FileType) -> int:
    """The ID3v2 minor version to save with: the file's own, or 4 for a file without ID3v2."""
    version = getattr(audio.tags, "version", (2, 4, 0))
    # mutagen cannot write v2.2, and v2.3 is the version its readers are most likely to know.
    return 3 if version[0] == 2 and version[1] < 4 else 4


def _is_id3v23(spec: FormatSpec, audio: mutagen.FileType) -> bool:
    return spec.style.container == "id3" and _id3_write_version(audio) == 3


def _split(values: Sequence[str], separator: str) -> list[str]:
    return [part.strip() for value in values for part in value.split(separator) if part.strip()]


def _split_read(values: Sequence[str], v23: bool, separator: str | None) -> list[str]:
    """Genres from stored values: split on the configured separator, and in ID3v2.3 on '/' too,
    which mutagen and Picard use to join several genres there."""
    if v23:
        values = _split(values, "/")
    return _split(values, separator) if separator else list(values)


def fit_genres(fmt: str, genres: Sequence[str], separator: str | None = None) -> list[str]:
    """The genres a write stores for a file whose ``format_name`` is ``fmt``: all of them, except
    in an ID3v2.3 tag without a separator, which gets the top genre only (no reader but mutagen
    splits a '/'-joined v2.3 value: beets, TagLib and FFmpeg all show "Blues/Country")."""
    genres = list(genres)
    if separator is None and fmt.endswith("/id3v2.3"):
        return genres[:1]
    return genres


def _stored(genres: list[str], v23: bool, separator: str | None) -> list[str]:
    """The values written under the genre key: one joined value when a separator is set."""
    if separator:
        return [separator.join(genres)] if genres else []
    return genres[:1] if v23 else genres


def _info_genre(genres: list[str], separator: str | None) -> str | None:
    """The RIFF INFO IGNR value: INFO holds one value per item, like ID3v2.3."""
    if not genres:
        return None
    return separator.join(genres) if separator else genres[0]


def _asf_in_file_order(audio: mutagen.FileType) -> None:
    """Place the Header Extension (holding the Metadata Library) after the Extended Content
    Description, so that the first WM/Genre value is also the first in the file."""
    objects = audio._header.objects  # mutagen renders the header objects in this order
    if not any(isinstance(o, ExtendedContentDescriptionObject) for o in objects):
        objects.append(ExtendedContentDescriptionObject())  # else save() would append it last
    ext = [o for o in objects if isinstance(o, HeaderExtensionObject)]
    if ext:
        objects.remove(ext[0])
        at = next(i for i, o in enumerate(objects) if isinstance(o, ExtendedContentDescriptionObject))
        objects.insert(at + 1, ext[0])


def _asf_order_ok(audio: mutagen.FileType) -> bool:
    kinds = [type(o) for o in audio._header.objects]
    if HeaderExtensionObject not in kinds or ExtendedContentDescriptionObject not in kinds:
        return True
    return kinds.index(ExtendedContentDescriptionObject) < kinds.index(HeaderExtensionObject)


def _get(style: TagStyle, tags: mutagen.Tags, key: str) -> list[str]:
    """All string values stored under ``key`` (empty when absent)."""
    if style.container == "id3":
        return [text for frame in tags.getall(key) for text in frame.text]
    if key not in tags:
        return []
    value = tags[key]
    if style.container == "ape":
        return list(value) if isinstance(value, APETextValue) else []
    if style.container == "mp4" and key.startswith("----:"):
        return [bytes(item).decode("utf-8", "replace") for item in value]
    # ©gen and Vorbis comments are lists of str; ASF attributes render their value with str().
    return [str(item) for item in value]


def _set(style: TagStyle, tags: mutagen.Tags, key: str, values: list[str]) -> None:
    """Replace every value under ``key`` with ``values`` (removing the key when empty)."""
    if style.container == "id3":
        tags.delall(key)
        if values:
            frame_id, _, desc = key.partition(":")
            # UTF-8 is a v2.4 encoding; mutagen converts it to UTF-16 when saving v2.3.
            if frame_id == "TXXX":
                tags.add(TXXX(encoding=Encoding.UTF8, desc=desc, text=values))
            else:
                tags.add(Frames[frame_id](encoding=Encoding.UTF8, text=values))
        return
    if key in tags:
        del tags[key]
    if not values:
        return
    if style.container == "mp4" and key.startswith("----:"):
        tags[key] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
    else:
        # mutagen turns a list of str into the container's own multi-value form.
        tags[key] = list(values)


# --- public API --------------------------------------------------------------------------------


def format_name(path: str | os.PathLike[str]) -> str:
    """Short description of a file's format and tag container, e.g. ``"mp3/id3v2.4"``.

    For ID3 the version is the one a write keeps (or v2.4 for a file without ID3v2 yet).
    """
    path = Path(path)
    return _format_name(path, *_open(path))


def _format_name(path: Path, spec, audio) -> str:
    label = path.suffix.lower().lstrip(".") if path.suffix.lower() in spec.extensions else spec.name
    container = spec.style.container
    if container == "id3":
        container = f"id3v2.{_id3_write_version(audio)}"
    return f"{label}/{container}"


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


# Room a genre tag chunk may need in a RIFF (WAV) or IFF (AIFF) file, whose sizes are 32-bit.
_CHUNK_ROOM = 1 << 16


def predict_write_failure(path: str | os.PathLike[str]) -> str | None:
    """Why writing a tag to ``path`` would certainly fail, found without writing (so a dry run can
    say it), or None: a read-only file or folder (refused as ``write_genres`` refuses it), or a WAV
    or AIFF whose header claims a size so close to 4 GB that a tag chunk would overflow its 32-bit
    size field."""
    try:
        _check_writable(Path(os.path.realpath(path)), path)
    except TagError as exc:
        return str(exc)
    except OSError:
        return None  # the write reports it, in its own words
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None  # the write reports it, in its own words
    if len(head) < 12 or head[8:12] not in (b"WAVE", b"AIFF", b"AIFC"):
        return None
    claimed = int.from_bytes(head[4:8], "little" if head[:4] == b"RIFF" else "big")
    if head[:4] in (b"RIFF", b"FORM") and claimed > 0xFFFFFFFF - _CHUNK_ROOM:
        return (f"{path}: the {head[8:12].decode()} header claims {claimed:,} bytes, too close to its "
                "4 GB limit for a tag chunk; a write would fail")
    return None


def _check_writable(path: Path, shown: str | os.PathLike[str]) -> None:
    """Refuse up front to touch a read-only file or a file in a read-only folder.

    Mode bits are checked as well as ``os.access`` because root passes every access check, and
    a file or folder that nobody may write is meant to stay as it is even then.
    """
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    if not os.access(path, os.W_OK) or not path.stat().st_mode & write_bits:
        raise TagError(f"{shown}: file is read-only, not modified")
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK) or not folder.stat().st_mode & write_bits:
        # The temporary copy is created next to the file, and the rename needs the folder too.
        raise TagError(f"{shown}: folder {folder} is read-only, file not modified")


def _snapshot(st: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies one version of a file, to notice another program writing it meanwhile."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _stream(audio: mutagen.FileType) -> tuple[object, ...]:
    """Stream properties that a tag write must not change."""
    info = audio.info
    return (
        type(audio),
        round(info.length, 3),
        getattr(info, "sample_rate", None),
        getattr(info, "channels", None),
    )


def write_genres(
    path: str | os.PathLike[str],
    genres: Sequence[str],
    extra: Mapping[str, str] | None = None,
    separator: str | None = None,
    *,
    expect: tuple[int, int, int, int] | None = None,
) -> list[str]:
    """Replace the genre(s) in ``path``'s tag, and set the optional ``extra`` fields.

    ``extra`` maps field names to values (e.g. ``{"GTAG_CONFIDENCE": "0.82"}``), written as
    TXXX frames, iTunes freeform atoms, Vorbis comments, ASF or APEv2 items.  An empty
    ``genres`` removes the genre.  With a ``separator`` the genres are stored as one value joined
    with it (for players that show one value); without, as the container's multiple values,
    except ID3v2.3 (ID3 keeps its version), which then gets the top genre only.  A WAV's
    existing RIFF INFO chunks get the same genre as IGNR (see ``gtag.riffinfo``).  Returns the
    genres stored, as ``fit_genres`` predicts.

    The write is atomic: a tagged and verified copy replaces the original, keeping its
    permission bits (and owner, where allowed); a symlink is followed and the link kept.  A hard
    link elsewhere keeps pointing at the old, untagged file.  On any failure the original is
    left untouched and TagError is raised; ``FileChanged`` when the file is not the version
    ``expect`` (device, inode, size, mtime_ns) describes, or changes during the write.
    """
    if isinstance(genres, str):
        raise TypeError("genres must be a sequence of str, not one str")
    genres = list(genres)
    extra = dict(extra or {})
    if separator is not None and (not separator.strip() or "\0" in separator):
        raise ValueError(f"the separator must be visible text without null bytes: {separator!r}")
    for value in [*genres, *extra.values()]:
        # A null byte is the multi-value separator of ID3v2.4 and APEv2: it would split the value.
        if not isinstance(value, str) or not value or "\0" in value:
            raise ValueError(f"tag values must be non-empty str without null bytes: {value!r}")

    real = Path(os.path.realpath(path))
    try:
        before = real.stat()
    except OSError as exc:
        raise TagError(f"{path}: cannot read file ({_reason(exc)})") from exc
    if not stat.S_ISREG(before.st_mode):
        raise TagError(f"{path}: not a regular file")
    if expect is not None and _snapshot(before) != tuple(expect):
        raise FileChanged(f"{path}: file changed since it was analysed, not modified")
    _check_writable(real, path)
    spec, original = _open(real, path)

    temps: list[Path] = []  # every temporary copy made; the one that becomes the file leaves this list
    try:
        # Inside the try whose finally removes every copy in ``temps``: a Ctrl-C at any moment
        # after the copy exists must not leave it behind in the user's folder.
        fd, tmp_name = _temp_copy(real, path, temps)
        tmp = temps[0]
        v23 = _is_id3v23(spec, original)
        # Everything below works on descriptors, never on a temporary name: the owner of the
        # folder could swap that name for a symlink to a file that gtag (run as root) must
        # neither write, chown nor chmod.
        with open(fd, "r+b") as fh:
            fh.raw.name = tmp_name  # mutagen also goes by the extension of a file object's name
            with open(real, "rb") as src:
                _copy_keeping_holes(src, fh, before)
            fh.flush()
            fh.seek(0)
            _, audio = _open(fh, path)
            if audio.tags is None:
                audio.add_tags()
            style = spec.style
            _set(style, audio.tags, style.genre_key, _stored(genres, v23, separator))
            for key in style.stale_keys:
                _set(style, audio.tags, key, [])
            for name, value in extra.items():
                _set(style, audio.tags, style.extra_key.format(name=name), [value])
            fh.seek(0)
            if style.container == "id3":
                old_v1 = _id3v1_block(fh) if spec.name == "mp3" else None
                audio.save(fh, v2_version=_id3_write_version(original), v23_sep="/")
                if spec.name == "mp3":
                    _sync_mp3_side_tags(fh, old_v1, _stored(genres, False, separator), path)
            else:
                if style.container == "asf":
                    _asf_in_file_order(audio)
                audio.save(fh)
            fh.flush()
            _verify(spec, original, fh, path, genres, extra, separator)
            final, final_tmp = fh, tmp
            info_fh = None
            if spec.name == "wav" and _has_info(fh):  # the genre in its RIFF INFO chunk too (gtag.riffinfo)
                fd2, _ = _temp_copy(real, path, temps)
                info_fh = open(fd2, "w+b")
                try:
                    wrote_info = riffinfo.rewrite_info(fh, info_fh, {"IGNR": _info_genre(genres, separator)})
                except riffinfo.RiffError:
                    wrote_info = False  # a chunk list mutagen accepts but that cannot be walked: ID3 only
                if wrote_info:
                    _verify_riff(real, info_fh, path, _info_genre(genres, separator))
                    final, final_tmp = info_fh, temps[-1]
            try:
                _copy_metadata(final.fileno(), real, before)
                os.fsync(final.fileno())
                if _snapshot(real.stat()) != _snapshot(before):
                    raise FileChanged(f"{path}: file changed while its tags were written, not modified")
                mine, named = os.fstat(final.fileno()), os.lstat(final_tmp)
                if (mine.st_dev, mine.st_ino) != (named.st_dev, named.st_ino):
                    raise TagError(f"{path}: the temporary copy {final_tmp.name} was replaced by another program, "
                                   "file not modified")
            finally:
                if info_fh is not None:
                    info_fh.close()
        os.replace(final_tmp, real)
        temps.remove(final_tmp)
    except TagError as exc:
        left = [t for t in temps if _leftover(t)]
        raise TagError(_with_cleanup(str(exc), left[0])) if left else exc
    except Exception as exc:
        msg = f"{path}: could not write tags ({_reason(exc)}); the original is untouched"
        left = [t for t in temps if _leftover(t)]
        raise TagError(_with_cleanup(msg, left[0]) if left else msg) from exc
    finally:
        for t in temps:  # the WAV's first copy once its INFO copy replaced the file, or any on failure
            _leftover(t)
    _fsync_folder(real.parent)
    return fit_genres(f"{spec.name}/id3v2.3" if v23 else spec.name, genres, separator)


def _temp_copy(real: Path, path: str | os.PathLike[str], temps: list[Path]) -> tuple[int, str]:
    """A new empty temporary file beside ``real`` (same folder: the final rename stays on one
    filesystem and is atomic; same suffix: mutagen's extension-based detection stays the same),
    locked (see ``remove_stale_temp_files``) and recorded in ``temps`` before it exists, so that no
    stop signal can leave a copy the caller does not know of. SIGINT, SIGTERM and SIGHUP also wait
    while it is made: Python runs signal handlers in the main thread only, so holding them there is
    enough (a signal mask is not: the kernel gives a process-directed signal to any thread that does
    not block it, an OpenBLAS or ONNX Runtime one, and Python then runs the handler at once)."""
    held: list[int] = []
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
            if signal.getsignal(s) not in (signal.SIG_IGN, None):
                old[s] = signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        fd, name = _new_temp(real, LOCKED_TEMP_PREFIX, temps)
        if not _lock(fd, fcntl.LOCK_EX if fcntl else 0):  # no locks here (some network shares): the age rule
            os.close(fd)
            os.unlink(name)
            fd, name = _new_temp(real, TEMP_PREFIX, temps)
    except OSError as exc:
        raise TagError(f"{path}: cannot create a temporary copy ({_reason(exc)})") from exc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in dict.fromkeys(held):  # delivered now, to the handler the caller had
            signal.raise_signal(s)
    return fd, name


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile.mkstemp's, so _TEMP_NAME matches


def _new_temp(real: Path, prefix: str, temps: list[Path]) -> tuple[int, str]:
    """Create ``prefix`` + 8 random characters + ``real``'s suffix beside ``real`` (O_EXCL, never
    through a symlink), its name appended to ``temps`` before the file exists."""
    import secrets

    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = real.parent / f"{prefix}{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}{real.suffix}"
        temps.append(name)
        try:
            return os.open(name, flags, 0o600), str(name)
        except FileExistsError:
            temps.remove(name)  # another file's name: never to be removed as ours
        except BaseException:
            if not os.path.lexists(name):
                temps.remove(name)
            raise
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(real.parent))


def _copy_keeping_holes(src: BinaryIO, dst: BinaryIO, st: os.stat_result) -> None:
    """Copy ``src`` into ``dst`` (both open at 0). A sparse file (fewer blocks than its size: a
    FLAC followed by gigabytes of holes) keeps its holes: only its data ranges are copied, found
    with SEEK_DATA/SEEK_HOLE; a plain copy would write every zero out to disk."""
    sparse = getattr(st, "st_blocks", None) is not None and st.st_blocks * 512 < st.st_size
    if not sparse or not hasattr(os, "SEEK_DATA"):
        shutil.copyfileobj(src, dst)
        return
    fd, pos, size = src.fileno(), 0, st.st_size
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole from here to the end
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        src.seek(start)
        dst.seek(start)
        left = end - start
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
        pos = end
    dst.truncate(size)  # the trailing hole
    dst.seek(0)


def _lock(fd: int, how: int) -> bool | None:
    """flock ``fd``: True when locked, None when another process holds it (LOCK_NB), False when
    this filesystem or system has no such locks."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, how)
        return True
    except BlockingIOError:
        return None
    except OSError:
        return False


# --- an mp3's other containers: APEv2 and ID3v1 beside its ID3v2 --------------------------------

# ID3v1 fields (offsets in its 128 bytes): title, artist, album, year, comment (ID3v1.1: 28 bytes,
# then a zero byte and the track number; ID3v1.0: 30 bytes).
_V1_FIELDS = ((3, 33), (33, 63), (63, 93), (93, 97), (97, 125))


def _id3v1_block(fh: BinaryIO) -> bytes | None:
    """The 128-byte ID3v1 tag at the end of an open file, or None."""
    fh.seek(0, os.SEEK_END)
    if fh.tell() < 128:
        return None
    fh.seek(-128, os.SEEK_END)
    block = fh.read(128)
    return block if block[:3] == b"TAG" else None


def _sync_mp3_side_tags(fh: BinaryIO, old_v1: bytes | None, values: list[str],
                        shown: str | os.PathLike[str]) -> None:
    """After the ID3v2 save of an mp3 (an open copy): the rule for its other containers.

    - An APEv2 tag that holds a genre gets the same genre(s) (foobar2000 and others read APEv2
      first: a stale genre there would contradict the new one); one without a genre is left as
      it is, and an empty ``values`` removes the APE genre.
    - mutagen rewrites an existing ID3v1 tag from the ID3v2 frames (its genre byte from TCON), but
      leaves a field empty that it finds under another name (an ID3v1 comment read back as
      "COMM:ID3v1 Comment"): every ID3v1 field that the rewrite left empty keeps its old bytes.
    """
    from mutagen.apev2 import APENoHeaderError, APEv2

    v1 = _id3v1_block(fh)
    if old_v1 is not None and v1 is not None:
        merged = bytearray(v1)
        fields = list(_V1_FIELDS)
        if old_v1[125] != 0 and v1[126] == 0:  # ID3v1.0: a 30-byte comment, no track to keep apart
            fields[-1] = (97, 127)
        for a, b in fields:
            if not v1[a:b].strip(b"\0 ") and old_v1[a:b].strip(b"\0 "):
                merged[a:b] = old_v1[a:b]
        v1 = bytes(merged)
    fh.seek(0)
    try:
        ape = APEv2(fh)
    except APENoHeaderError:
        ape = None
    if ape is not None and "Genre" in ape:
        if values:
            ape["Genre"] = values
        else:
            del ape["Genre"]
        fh.seek(0)
        ape.save(fh)  # mutagen writes the APE tag last, dropping an ID3v1 tag after it: put it back
        if v1 is not None:
            fh.seek(0, os.SEEK_END)
            fh.write(v1)
        fh.flush()
        fh.seek(0)
        if _ape_genres(fh) != values:
            raise TagError(f"{shown}: verification failed, file not modified: APEv2 genre did not read back")
    elif v1 is not None:
        fh.seek(-128, os.SEEK_END)
        fh.write(v1)
    fh.flush()
    if v1 is not None and _id3v1_block(fh) != v1:
        raise TagError(f"{shown}: verification failed, file not modified: ID3v1 tag did not read back")


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


def _has_info(fh: BinaryIO) -> bool:
    """Whether an open WAV has a LIST/INFO chunk gtag can walk (only then is its INFO rewritten)."""
    try:
        return bool(riffinfo.read_info(fh))
    except (OSError, riffinfo.RiffError):
        return False


def _leftover(tmp: Path) -> bool:
    """Remove an unrenamed temporary copy; True when it cannot be removed (a read-only folder)."""
    try:
        tmp.unlink(missing_ok=True)
        return False
    except OSError:
        return os.path.lexists(tmp)


def _with_cleanup(msg: str, tmp: Path) -> str:
    return f"{msg}; its temporary copy {tmp.name} could not be removed (a later run removes it)"


def _copy_metadata(fd: int, real: Path, before: os.stat_result) -> None:
    """Owner (where allowed), mode bits and extended attributes of the original, set on the open
    temporary copy. The times are not copied, so backup tools and scanners see the change."""
    if hasattr(os, "fchown"):
        try:
            os.fchown(fd, before.st_uid, before.st_gid)
        except OSError:
            pass  # only root may give a file away: ours is fine then
    if hasattr(os, "fchmod"):
        os.fchmod(fd, stat.S_IMODE(before.st_mode))  # after chown, which may clear set-id bits
    if hasattr(os, "listxattr"):
        try:
            for name in os.listxattr(real):
                try:
                    os.setxattr(fd, name, os.getxattr(real, name))
                except OSError:
                    pass  # e.g. security.* attributes only root may set
        except OSError:
            pass  # a filesystem without extended attributes
    if os.utime in os.supports_fd:
        os.utime(fd)


# Names of gtag's temporary copies: tempfile.mkstemp's eight characters between prefix and suffix.
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}(\.[^./]{1,8})?")
_LOCKED_TEMP_NAME = re.compile(re.escape(LOCKED_TEMP_PREFIX) + r"[a-z0-9_]{8}(\.[^./]{1,8})?")
# An unlocked copy this young and still empty may be one whose write has just made it and not yet
# locked it (mkstemp, then flock): left for a later run.
FRESH_EMPTY_SECONDS = 60.0
# Older than this, a temporary copy cannot belong to a running gtag (a write takes seconds).
STALE_TEMP_SECONDS = 3600.0


def remove_stale_temp_files(folder: str | os.PathLike[str], dry_run: bool = False,
                            older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """gtag's own temporary copies in ``folder`` left by a killed run, and removed (unless
    ``dry_run``): regular files named ``.gtag-lk-xxxxxxxx.ext`` that no process holds locked (their
    writer is gone: at once), and ``.gtag-xxxxxxxx.ext`` (an older gtag's, or where there are no
    locks) not modified for ``older_than`` seconds. Symlinks and every other name are left alone,
    and so is the copy of a write that is running (its lock is held)."""
    found = []
    now = time.time()
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if _TEMP_NAME.fullmatch(e.name) or _LOCKED_TEMP_NAME.fullmatch(e.name)]
    except OSError:
        return []
    for e in sorted(entries, key=lambda e: e.name):
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if _LOCKED_TEMP_NAME.fullmatch(e.name):
                if not _ownerless(e.path, st, now, older_than):
                    continue
            elif now - st.st_mtime < older_than:
                continue
            if not dry_run:
                os.unlink(e.path)
        except OSError:
            continue
        found.append(Path(e.path))
    return found


def _ownerless(path: str, st: os.stat_result, now: float, older_than: float) -> bool:
    """Whether no running write holds the locked-style copy at ``path`` (``st``: its lstat)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        mine = os.fstat(fd)
        if (mine.st_dev, mine.st_ino) != (st.st_dev, st.st_ino):
            return False  # replaced meanwhile: not the file that was looked at
        # LOCK_SH: on NFS flock is emulated by fcntl locks, where a read-only descriptor takes a
        # shared lock only. Any lock held by the writer (exclusive) refuses it.
        held = _lock(fd, (fcntl.LOCK_SH | fcntl.LOCK_NB) if fcntl else 0)
    finally:
        os.close(fd)
    if held is None:
        return False  # a write in progress
    if held is False:  # no locks on this filesystem: the age rule
        return now - st.st_mtime >= older_than
    return st.st_size > 0 or now - st.st_mtime >= FRESH_EMPTY_SECONDS


def _verify(
    spec: FormatSpec,
    original: mutagen.FileType,
    tmp: BinaryIO,
    shown: str | os.PathLike[str],
    genres: list[str],
    extra: dict[str, str],
    separator: str | None = None,
) -> None:
    """Reopen the tagged copy (an open file) and check that it says what was written and still
    plays the same."""
    tmp.seek(0)
    tagged_spec, tagged = _open(tmp, shown)
    problems = []
    if tagged_spec is not spec or _stream(tagged) != _stream(original):
        problems.append("audio stream differs after tagging")
    expected = _stored(genres, _is_id3v23(spec, original), separator)
    stored = [v for v in _get(spec.style, tagged.tags, spec.style.genre_key) if v] if tagged.tags else []
    if stored != expected:
        problems.append(f"genres read back as {stored!r}")
    if spec.style.container == "asf" and not _asf_order_ok(tagged):
        problems.append("WM/Genre values not in file order")
    for name, value in extra.items():
        if _read_extra(tagged_spec, tagged, name) != value:
            problems.append(f"{name} did not read back")
    if problems:
        raise TagError(f"{shown}: verification failed, file not modified: {'; '.join(problems)}")


def _verify_riff(real: Path, tmp: BinaryIO, shown: str | os.PathLike[str], ignr: str | None) -> None:
    """A WAV's INFO rewrite changed IGNR only: same other items, same bytes in every other chunk."""
    try:
        before, after = riffinfo.read_info(real), riffinfo.read_info(tmp)
        same_chunks = riffinfo.chunk_digests(real) == riffinfo.chunk_digests(tmp)
    except (OSError, riffinfo.RiffError) as exc:
        raise TagError(f"{shown}: verification failed, file not modified ({_reason(exc)})") from exc
    others_kept = [{k: v for k, v in d.items() if k != "IGNR"} for d in before] == [
        {k: v for k, v in d.items() if k != "IGNR"} for d in after
    ]
    if not same_chunks or not others_kept or any(d.get("IGNR") != ignr for d in after):
        raise TagError(f"{shown}: verification failed, file not modified: RIFF INFO rewrite changed more than IGNR")


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; a folder cannot be opened on Windows, nor synced on some mounts."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # the file is already replaced; failing now would wrongly report a failed write


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
