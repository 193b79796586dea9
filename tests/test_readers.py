"""What other programs show after gtag writes one or two genres: the reader matrix.

Every format fixture is tagged (a copy in tmp_path) with one and with two genres, then read back
by beets' mediafile, by libavformat (PyAV's ``container.metadata``, as in mpv and Jellyfin) and
by TagLib (pytaglib, as in Strawberry, Clementine, KDE and kid3).  ``MATRIX`` is the reader table
of docs/formats.md: ``test_readme_table_matches`` keeps the two the same.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gtag.tags.writing import write_genres

FORMATS = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "formats"
README = Path(__file__).resolve().parents[1] / "docs" / "formats.md"  # the reader table's page
ONE, TWO = ["Jazz"], ["Jazz", "Blues"]

# fixture -> (format, what mediafile, libavformat and TagLib show after writing TWO).
# With ONE genre every reader shows exactly "Jazz".
MATRIX = {
    "blues_v23_untagged.mp3": ("MP3, ID3v2.3", "Jazz", "Jazz", "Jazz"),
    "blues_v24_tagged.mp3": ("MP3, ID3v2.4", "Jazz, Blues", "Jazz", "Jazz, Blues"),
    "classical.aiff": ("AIFF (ID3)", "Jazz, Blues", "Jazz", "Jazz, Blues"),
    "classical.wav": ("WAV (ID3 + RIFF INFO)", "Jazz, Blues", "Jazz", "Jazz, Blues"),
    "classical.flac": ("FLAC", "Jazz, Blues", "Jazz;Blues", "Jazz, Blues"),
    "metal.ogg": ("Ogg Vorbis", "Jazz, Blues", "Jazz;Blues", "Jazz, Blues"),
    "metal.opus": ("Opus", "Jazz, Blues", "Jazz;Blues", "Jazz, Blues"),
    "jazz.m4a": ("M4A (AAC)", "Jazz, Blues", "Jazz", "Jazz, Blues"),
    "jazz_alac.m4a": ("M4A (ALAC)", "Jazz, Blues", "Jazz", "Jazz, Blues"),
    "hiphop.wma": ("WMA", "Jazz, Blues", "Blues", "Jazz, Blues"),
    "rock.wv": ("WavPack (APEv2)", "Jazz, Blues", "Jazz", "Jazz, Blues"),
}


def _copy(name: str, folder: Path) -> Path:
    src = FORMATS / name
    if not src.is_file():
        pytest.skip(f"fixture {src} is missing")
    dst = folder / name
    shutil.copyfile(src, dst)
    return dst


def read_mediafile(path: Path) -> str:
    mediafile = pytest.importorskip("mediafile")
    return ", ".join(mediafile.MediaFile(path).genres or [])


def read_libavformat(path: Path) -> str:
    """The genre libavformat reports: container metadata, or the audio stream's (Ogg keeps its
    comments per stream).  PyAV's dict keeps the last of several entries with the same key."""
    import av

    with av.open(str(path)) as container:
        for metadata in (container.metadata, *(s.metadata for s in container.streams.audio)):
            for key, value in metadata.items():
                if key.lower() == "genre":
                    return value
    return ""


def read_taglib(path: Path) -> str:
    taglib = pytest.importorskip("taglib", reason="pytaglib is not installed (pip install 'gtag[dev]')")
    with taglib.File(str(path)) as f:
        return ", ".join(f.tags.get("GENRE", []))


READERS = {"mediafile": read_mediafile, "libavformat": read_libavformat, "TagLib": read_taglib}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("genres", [ONE, TWO], ids=["1 genre", "2 genres"])
@pytest.mark.parametrize("name", MATRIX)
def test_reader_shows(name: str, genres: list[str], reader: str, tmp_path: Path) -> None:
    path = _copy(name, tmp_path)
    write_genres(path, genres)
    column = 1 + list(READERS).index(reader)
    expected = MATRIX[name][column] if genres == TWO else "Jazz"
    assert READERS[reader](path) == expected


def test_readme_table_matches() -> None:
    """Each row of MATRIX appears as a row of the reader table in docs/formats.md."""
    text = README.read_text()
    rows = {tuple(c.strip().strip("`") for c in line.strip("|").split("|"))
            for line in text.splitlines() if line.startswith("|")}
    for fmt, *shown in MATRIX.values():
        assert (fmt, *shown) in rows, f"docs/formats.md reader table lacks the row for {fmt}: {shown}"
    assert re.search(r"mediafile.*libavformat.*TagLib", text), "docs/formats.md table header"


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", MATRIX)
def test_reader_shows_one_joined_value_with_a_separator(name: str, reader: str, tmp_path: Path) -> None:
    """With the config's separator, two genres are one value that every reader shows whole."""
    path = _copy(name, tmp_path)
    write_genres(path, TWO, separator="; ")
    assert READERS[reader](path) == "Jazz; Blues"
