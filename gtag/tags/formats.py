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

import os

try:
    import fcntl  # locks on the temporary copies (POSIX)
except ImportError:  # pragma: no cover - Windows
    fcntl = None
import stat
from collections.abc import Sequence
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


# --- an mp3's other containers: APEv2 and ID3v1 beside its ID3v2 --------------------------------

# ID3v1 fields (offsets in its 128 bytes): title, artist, album, year, comment (ID3v1.1: 28 bytes,
# then a zero byte and the track number; ID3v1.0: 30 bytes).
_V1_FIELDS = ((3, 33), (33, 63), (63, 93), (93, 97), (97, 125))
