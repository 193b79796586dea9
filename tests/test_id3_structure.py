"""An mp3 keeps one ID3v2 tag, its ID3v1 tag and its audio through every write and undo.

Real files of ../shared/library carry ID3v2.3 *and* an ID3v1 tag at the end (as many rips do).
Reading the ID3v1 block before the save once left mutagen at the end of the file, and mutagen then
inserted a second ID3v2 tag in front of the old one instead of replacing it: mutagen read the
first, TagLib warned "Duplicate ID3v2 tags found". The checks here parse the bytes themselves and
ask TagLib, as a user's player would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from gtag.tags.content import content_key
from gtag.tags.genrefields import read_fields, restore_fields
from gtag.tags.writing import write_genres

from .conftest import SHARED

TRACK = SHARED / "library" / "music" / "rock" / "11.mp3"  # ID3v2.3 with TCON, and an ID3v1 tag


def id3v2_tags(path: Path) -> list[int]:
    """Sizes of the ID3v2 tags that follow one another from the start of the file."""
    b, pos, sizes = path.read_bytes(), 0, []
    while b[pos:pos + 3] == b"ID3":
        size = b[pos + 6] << 21 | b[pos + 7] << 14 | b[pos + 8] << 7 | b[pos + 9]
        sizes.append(size)
        pos += 10 + size
    return sizes


@pytest.fixture(params=["as ripped (ID3v2.3)", "re-saved by another tagger (ID3v2.4, no genre)"])
def track(request, tmp_path: Path) -> Path:
    if not TRACK.is_file():
        pytest.skip(f"{TRACK} is missing")
    path = tmp_path / "song.mp3"
    shutil.copyfile(TRACK, path)
    if "2.4" in request.param:
        tags = ID3(str(path))
        tags.delall("TCON")
        tags.save(str(path))  # mutagen's default: ID3v2.4, padded in place
    return path


def _taglib_genres(path: Path) -> list[str]:
    import taglib

    f = taglib.File(str(path))
    try:
        return list(f.tags.get("GENRE", []))
    finally:
        f.close()


def test_a_write_and_its_undo_leave_one_id3v2_tag_the_id3v1_tag_and_the_audio(track: Path, capfd) -> None:
    v1, key, had = track.read_bytes()[-128:], content_key(track), _taglib_genres(track)
    assert v1[:3] == b"TAG" and len(id3v2_tags(track)) == 1
    _, before = read_fields(track)
    steps = [(lambda: write_genres(track, ["Jazz", "Blues"]), "Jazz"), (lambda: write_genres(track, ["Rock"]), "Rock"),
             (lambda: restore_fields(track, before), None)]
    for step, first in steps:
        step()
        assert len(id3v2_tags(track)) == 1
        assert track.read_bytes()[-128:][:33] == v1[:33]  # ID3v1 "TAG" and its title: still the last 128 bytes
        assert content_key(track) == key  # the audio payload, byte for byte
        genres = _taglib_genres(track)
        assert genres[:1] == [first] if first else genres == had
    assert "Duplicate ID3v2" not in capfd.readouterr().err
