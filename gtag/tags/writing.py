"""Writing the genre safely: the original is copied to a hidden temporary file in the same folder,
the copy is tagged and verified, and only then renamed over the original (``os.replace`` is atomic
on POSIX). Any failure leaves the original byte-for-byte untouched.
"""

from __future__ import annotations

import os

try:
    import fcntl  # locks on the temporary copies (POSIX)
except ImportError:  # pragma: no cover - Windows
    fcntl = None
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import mutagen

from gtag.tags import riffinfo
from gtag.tags.content import id3v2_tags
from gtag.tags.formats import (
    _V1_FIELDS,
    FileChanged,
    FormatSpec,
    TagError,
    _asf_in_file_order,
    _asf_order_ok,
    _get,
    _id3_write_version,
    _info_genre,
    _is_id3v23,
    _open,
    _reason,
    _set,
    _stored,
    fit_genres,
)
from gtag.tags.reading import _ape_genres, _read_extra
from gtag.tags.tempfiles import _copy_keeping_holes, _copy_metadata, _fsync_folder, _leftover, _temp_copy, _with_cleanup

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
    existing RIFF INFO chunks get the same genre as IGNR (see ``gtag.tags.riffinfo``).  Returns the
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
                tags_before = _leading_id3v2(fh) if spec.name == "mp3" else 0
                fh.seek(0)  # mutagen reads the tag it replaces at the current position: elsewhere it inserts a second
                audio.save(fh, v2_version=_id3_write_version(original), v23_sep="/")
                if spec.name == "mp3":
                    if _leading_id3v2(fh) > max(tags_before, 1):
                        raise TagError(f"{path}: verification failed, file not modified: a second ID3v2 tag appeared")
                    _sync_mp3_side_tags(fh, old_v1, _stored(genres, False, separator), path)
            else:
                if style.container == "asf":
                    _asf_in_file_order(audio)
                audio.save(fh)
            fh.flush()
            _verify(spec, original, fh, path, genres, extra, separator)
            final, final_tmp = fh, tmp
            info_fh = None
            if spec.name == "wav" and _has_info(fh):  # the genre in its RIFF INFO chunk too (gtag.tags.riffinfo)
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


def _id3v1_block(fh: BinaryIO) -> bytes | None:
    """The 128-byte ID3v1 tag at the end of an open file, or None (the file position is kept)."""
    pos = fh.tell()
    try:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < 128:
            return None
        fh.seek(-128, os.SEEK_END)
        block = fh.read(128)
        return block if block[:3] == b"TAG" else None
    finally:
        fh.seek(pos)


def _leading_id3v2(fh: BinaryIO) -> int:
    """How many ID3v2 tags follow one another from the start of an open file (``content.id3v2_tags``);
    the position is left at 0."""
    fh.flush()
    n = len(id3v2_tags(fh, os.fstat(fh.fileno()).st_size))
    fh.seek(0)
    return n


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


def _has_info(fh: BinaryIO) -> bool:
    """Whether an open WAV has a LIST/INFO chunk gtag can walk (only then is its INFO rewritten)."""
    try:
        return bool(riffinfo.read_info(fh))
    except (OSError, riffinfo.RiffError):
        return False


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
