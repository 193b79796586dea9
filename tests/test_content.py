"""gtag.tags.content: a file's key survives every tag write and changes with its audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gtag.tags.content import KEY_VERSION, ContentError, content_key
from gtag.tags.writing import write_genres

from .conftest import FIXTURES, need

FILES = sorted(p.name for p in (FIXTURES / "formats").glob("*")) if (FIXTURES / "formats").is_dir() else []
MEDIAFILE = ["full.ape", "full.dsf", "full.mpc", "full.mp3", "full.wav"]


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copyfile(need(src), dst)
    return dst


@pytest.mark.parametrize("src", [FIXTURES / "formats" / n for n in FILES] + [FIXTURES / "mediafile" / n for n in MEDIAFILE],
                         ids=lambda p: p.name)
def test_the_key_survives_tag_writes_and_changes_with_the_audio(src: Path, tmp_path: Path) -> None:
    path = _copy(src, tmp_path)
    key = content_key(path)
    assert key.startswith(f"{KEY_VERSION}:") and len(key) == len(KEY_VERSION) + 41
    # A long value grows the tag past its padding (MP4 moov moves, Ogg pages renumber) …
    write_genres(path, ["Rock", "x" * 5000], {"GTAG_CONFIDENCE": "0.5"})
    assert content_key(path) == key
    write_genres(path, [])
    assert content_key(path) == key
    # … while one changed byte in the middle of the audio is another content.
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert content_key(path) != key


def test_a_renamed_copy_has_the_same_key_and_other_files_do_not(tmp_path: Path) -> None:
    a = _copy(FIXTURES / "formats" / "classical.flac", tmp_path)
    b = tmp_path / "renamed.ogg"  # the name plays no part, not even its extension
    shutil.copyfile(a, b)
    assert content_key(a) == content_key(b)
    keys = {content_key(_copy(FIXTURES / "formats" / n, tmp_path)) for n in FILES}
    assert len(keys) == len(FILES)


def test_a_damaged_container_is_a_content_error(tmp_path: Path) -> None:
    path = _copy(FIXTURES / "formats" / "jazz.m4a", tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # mdat now runs past the end
    with pytest.raises(ContentError):
        content_key(path)
