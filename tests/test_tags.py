"""Genre tag reading and writing (gtag.tags) on real files of every supported container.

Every write goes to a copy in tmp_path; the shared fixtures are never written.  Readers other
than gtag (raw mutagen, mediafile as used by beets) check that what gtag writes is what they see.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
from pathlib import Path

import mutagen
import numpy as np
import pytest
from mutagen.apev2 import APEv2
from mutagen.asf import ASF
from mutagen.id3 import ID3
from mutagen.mp4 import MP4, Atom

from gtag.tags import formats as tags_formats
from gtag.tags import reading as tags_reading
from gtag.tags import tempfiles
from gtag.tags import writing as tags_writing
from gtag.tags.formats import FORMATS, TagError, UnsupportedFormat
from gtag.tags.reading import read_extra, read_genres
from gtag.tags.writing import write_genres

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
FIXTURE_NAMES = (
    sorted(
        str(p.relative_to(FIXTURES))
        for folder in ("formats", "mediafile")
        for p in (FIXTURES / folder).glob("*.*")
    )
    if FIXTURES.is_dir()
    else [pytest.param(None, marks=pytest.mark.skip(reason=f"no shared fixtures at {FIXTURES}"))]
)
MP3_V23 = "formats/blues_v23_untagged.mp3"
EXTRA = {"GTAG_CONFIDENCE": "0.82", "GTAG_SOURCE": "gtag 0.1.0"}


def _copy(name: str, folder: Path) -> Path:
    """A writable copy of a fixture (copyfile, not copy: the fixtures are read-only)."""
    src = FIXTURES / name
    if not src.is_file():
        pytest.skip(f"fixture {src} is missing")
    dst = folder / src.name
    shutil.copyfile(src, dst)
    return dst


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(tempfiles.TEMP_PREFIX)]


def _raw_genres(path: Path) -> list[str]:
    """The genre values as mutagen itself stores them, without gtag's helpers."""
    audio = mutagen.File(path)
    if isinstance(audio.tags, ID3):
        return [text for frame in audio.tags.getall("TCON") for text in frame.text]
    if isinstance(audio, MP4):
        return list(audio.tags.get("\xa9gen", []))
    if isinstance(audio, ASF):
        return [str(value) for value in audio.tags.get("WM/Genre", [])]
    if isinstance(audio.tags, APEv2):
        return list(audio.tags["Genre"]) if "Genre" in audio.tags else []
    return list(audio.tags.get("GENRE", []))


def _id3_version(path: Path) -> tuple[int, int, int] | None:
    audio = mutagen.File(path)
    return audio.tags.version if isinstance(audio.tags, ID3) else None


def audio_fingerprint(path: Path) -> str | None:
    """sha256 of the decoded samples (soundfile, else PyAV); None when neither can decode.

    ASF is compared on its Data Object bytes instead: the tags live in the Header Object before
    it, and FFmpeg cannot decode every WMA (the mediafile fixture among them).
    """
    import av
    import soundfile as sf

    if isinstance(mutagen.File(path), ASF):
        data = path.read_bytes()
        header_size = struct.unpack_from("<Q", data, 16)[0]  # after the 16-byte header GUID
        return hashlib.sha256(data[header_size:]).hexdigest()
    digest = hashlib.sha256()
    try:
        samples, _ = sf.read(path, dtype="float32", always_2d=True)
        digest.update(samples.tobytes())
        return digest.hexdigest()
    except RuntimeError:  # soundfile.LibsndfileError: a format libsndfile does not read
        pass
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.audio[0]):
                digest.update(frame.to_ndarray().tobytes())
    except av.FFmpegError:
        return None
    return digest.hexdigest()


@pytest.fixture(scope="module")
def mediafile():
    return pytest.importorskip("mediafile")


@pytest.fixture(scope="module")
def gtag_mediafile(mediafile):
    """A MediaFile subclass that also reads gtag's extra fields, as a beets plugin would."""
    from mediafile import ASFStorageStyle, MediaField, MP3DescStorageStyle, MP4StorageStyle, StorageStyle

    class GtagMediaFile(mediafile.MediaFile):
        pass

    for name in EXTRA:
        GtagMediaFile.add_field(
            name.lower(),
            MediaField(
                MP3DescStorageStyle(name),
                MP4StorageStyle(f"----:com.apple.iTunes:{name}"),
                StorageStyle(name),
                ASFStorageStyle(name),
            ),
        )
    return GtagMediaFile


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_write_one_genre(name: str, tmp_path: Path, mediafile) -> None:
    path = _copy(name, tmp_path)
    write_genres(path, ["Reggae"])
    assert read_genres(path) == ["Reggae"]
    assert _raw_genres(path) == ["Reggae"]
    assert mediafile.MediaFile(path).genres == ["Reggae"]
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_write_two_genres(name: str, tmp_path: Path, mediafile) -> None:
    path = _copy(name, tmp_path)
    version = _id3_version(path)
    write_genres(path, ["Jazz", "Blues"])

    if version == (2, 3, 0):
        # ID3v2.3 holds one value per frame, and no reader but mutagen splits a '/'-joined one:
        # without a separator, v2.3 gets the top genre only.
        assert read_genres(path) == ["Jazz"]
        assert _raw_genres(path) == ["Jazz"]
        assert mediafile.MediaFile(path).genres == ["Jazz"]
    else:
        assert read_genres(path) == ["Jazz", "Blues"]
        assert _raw_genres(path) == ["Jazz", "Blues"]
        assert mediafile.MediaFile(path).genres == ["Jazz", "Blues"]
    if _id3_version(path) is not None:
        assert _id3_version(path) == (version or (2, 4, 0))  # kept, or v2.4 for a new tag
    if version == (2, 4, 0):
        assert b"Jazz\x00Blues" in path.read_bytes()  # v2.4: separate, null-separated values


def test_id3v23_stays_v23(tmp_path: Path) -> None:
    path = _copy(MP3_V23, tmp_path)
    assert tags_formats.format_name(path) == "mp3/id3v2.3"
    write_genres(path, ["Jazz", "Blues"], EXTRA)
    assert path.read_bytes()[:4] == b"ID3\x03"
    assert tags_formats.format_name(path) == "mp3/id3v2.3"


def test_replacing_and_removing_genres(tmp_path: Path) -> None:
    path = _copy("formats/blues_v24_tagged.mp3", tmp_path)
    assert read_genres(path) == ["Blues"]
    write_genres(path, ["Metal"])
    assert read_genres(path) == ["Metal"]
    write_genres(path, [])
    assert read_genres(path) == []


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_audio_unchanged(name: str, tmp_path: Path) -> None:
    path = _copy(name, tmp_path)
    before = audio_fingerprint(path)
    if before is None:
        pytest.skip("neither soundfile nor PyAV decodes this file")
    write_genres(path, ["Jazz", "Blues"], EXTRA)
    assert audio_fingerprint(path) == before


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_other_tags_survive(name: str, tmp_path: Path, mediafile) -> None:
    path = _copy(name, tmp_path)

    def fields() -> dict[str, object]:
        values = mediafile.MediaFile(path).as_dict()
        values["images"] = [(i.mime_type, i.type, i.data) for i in values.get("images") or []]
        return {k: v for k, v in values.items() if k not in ("genre", "genres")}

    def raw() -> list[str]:
        # pprint() shows every item, including ones mediafile has no field for.
        genre_keys = {spec.style.genre_key.lower() for spec in FORMATS}
        lines = mutagen.File(path).pprint().splitlines()[1:]  # line 0 is the stream info
        return sorted(line for line in lines if line.split("=")[0].lower() not in genre_keys)

    fields_before, raw_before = fields(), raw()
    write_genres(path, ["Jazz"])
    assert fields() == fields_before
    assert raw() == raw_before


def test_cover_art_survives(tmp_path: Path, mediafile) -> None:
    path = _copy("mediafile/image.mp3", tmp_path)
    before = [(i.mime_type, i.data) for i in mediafile.MediaFile(path).images]
    assert before, "the fixture should carry cover art"
    write_genres(path, ["Jazz"])
    assert [(i.mime_type, i.data) for i in mediafile.MediaFile(path).images] == before


@pytest.mark.parametrize(
    "name",
    [
        MP3_V23,
        "formats/blues_v24_tagged.mp3",
        "formats/classical.aiff",
        "formats/jazz.m4a",
        "formats/classical.flac",
        "formats/metal.opus",
        "formats/hiphop.wma",
        "formats/rock.wv",
        "mediafile/full.mpc",
    ],
)
def test_extra_fields_round_trip(name: str, tmp_path: Path, gtag_mediafile) -> None:
    path = _copy(name, tmp_path)
    write_genres(path, ["Jazz"], EXTRA)
    other_reader = gtag_mediafile(path)
    for field, value in EXTRA.items():
        assert read_extra(path, field) == value
        assert getattr(other_reader, field.lower()) == value
    # Writing again replaces the fields rather than adding a second value.
    write_genres(path, ["Jazz"], {"GTAG_CONFIDENCE": "0.5"})
    assert read_extra(path, "GTAG_CONFIDENCE") == "0.5"
    assert gtag_mediafile(path).gtag_confidence == "0.5"
    assert read_extra(path, "GTAG_MISSING") is None


def test_mp4_numeric_genre_atom_is_removed(tmp_path: Path) -> None:
    path = _copy("formats/jazz.m4a", tmp_path)
    audio = MP4(path)
    # mutagen never writes 'gnre' itself; slip in a raw one (ID3v1 genre 9 = Jazz, 1-based).
    audio.tags._failed_atoms["gnre"] = [Atom.render(b"data", struct.pack(">2IH", 0, 0, 9))]
    audio.save()
    assert b"gnre" in path.read_bytes()
    write_genres(path, ["Blues"])
    assert b"gnre" not in path.read_bytes()
    assert read_genres(path) == ["Blues"]


def test_asf_genre_id_is_removed(tmp_path: Path) -> None:
    path = _copy("formats/hiphop.wma", tmp_path)
    audio = ASF(path)
    audio.tags["WM/GenreID"] = ["Rock"]
    audio.save()
    write_genres(path, ["Blues"])
    assert "WM/GenreID" not in ASF(path).tags
    assert read_genres(path) == ["Blues"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (MP3_V23, "mp3/id3v2.3"),
        ("formats/blues_v24_tagged.mp3", "mp3/id3v2.4"),
        ("formats/classical.wav", "wav/id3v2.4"),
        ("formats/classical.flac", "flac/vorbis"),
        ("formats/jazz_alac.m4a", "m4a/mp4"),
        ("formats/metal.opus", "opus/vorbis"),
        ("formats/hiphop.wma", "wma/asf"),
        ("formats/rock.wv", "wv/ape"),
        ("mediafile/full.dsf", "dsf/id3v2.4"),
    ],
)
def test_format_name(name: str, expected: str) -> None:
    if not (FIXTURES / name).is_file():
        pytest.skip(f"fixture {name} is missing")
    assert tags_formats.format_name(FIXTURES / name) == expected
    # gtag tag reads both from one parse of the tags
    path = FIXTURES / name
    assert tags_reading.read_format_and_genres(path, "; ") == (expected, tags_reading.read_genres(path, "; "))


def test_format_table_is_complete() -> None:
    assert {spec.style for spec in FORMATS} == set(tags_formats.STYLES)
    for spec in FORMATS:
        assert spec.extensions and all(ext.startswith(".") for ext in spec.extensions)
        assert spec.mutagen_class_name.startswith("mutagen.")


# --- safety --------------------------------------------------------------------------------------


def test_read_only_file_is_refused(tmp_path: Path) -> None:
    path = _copy("mediafile/full.flac", tmp_path)
    original = path.read_bytes()
    path.chmod(0o444)
    with pytest.raises(TagError, match="read-only"):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    path = _copy("mediafile/full.flac", folder)
    original = path.read_bytes()
    folder.chmod(0o555)
    try:
        with pytest.raises(TagError, match="read-only"):
            write_genres(path, ["Jazz"])
        assert path.read_bytes() == original
        assert _temp_files(folder) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    ("filename", "content"),
    [("notes.mp3", b"these are not the droids you are looking for\n" * 20), ("empty.mp3", b"")],
)
def test_non_audio_is_refused(tmp_path: Path, filename: str, content: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    for call in (read_genres, lambda p: write_genres(p, ["Jazz"]), tags_formats.format_name):
        with pytest.raises(TagError, match=filename):
            call(path)
    assert path.read_bytes() == content
    assert _temp_files(tmp_path) == []


def test_missing_file_is_a_tag_error(tmp_path: Path) -> None:
    with pytest.raises(TagError, match="nothing.flac"):
        read_genres(tmp_path / "nothing.flac")
    with pytest.raises(TagError, match="nothing.flac"):
        write_genres(tmp_path / "nothing.flac", ["Jazz"])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_truncated_file_fails_cleanly_or_stays_readable(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"truncated{Path(name).suffix}"
    if not (FIXTURES / name).is_file():
        pytest.skip(f"fixture {name} is missing")
    original = (FIXTURES / name).read_bytes()[:200]
    path.write_bytes(original)
    try:
        write_genres(path, ["Jazz"])
    except TagError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        assert path.read_bytes() == original
    else:
        assert read_genres(path) == ["Jazz"]
    assert _temp_files(tmp_path) == []


def test_unsupported_format(tmp_path: Path) -> None:
    # A minimal standard MIDI file: mutagen opens it, but it has no tags to hold a genre.
    path = tmp_path / "tune.mid"
    path.write_bytes(
        b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60" + b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
    )
    with pytest.raises(UnsupportedFormat, match="tune.mid"):
        write_genres(path, ["Jazz"])
    with pytest.raises(UnsupportedFormat):
        read_genres(path)


@pytest.mark.parametrize("name", ["formats/jazz.m4a", MP3_V23, "formats/classical.flac"])
def test_crash_while_saving_leaves_original(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(name, tmp_path)
    original = path.read_bytes()
    cls = type(mutagen.File(path))

    def half_written_save(self, *args, **kwargs) -> None:
        target = args[0] if args else self.filename  # gtag saves through its open temp file
        if hasattr(target, "write"):
            target.seek(0)
            target.write(b"\0" * 64)  # damage the file being saved, then die
        else:
            with open(target, "r+b") as fh:
                fh.write(b"\0" * 64)
        raise OSError("No space left on device")

    monkeypatch.setattr(cls, "save", half_written_save)
    with pytest.raises(TagError, match="No space left on device"):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("step", ["_is_id3v23", "_stored", "_verify", "_copy_metadata", "_verify_riff", "replace"])
def test_ctrl_c_at_any_step_of_a_write_leaves_no_temporary_copy(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C that landed just after the copy was made (before the code that removes it on a
    # failure had started) left a .gtag-* file in the user's folder (CI saw one after a -j 2 Ctrl-C).
    from gtag.tags import riffinfo

    path = _copy("formats/classical.wav", tmp_path)
    riffinfo.write_info(path, {"INAM": "Fixture classical"})  # so the second (INFO) copy is made too
    original = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if step == "replace":
        monkeypatch.setattr(os, "replace", interrupted)
    for module in (tags_writing, tempfiles):  # where the write looks the step up
        if hasattr(module, step):
            monkeypatch.setattr(module, step, interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


def test_a_stop_signal_while_the_copy_is_made_waits_until_it_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy("formats/classical.flac", tmp_path)
    original = path.read_bytes()
    real_open = os.open

    def signalled_open(name, *args, **kwargs):
        made = real_open(name, *args, **kwargs)
        if Path(name).name.startswith(tempfiles.TEMP_PREFIX):
            # Ctrl-C the moment the file exists, before it is returned, as Python runs the handler
            # when another thread (ONNX Runtime's) took the signal: the mask does not hold it then.
            raise KeyboardInterrupt
        return made

    monkeypatch.setattr(os, "open", signalled_open)
    with pytest.raises(KeyboardInterrupt):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


def test_crash_at_rename_leaves_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy("mediafile/full.ogg", tmp_path)
    original = path.read_bytes()

    def failing_replace(src, dst) -> None:
        raise OSError("Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(TagError, match=r"full\.ogg.*Input/output error"):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


def test_silently_lost_write_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy("formats/rock.wv", tmp_path)
    original = path.read_bytes()
    monkeypatch.setattr(type(mutagen.File(path)), "save", lambda self, *a, **k: None)
    with pytest.raises(TagError, match="verification failed"):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


def test_concurrent_change_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy("mediafile/full.flac", tmp_path)
    real_verify = tags_writing._verify

    def verify_then_other_program_writes(*args, **kwargs) -> None:
        real_verify(*args, **kwargs)
        with open(path, "ab") as fh:
            fh.write(b"x")

    monkeypatch.setattr(tags_writing, "_verify", verify_then_other_program_writes)
    with pytest.raises(TagError, match="changed"):
        write_genres(path, ["Jazz"])
    assert path.read_bytes().endswith(b"x")  # the other program's version is kept
    assert _temp_files(tmp_path) == []


def test_mode_kept_and_mtime_updated(tmp_path: Path) -> None:
    path = _copy("mediafile/full.m4a", tmp_path)
    path.chmod(0o640)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    write_genres(path, ["Jazz"])
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime > 1_000_000_000


def test_symlink_is_written_through(tmp_path: Path) -> None:
    target = _copy("mediafile/full.mp3", tmp_path)
    link = tmp_path / "link.mp3"
    link.symlink_to(target)
    write_genres(link, ["Jazz"])
    assert link.is_symlink()
    assert read_genres(target) == ["Jazz"]


def test_bad_arguments(tmp_path: Path) -> None:
    path = _copy("mediafile/full.flac", tmp_path)
    with pytest.raises(TypeError):
        write_genres(path, "Jazz")
    for bad in ([""], ["Jazz\0Blues"]):
        with pytest.raises(ValueError):
            write_genres(path, bad)


# --- what other readers need -------------------------------------------------------------------


def _riff_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(id, bytes) of each top-level RIFF chunk, parsed here without gtag's helpers."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == len(data) - 8
    out, pos = [], 12
    while pos < len(data):
        cid, size = struct.unpack("<4sI", data[pos : pos + 8])
        out.append((cid, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out


def test_wav_info_gets_the_genre_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _copy("formats/classical.wav", tmp_path)
    # A second INFO item, as other taggers write them, must survive with its bytes.
    from gtag.tags import riffinfo

    riffinfo.write_info(path, {"INAM": "Fixture classical"})
    before = _riff_chunks(path)
    assert [c for c, _ in before] == [b"fmt ", b"LIST", b"data"]

    write_genres(path, ["Classical", "Jazz"])
    after = _riff_chunks(path)
    info = dict(after)[b"LIST"]
    # The top genre only: INFO holds one value per item.
    assert info == (b"INFO" + b"ISFT\x0e\x00\x00\x00Lavf59.27.100\x00" + b"INAM\x12\x00\x00\x00Fixture classical\x00"
                    + b"IGNR\x0a\x00\x00\x00Classical\x00")
    assert dict(after)[b"data"] == dict(before)[b"data"]
    assert dict(after)[b"fmt "] == dict(before)[b"fmt "]
    assert read_genres(path) == ["Classical", "Jazz"]  # the ID3 chunk keeps both
    assert _temp_files(tmp_path) == []

    write_genres(path, ["Jazz", "Blues"], separator="; ")
    assert riffinfo.read_info(path) == [{"ISFT": "Lavf59.27.100", "INAM": "Fixture classical", "IGNR": "Jazz; Blues"}]
    write_genres(path, [])
    assert riffinfo.read_info(path) == [{"ISFT": "Lavf59.27.100", "INAM": "Fixture classical"}]
    assert dict(_riff_chunks(path))[b"data"] == dict(before)[b"data"]


def test_wav_without_info_gets_none(tmp_path: Path) -> None:
    # A new INFO chunk would make FFmpeg-based players discard the file's ID3 artist and title.
    path = _copy("mediafile/full.wav", tmp_path)
    ids = [c for c, _ in _riff_chunks(path)]
    assert b"LIST" not in ids
    write_genres(path, ["Jazz"])
    assert [c for c, _ in _riff_chunks(path) if c != b"id3 "] == [c for c in ids if c != b"id3 "]
    assert read_genres(path) == ["Jazz"]


def test_wav_info_genre_counts_as_existing(tmp_path: Path) -> None:
    from gtag.tags import riffinfo

    path = _copy("formats/classical.wav", tmp_path)
    riffinfo.write_info(path, {"IGNR": "Soundtrack"})
    assert read_genres(path) == ["Soundtrack"]  # no ID3 genre: INFO's is the file's genre


def test_wav_info_failure_leaves_file_untouched(tmp_path: Path, monkeypatch) -> None:
    from gtag.tags import riffinfo

    path = _copy("formats/classical.wav", tmp_path)
    before = path.read_bytes()

    def broken(src, dst, updates):
        src.seek(0)
        data = bytearray(src.read())
        data[1000] ^= 0xFF  # a rewrite that changed one audio sample
        dst.seek(0)
        dst.write(bytes(data))
        dst.flush()
        return True

    monkeypatch.setattr(riffinfo, "rewrite_info", broken)
    with pytest.raises(TagError, match="file not modified: RIFF INFO rewrite changed more than IGNR"):
        write_genres(path, ["Jazz"])
    assert path.read_bytes() == before
    assert _temp_files(tmp_path) == []


def test_id3v23_separator(tmp_path: Path, mediafile) -> None:
    path = _copy(MP3_V23, tmp_path)
    assert tags_formats.fit_genres("mp3/id3v2.3", ["Jazz", "Blues"]) == ["Jazz"]
    assert tags_formats.fit_genres("mp3/id3v2.3", ["Jazz", "Blues"], "; ") == ["Jazz", "Blues"]
    assert write_genres(path, ["Jazz", "Blues"], separator="; ") == ["Jazz", "Blues"]
    assert _raw_genres(path) == ["Jazz; Blues"]  # one value, shown as such by every reader
    assert mediafile.MediaFile(path).genres == ["Jazz; Blues"]
    assert read_genres(path, separator="; ") == ["Jazz", "Blues"]


def test_wma_genres_in_file_order(tmp_path: Path) -> None:
    path = _copy("formats/hiphop.wma", tmp_path)
    write_genres(path, ["Jazz", "Blues", "Rock"])
    data = path.read_bytes()
    # UTF-16 values, first genre first in the file: TagLib, kid3 and exiftool read in this order.
    positions = [data.find(g.encode("utf-16-le")) for g in ("Jazz", "Blues", "Rock")]
    assert -1 not in positions and positions == sorted(positions)
    assert read_genres(path) == ["Jazz", "Blues", "Rock"]


def _wav_with_chunks(path: Path, chunks: list[tuple[bytes, bytes]]) -> Path:
    """A RIFF/WAVE file made of the given (id, data) chunks, padded as RIFF requires."""
    body = b"WAVE" + b"".join(struct.pack("<4sI", cid, len(d)) + d + b"\0" * (len(d) & 1) for cid, d in chunks)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_wav_info_after_the_audio_and_odd_sizes(tmp_path: Path) -> None:
    """INFO after the data chunk, odd-length items and an odd-length chunk before it, and another
    LIST (adtl) that is not INFO: only the INFO list changes, and every size and pad stays valid."""
    import soundfile as sf

    from gtag.tags import riffinfo

    rng = np.random.default_rng(1)
    src = tmp_path / "src.wav"
    sf.write(src, (0.1 * rng.standard_normal(22050)).astype("float32"), 22050, subtype="PCM_16")
    fmt, data = dict(_riff_chunks(src))[b"fmt "], dict(_riff_chunks(src))[b"data"]
    info = b"INFO" + b"IART\x04\x00\x00\x00Abc\x00" + b"ICMT\x03\x00\x00\x00hi\x00\x00"
    adtl = b"adtl" + b"labl\x05\x00\x00\x00\x01\x00\x00\x00x\x00"
    path = _wav_with_chunks(tmp_path / "odd.wav", [(b"fmt ", fmt), (b"data", data), (b"junk", b"odd"),
                                                   (b"LIST", adtl), (b"LIST", info)])
    write_genres(path, ["Hip-Hop"])
    after = _riff_chunks(path)  # also checks the RIFF size
    assert [c for c, _ in after] == [b"fmt ", b"data", b"junk", b"LIST", b"LIST", b"id3 "]
    assert after[1][1] == data and after[2][1] == b"odd" and after[3][1] == adtl
    assert riffinfo.read_info(path) == [{"IART": "Abc", "ICMT": "hi", "IGNR": "Hip-Hop"}]
    assert sf.read(path)[0].shape == (22050,)
    assert read_genres(path) == ["Hip-Hop"]
