"""A file's content key: a hash of its audio payload, the bytes no tag write touches.

The undo journal (``gtag.keep.journal``) and the beets plugin find a file by what it *sounds like*, not by
where it is: a file that was retagged (by gtag or any other tagger), moved or renamed keeps its key,
while path + size + mtime (the prediction cache's key) changes with every tag write.

Only the standard library: the container is recognised by its first bytes (never by its name) and
the tag blocks are skipped by their own length fields, so hashing costs one read of the file.

- ID3v2 at the start, ID3v1 / APEv2 at the end (MP3, WavPack, Monkey's Audio, Musepack, TAK,
  OptimFROG, and anything unrecognised): everything between them.
- FLAC: the frames after the last metadata block.  Ogg (Vorbis, Opus, Speex, FLAC): every packet
  but each stream's second one (its comment header, where the tags and their padding live); page
  headers are left out, since a longer comment renumbers the pages after it.
- MP4: the bodies of the ``mdat`` atoms.  ASF: everything after the header object.
- WAV / AIFF: the format and sample chunks (``fmt``/``data``, ``COMM``/``SSND``).  DSF: likewise.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["KEY_VERSION", "ContentError", "content_key", "id3v2_tags"]

# Part of every key: a later, different way of hashing must never match keys of this one.
KEY_VERSION = "a1"
_BLOCK = 1 << 20
_ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


class ContentError(ValueError):
    """The file's container cannot be walked (truncated, or a length field runs past its end)."""


def content_key(path: str | os.PathLike[str]) -> str:
    """``"a1:" + 40 hex digits``: BLAKE2b-160 of the audio payload of ``path``.

    Raises OSError when the file cannot be read, ContentError when its container is damaged."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h = hashlib.blake2b(digest_size=20)
        for start, end in _ranges(fh, size):
            for block in _read(fh, start, end):
                h.update(block)
        return f"{KEY_VERSION}:{h.hexdigest()}"


def _read(fh: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    fh.seek(start)
    left = end - start
    while left > 0:
        block = fh.read(min(_BLOCK, left))
        if not block:
            raise ContentError("file ends inside its audio")
        left -= len(block)
        yield block


def _ranges(fh: BinaryIO, size: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the audio payload, in file order."""
    fh.seek(0)
    head = fh.read(36)
    if head[:4] == b"OggS":
        return _ogg(fh, size)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _chunks(fh, size, 12, "<", (b"fmt ", b"data"))
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _chunks(fh, size, 12, ">", (b"COMM", b"SSND"))
    if head[:4] == b"DSD ":
        return _dsf(fh, size)
    if head[:16] == _ASF_HEADER:
        (header,) = struct.unpack("<Q", head[16:24])
        if header > size:
            raise ContentError("ASF header object runs past the end of the file")
        return [(header, size)]
    if head[4:8] == b"ftyp":
        return _mp4(fh, size)
    start = _skip_id3v2(fh, size)
    fh.seek(start)
    if fh.read(4) == b"fLaC":
        return [(_flac_audio(fh, start + 4, size), _tail_tags_start(fh, start, size))]
    return [(start, _tail_tags_start(fh, start, size))]


def id3v2_tags(fh: BinaryIO, size: int) -> list[int]:
    """End offset of each ID3v2 tag that follows another from the start of the file (readers take
    the first; some files carry two, and a tag write must never add one)."""
    ends, pos = [], 0
    while pos + 10 <= size:
        fh.seek(pos)
        head = fh.read(10)
        if head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
            break
        length = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        pos += 10 + length + (10 if head[5] & 0x10 else 0)  # a footer follows when flagged
        ends.append(min(pos, size))
    return ends


def _skip_id3v2(fh: BinaryIO, size: int) -> int:
    """Offset after every ID3v2 tag at the start of the file."""
    ends = id3v2_tags(fh, size)
    return ends[-1] if ends else 0


def _tail_tags_start(fh: BinaryIO, start: int, end: int) -> int:
    """Where the ID3v1 and APEv2 tags at the end of a file begin (``end`` when there are none)."""
    while end - start >= 32:
        if end - start >= 128:
            fh.seek(end - 128)
            if fh.read(3) == b"TAG":
                end -= 128
                continue
        fh.seek(end - 32)
        footer = fh.read(32)
        if footer[:8] == b"APETAGEX":
            length, _, flags = struct.unpack("<III", footer[12:24])
            length += 32 if flags & 0x80000000 else 0  # the size excludes the optional header
            if length > end - start:
                raise ContentError("APEv2 tag runs past the start of the file")
            end -= length
            continue
        break
    return end


def _flac_audio(fh: BinaryIO, pos: int, size: int) -> int:
    """Offset of the first FLAC frame, after the metadata blocks that start at ``pos``."""
    while True:
        fh.seek(pos)
        head = fh.read(4)
        if len(head) < 4:
            raise ContentError("FLAC metadata runs past the end of the file")
        pos += 4 + int.from_bytes(head[1:4], "big")
        if head[0] & 0x80:  # the last metadata block
            if pos > size:
                raise ContentError("FLAC metadata runs past the end of the file")
            return pos


def _chunks(fh: BinaryIO, size: int, pos: int, order: str, keep: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """RIFF (``<``) or IFF (``>``) chunks named in ``keep``: their ids and bodies."""
    out = []
    while pos + 8 <= size:
        fh.seek(pos)
        cid, length = struct.unpack(f"{order}4sI", fh.read(8))
        if cid in keep:
            if pos + 8 + length > size:
                raise ContentError(f"chunk {cid.decode('latin-1')!r} runs past the end of the file")
            out.append((pos, pos + 8 + length))
        pos += 8 + length + (length & 1)
    if not out:
        raise ContentError("no audio chunk")
    return out


def _dsf(fh: BinaryIO, size: int) -> list[tuple[int, int]]:
    """A DSF file's fmt and data chunks (64-bit sizes); its ID3v2 tag sits after them."""
    out, pos = [], 28
    while pos + 12 <= size:
        fh.seek(pos)
        cid, length = struct.unpack("<4sQ", fh.read(12))
        if cid not in (b"fmt ", b"data") or length < 12 or pos + length > size:
            break
        out.append((pos, pos + length))
        pos += length
    if not out:
        raise ContentError("no DSF data chunk")
    return out


def _mp4(fh: BinaryIO, size: int) -> list[tuple[int, int]]:
    """Bodies of the top-level ``mdat`` atoms (moov, with the tags and chunk offsets, is left out)."""
    out, pos = [], 0
    while pos + 8 <= size:
        fh.seek(pos)
        length, kind = struct.unpack(">I4s", fh.read(8))
        body = pos + 8
        if length == 1:
            (length,) = struct.unpack(">Q", fh.read(8))
            body += 8
        elif length == 0:  # runs to the end of the file
            length = size - pos
        if length < body - pos or pos + length > size:
            raise ContentError(f"MP4 atom {kind.decode('latin-1')!r} runs past the end of the file")
        if kind == b"mdat":
            out.append((body, pos + length))
        pos += length
    if not out:
        raise ContentError("no MP4 mdat atom")
    return out


def _ogg(fh: BinaryIO, size: int) -> list[tuple[int, int]]:
    """Segment data of every Ogg packet but each logical stream's comment header (packet 1)."""
    out: list[tuple[int, int]] = []
    packet: dict[int, int] = {}  # serial -> index of the packet being read
    pos = 0
    while pos + 27 <= size:
        fh.seek(pos)
        head = fh.read(27)
        if head[:4] != b"OggS":
            raise ContentError(f"no Ogg page at byte {pos}")
        (serial,) = struct.unpack("<I", head[14:18])
        lacing = fh.read(head[26])
        data = pos + 27 + len(lacing)
        n = packet.get(serial, 0)
        for lace in lacing:
            if n != 1 and lace:
                if out and out[-1][1] == data:
                    out[-1] = (out[-1][0], data + lace)
                else:
                    out.append((data, data + lace))
            data += lace
            if lace < 255:
                n += 1
        packet[serial] = n
        if data > size:
            raise ContentError("Ogg page runs past the end of the file")
        pos = data
    if not out:
        raise ContentError("no Ogg audio packets")
    return out
