"""Every genre field of a file exactly as stored, and putting recorded values back (for `gtag undo`).

A file's *fields* are a dict ``{"container:key": [values]}``: the genre key of its tag container
(``id3:TCON``, ``vorbis:GENRE``, ``mp4:\\xa9gen``, ``asf:WM/Genre``, ``ape:Genre``), the keys a
genre write removes (``asf:WM/GenreID``), gtag's own extra fields (``GTAG_CONFIDENCE``,
``GTAG_SOURCE``), a WAV's RIFF INFO genre (``riff:IGNR``), and in an MP3 its ID3v1 genre byte
(``id3v1:genre``) and an APEv2 ``Genre`` (``apev2:Genre``). ID3 values are read untranslated, so a
numeric ``(17)`` is recorded as ``(17)``, not as the "Rock" mutagen shows.

``restore_fields`` writes such a dict back the way ``gtag.tags.writing.write_genres`` writes genres: on a
verified temporary copy renamed over the file, every other tag and the audio untouched.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

import mutagen
from mutagen.apev2 import APENoHeaderError, APEv2
from mutagen.id3 import TCON

from gtag.tags import formats, riffinfo, tempfiles, writing
from gtag.tags.formats import FileChanged, TagError

__all__ = ["EXTRA_NAMES", "SECONDARY", "primary", "read_fields", "restore_fields"]

EXTRA_NAMES = ("GTAG_CONFIDENCE", "GTAG_SOURCE")  # what --write-confidence adds; undo removes them
# Fields recorded but left out of "was it changed since?": mutagen rewrites an MP3's ID3v1 genre
# from TCON on every save, and no reader prefers an MP3's APEv2 tag to its ID3v2.
SECONDARY = ("id3v1:", "apev2:")

Fields = dict[str, list[str]]


def primary(fields: Fields) -> Fields:
    """The fields that say what a file's genre is (what `gtag undo` compares)."""
    return {k: v for k, v in fields.items() if not k.startswith(SECONDARY)}


def read_fields(path: str | os.PathLike[str]) -> tuple[str, Fields]:
    """(format name, fields) of ``path``; TagError (one line) when it cannot be read."""
    path = Path(path)
    spec, audio = formats._open(path)
    with open(path, "rb") as fh:
        return formats._format_name(path, spec, audio), _fields(spec, audio, fh, path)


def _keys(style: formats.TagStyle) -> list[str]:
    return [style.genre_key, *style.stale_keys, *(style.extra_key.format(name=n) for n in EXTRA_NAMES)]


def _fields(spec: formats.FormatSpec, audio: mutagen.FileType, fh: BinaryIO, shown) -> Fields:
    style = spec.style
    tagset = audio.tags
    if style.container == "id3" and tagset is not None and tagset.version >= (2, 3, 0):
        fh.seek(0)
        try:  # the same tag again, untranslated: "(17)" stays "(17)"
            tagset = spec.mutagen_class(fh, translate=False).tags
        except Exception as exc:
            raise TagError(f"{shown}: unreadable ID3 tag ({formats._reason(exc)})") from exc
    out = {f"{style.container}:{k}": (formats._get(style, tagset, k) if tagset is not None else []) for k in _keys(style)}
    if spec.name == "wav" and _has_info(fh):
        values = [info["IGNR"] for info in riffinfo.read_info(fh) if info.get("IGNR")]
        out["riff:IGNR"] = list(dict.fromkeys(values))  # every INFO chunk gets one value back
    if spec.name == "mp3":
        v1 = _id3v1_genre(fh)
        if v1 is not None:
            out["id3v1:genre"] = [str(v1)]
        ape = _apev2(fh)
        if ape is not None:
            out["apev2:Genre"] = list(ape["Genre"]) if "Genre" in ape else []
    return out


def _has_info(fh: BinaryIO) -> bool:
    try:
        return bool(riffinfo.read_info(fh))
    except (OSError, riffinfo.RiffError):
        return False


def _id3v1_genre(fh: BinaryIO) -> int | None:
    size = os.fstat(fh.fileno()).st_size
    if size < 128:
        return None
    fh.seek(size - 128)
    block = fh.read(128)
    return block[127] if block[:3] == b"TAG" else None


def _apev2(fh: BinaryIO) -> APEv2 | None:
    fh.seek(0)
    try:
        return APEv2(fh)
    except (APENoHeaderError, mutagen.MutagenError, ValueError, OSError):
        return None


def _same(key: str, want: list[str], got: list[str], v23: bool) -> bool:
    """Whether a field reads back as written; ID3v2.3 TCON by genre, since mutagen saves v2.3
    numeric references ("(17)") as their names."""
    if want == got:
        return True
    return v23 and key == "id3:TCON" and TCON(text=want).genres == TCON(text=got).genres


def restore_fields(path: str | os.PathLike[str], fields: Fields,
                   expect: tuple[int, int, int, int] | None = None) -> Fields:
    """Set each of ``fields`` (as ``read_fields`` returns them) in ``path``; returns the fields read
    back. Atomic and verified like ``writing.write_genres``: on any failure the file is untouched
    and TagError is raised (``FileChanged`` when it is not the version ``expect`` describes)."""
    real = Path(os.path.realpath(path))
    try:
        before = real.stat()
    except OSError as exc:
        raise TagError(f"{path}: cannot read file ({formats._reason(exc)})") from exc
    if not stat.S_ISREG(before.st_mode):
        raise TagError(f"{path}: not a regular file")
    if expect is not None and writing._snapshot(before) != tuple(expect):
        raise FileChanged(f"{path}: file changed since it was checked, not modified")
    writing._check_writable(real, path)
    spec, original = formats._open(real, path)
    style = spec.style
    v23 = formats._is_id3v23(spec, original)
    temps: list[Path] = []
    try:
        fd, tmp_name = tempfiles._temp_copy(real, path, temps)
        with open(fd, "r+b") as fh:
            fh.raw.name = tmp_name
            with open(real, "rb") as src:
                while block := src.read(1 << 20):
                    fh.write(block)
            fh.flush()
            fh.seek(0)
            _, audio = formats._open(fh, path)
            if audio.tags is None:
                audio.add_tags()
            for key, values in fields.items():
                container, _, name = key.partition(":")
                if container == style.container:
                    formats._set(style, audio.tags, name, [v for v in values if v])
            tags_before = writing._leading_id3v2(fh) if spec.name == "mp3" else 0
            fh.seek(0)
            if style.container == "id3":
                audio.save(fh, v2_version=formats._id3_write_version(original), v23_sep="/")
                if spec.name == "mp3" and writing._leading_id3v2(fh) > max(tags_before, 1):
                    raise TagError(f"{path}: verification failed, file not modified: a second ID3v2 tag appeared")
            else:
                if style.container == "asf":
                    formats._asf_in_file_order(audio)
                audio.save(fh)
            fh.flush()
            _restore_mp3_extras(fh, fields)
            final, final_tmp, info_fh = fh, temps[0], None
            if "riff:IGNR" in fields and _has_info(fh):
                fd2, _ = tempfiles._temp_copy(real, path, temps)
                info_fh = open(fd2, "w+b")
                ignr = next(iter(fields["riff:IGNR"]), None)
                if riffinfo.rewrite_info(fh, info_fh, {"IGNR": ignr or None}):
                    final, final_tmp = info_fh, temps[-1]
            try:
                final.seek(0)
                got_spec, got = formats._open(final, path)
                if got_spec is not spec or writing._stream(got) != writing._stream(original):
                    raise TagError(f"{path}: verification failed, file not modified: audio stream differs")
                back = _fields(spec, got, final, path)
                wrong = [k for k, v in fields.items() if k in back and not _same(k, v, back[k], v23)]
                if wrong:
                    raise TagError(f"{path}: verification failed, file not modified: {', '.join(wrong)} "
                                   "did not read back")
                tempfiles._copy_metadata(final.fileno(), real, before)
                os.fsync(final.fileno())
                if writing._snapshot(real.stat()) != writing._snapshot(before):
                    raise FileChanged(f"{path}: file changed while its tags were written, not modified")
            finally:
                if info_fh is not None:
                    info_fh.close()
        os.replace(final_tmp, real)
        temps.remove(final_tmp)
    except TagError:
        raise
    except Exception as exc:
        raise TagError(f"{path}: could not write tags ({formats._reason(exc)}); the original is untouched") from exc
    finally:
        for t in temps:
            tempfiles._leftover(t)
    tempfiles._fsync_folder(real.parent)
    return back


def _restore_mp3_extras(fh: BinaryIO, fields: Fields) -> None:
    """An MP3's APEv2 Genre and ID3v1 genre byte, as recorded (mutagen's save rewrote the byte)."""
    if "apev2:Genre" in fields:
        ape = _apev2(fh)
        if ape is not None:
            values = [v for v in fields["apev2:Genre"] if v]
            if values:
                ape["Genre"] = values
            elif "Genre" in ape:
                del ape["Genre"]
            fh.seek(0)
            ape.save(fh)
            fh.flush()
    if "id3v1:genre" in fields and fields["id3v1:genre"] and _id3v1_genre(fh) is not None:
        fh.seek(os.fstat(fh.fileno()).st_size - 1)
        fh.write(bytes([int(fields["id3v1:genre"][0]) & 0xFF]))
        fh.flush()
