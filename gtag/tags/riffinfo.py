"""RIFF LIST/INFO items of a WAV file (IGNR, ISFT, ...), which mutagen neither reads nor writes.

Players built on libavformat read a WAV's tags from its LIST/INFO chunk when it has one (some
FFmpeg versions then discard the ID3 chunk: "Discarding ID3 tags because more suitable tags were
found"), so a genre that is only in the ID3 chunk is invisible to them.  gtag sets IGNR in INFO
chunks that already exist and never adds one: a new INFO chunk would make those same readers
discard the artist, title and album that a file keeps in ID3, hiding more than it shows.

Only ever applied to gtag's own temporary copy (see ``gtag.tags.writing.write_genres``); every chunk
other than the INFO lists is copied byte for byte, which ``chunk_digests`` lets the caller check.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

__all__ = ["RiffError", "chunk_digests", "read_info", "write_info"]

_COPY_BLOCK = 1 << 20


class RiffError(ValueError):
    """The file is not a RIFF/WAVE file whose chunk list can be walked to its end."""


def _chunks(fh: BinaryIO, size: int) -> list[tuple[bytes, int, int]]:
    """(id, data offset, data size) of every top-level chunk of a RIFF/WAVE file."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise RiffError("not a RIFF/WAVE file")
    out = []
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        cid, length = struct.unpack("<4sI", fh.read(8))
        if pos + 8 + length > size:
            raise RiffError(f"chunk {cid!r} runs past the end of the file")
        out.append((cid, pos + 8, length))
        pos += 8 + length + (length & 1)
    return out


def _is_info(fh: BinaryIO, cid: bytes, offset: int, length: int) -> bool:
    if cid != b"LIST" or length < 4:
        return False
    fh.seek(offset)
    return fh.read(4) == b"INFO"


def _parse_info(body: bytes) -> list[tuple[str, str]]:
    """The (id, value) items of an INFO list body (after the 'INFO' type)."""
    items = []
    pos = 0
    while pos + 8 <= len(body):
        cid, length = struct.unpack("<4sI", body[pos : pos + 8])
        raw = body[pos + 8 : pos + 8 + length]
        # Values are NUL-terminated; writers disagree on the encoding, UTF-8 covers ASCII and FFmpeg.
        items.append((cid.decode("latin-1"), raw.split(b"\0", 1)[0].decode("utf-8", "replace")))
        pos += 8 + length + (length & 1)
    return items


def _render_info(items: list[tuple[str, bytes]]) -> bytes:
    body = b"INFO"
    for cid, raw in items:
        data = raw + b"\0"
        body += struct.pack("<4sI", cid.encode("latin-1"), len(data)) + data + (b"\0" if len(data) & 1 else b"")
    return body


def _reading(source):
    """An open binary file for a path, or the given file object itself (not closed after)."""
    import contextlib

    if hasattr(source, "read"):
        source.seek(0)
        return contextlib.nullcontext(source)
    return open(source, "rb")


def read_info(path) -> list[dict[str, str]]:
    """The items of each LIST/INFO chunk of a WAV file (a path or an open binary file), in file
    order (empty when it has none)."""
    with _reading(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        lists = []
        for cid, offset, length in _chunks(fh, size):
            if _is_info(fh, cid, offset, length):
                fh.seek(offset + 4)
                lists.append(dict(_parse_info(fh.read(length - 4))))
        return lists


def rewrite_info(src: BinaryIO, dst: BinaryIO, updates: Mapping[str, str | None]) -> bool:
    """Copy the WAV in ``src`` to ``dst`` (both open binary files) with INFO items set (or, with
    None, removed) in every existing LIST/INFO chunk; other items keep their order and bytes, every
    other chunk its bytes. Returns False, writing nothing, when there is no INFO chunk. Works on
    open files only, so the caller's safe write never handles a temporary file by name."""
    src.seek(0)
    size = os.fstat(src.fileno()).st_size
    chunks = _chunks(src, size)
    new_lists: dict[int, bytes] = {}
    for cid, offset, length in chunks:
        if not _is_info(src, cid, offset, length):
            continue
        src.seek(offset + 4)
        body = src.read(length - 4)
        items: list[tuple[str, bytes]] = []
        pos = 0
        while pos + 8 <= len(body):
            sub, sub_len = struct.unpack("<4sI", body[pos : pos + 8])
            items.append((sub.decode("latin-1"), body[pos + 8 : pos + 8 + sub_len].split(b"\0", 1)[0]))
            pos += 8 + sub_len + (sub_len & 1)
        for key, value in updates.items():
            keep = [(k, v) for k, v in items if k != key]
            if value is not None:
                at = next((i for i, (k, _) in enumerate(items) if k == key), len(keep))
                keep.insert(min(at, len(keep)), (key, value.encode("utf-8")))
            items = keep
        new_lists[offset] = _render_info(items)
    if not new_lists:
        return False
    dst.seek(0)
    dst.truncate()
    dst.write(b"RIFF\0\0\0\0WAVE")
    for cid, offset, length in chunks:
        if offset in new_lists:
            data = new_lists[offset]
            dst.write(struct.pack("<4sI", cid, len(data)) + data + (b"\0" if len(data) & 1 else b""))
            continue
        src.seek(offset - 8)
        left = 8 + length + (length & 1)
        while left:
            block = src.read(min(left, _COPY_BLOCK))
            if not block:
                # An odd last chunk without its pad byte: add it, as RIFF requires.
                dst.write(b"\0" * left)
                break
            dst.write(block)
            left -= len(block)
    total = dst.tell()
    dst.seek(4)
    dst.write(struct.pack("<I", total - 8))
    dst.flush()
    return True


def chunk_digests(path, skip: tuple[bytes, ...] = (b"id3 ", b"ID3 ")) -> list[tuple[bytes, str]]:
    """(id, sha256) of every top-level chunk except LIST/INFO and the ``skip`` ids, in order:
    equal lists before and after a write mean the audio and every other chunk are untouched."""
    out = []
    with _reading(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        for cid, offset, length in _chunks(fh, size):
            if cid in skip or _is_info(fh, cid, offset, length):
                continue
            digest = hashlib.sha256()
            fh.seek(offset)
            left = length
            while left:
                block = fh.read(min(left, _COPY_BLOCK))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
            out.append((cid, digest.hexdigest()))
    return out


def write_info(path: str | os.PathLike[str], updates: Mapping[str, str | None], prefix: str = ".gtag-") -> bool:
    """``rewrite_info`` on a file by name, through a temporary file renamed over it (for preparing
    files; gtag's own tag write calls ``rewrite_info`` on open descriptors)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".riff")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "w+b") as dst:
            changed = rewrite_info(src, dst, updates)
            if changed:
                os.fsync(dst.fileno())
        if changed:
            os.replace(tmp_name, path)
        return changed
    finally:
        Path(tmp_name).unlink(missing_ok=True)
