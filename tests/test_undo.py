"""The undo journal and `gtag undo`, end to end on real fixtures in every container (tiny models)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mutagen
import pytest
from click.testing import CliRunner
from mutagen.id3 import ID3, TCON

from gtag.cli import main
from gtag.keep.journal import Journal, JournalError
from gtag.tags import riffinfo
from gtag.tags.content import content_key
from gtag.tags.genrefields import read_fields

from .test_tag_cli import gtag_tag, make_lib, sha  # noqa: F401  (gtag_tag is a fixture)

ALL = ["blues_v23_untagged.mp3", "blues_v24_tagged.mp3", "classical.aiff", "classical.flac", "classical.wav",
       "hiphop.wma", "jazz.m4a", "metal.ogg", "metal.opus", "rock.wv"]


def _set_originals(path: Path) -> None:
    """Genre values a user's tagger may have left, in each container's own forms."""
    name = path.name
    if name == "blues_v23_untagged.mp3":
        tag = ID3()
        tag.add(TCON(encoding=1, text=["Polka/Ska"]))  # as Picard joins two genres in v2.3
        tag.save(path, v2_version=3)
    elif path.suffix in (".mp3", ".aiff"):
        audio = mutagen.File(path)
        if audio.tags is None:
            audio.add_tags()
        audio.tags.delall("TCON")
        audio.tags.add(TCON(encoding=3, text=["Polka", "(17)"]))  # a numeric ID3v1 reference, kept raw
        audio.save()
    elif name == "classical.wav":
        # No ID3 genre; the RIFF INFO chunk has one (readers built on libavformat show it).
        riffinfo.write_info(path, {"IGNR": "Polka"})
    elif name == "hiphop.wma":
        audio = mutagen.File(path)
        audio["WM/Genre"], audio["WM/GenreID"] = ["Polka", "Ska"], ["Polka"]
        audio.save()
    elif path.suffix == ".m4a":
        audio = mutagen.File(path)
        audio["\xa9gen"] = ["Polka", "Ska"]
        audio.save()
    elif path.suffix == ".wv":
        audio = mutagen.File(path)
        if audio.tags is None:
            audio.add_tags()
        audio["Genre"] = ["Polka", "Ska"]
        audio.save()
    else:  # Vorbis comments: a duplicate value and a lower-case key, as found in the wild
        audio = mutagen.File(path)
        audio.pop("genre", None)
        audio["genre"] = ["Polka", "polka", "Ska"]
        audio.save()


def _other_tags(path: Path) -> dict:
    """Every tag but the genre fields and gtag's own, as text."""
    audio = mutagen.File(path)
    skip = ("TCON", "\xa9gen", "genre", "wm/genre", "wm/genreid", "gtag_confidence", "gtag_source")
    if audio.tags is None:
        return {}
    keys = audio.tags.keys()
    return {k: str(audio.tags[k]) for k in keys if not any(s in k.lower() for s in skip)}


def _undo(*args, journal: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["undo", "--journal", str(journal), *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, dict[str, tuple[dict, str, dict]]]:
    lib = make_lib(tmp_path / "lib", ALL)
    state = {}
    for name in ALL:
        _set_originals(lib / name)
        state[name] = (read_fields(lib / name)[1], content_key(lib / name), _other_tags(lib / name))
    return lib, state


def test_write_then_undo_gives_every_container_its_values_back(library, tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib, original = library
    journal = tmp_path / "undo.sqlite3"
    run = gtag_tag("--replace", "--min-confidence", "0", "--write-confidence", "--journal", journal, lib)
    assert run.code == 0, run.stderr
    assert {r["status"] for r in run.report} == {"tagged"}
    assert all(read_fields(lib / n)[1] != original[n][0] for n in ALL)
    # The journal says what each file had, exactly as stored.
    [row] = Journal(journal).candidates(original["blues_v24_tagged.mp3"][1], lib / "blues_v24_tagged.mp3")
    assert row.before["id3:TCON"] == ["Polka", "(17)"] and row.state == "written"
    assert row.after["id3:TXXX:GTAG_CONFIDENCE"]

    code, out, err = _undo("--dry-run", lib, journal=journal)
    assert code == 0 and out.count(": would restore") == len(ALL)
    assert all(read_fields(lib / n)[1] != original[n][0] for n in ALL)  # a dry run changes nothing

    code, out, err = _undo(lib, journal=journal)
    assert code == 0, err
    assert out.count(": restored") == len(ALL)
    for name in ALL:
        fields, key, others = original[name]
        assert read_fields(lib / name)[1] == fields, name  # value for value, field for field
        assert content_key(lib / name) == key and _other_tags(lib / name) == others, name
    # Everything is undone: a second undo has nothing left to give back.
    code, out, _ = _undo(lib, journal=journal)
    assert code == 0 and "restored" not in out


def test_undo_refuses_a_file_changed_since_unless_forced(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["classical.flac", "metal.opus"])
    _set_originals(lib / "classical.flac")
    journal = tmp_path / "undo.sqlite3"
    assert gtag_tag("--replace", "--min-confidence", "0", "--journal", journal, lib).code == 0
    audio = mutagen.File(lib / "metal.opus")
    audio["genre"] = ["Shoegaze"]  # the user retagged it by hand since
    audio.save()
    before = sha(lib / "metal.opus")
    code, out, err = _undo(lib, journal=journal)
    assert code == 1
    assert "refused:" in err and "metal.opus" in err and "Shoegaze" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and sha(lib / "metal.opus") == before
    assert mutagen.File(lib / "classical.flac")["genre"] == ["Polka", "polka", "Ska"]  # the other one was restored
    code, out, err = _undo("--force", lib / "metal.opus", journal=journal)
    assert code == 0 and mutagen.File(lib / "metal.opus")["genre"] == ["Rock"]


def test_undo_finds_moved_and_renamed_files_and_lists_runs(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["classical.flac", "jazz.m4a", "rock.wv"])
    for p in lib.iterdir():
        _set_originals(p)  # genres gtag never writes: every file is written
    journal = tmp_path / "undo.sqlite3"
    first = gtag_tag("--replace", "--min-confidence", "0", "--journal", journal, lib)
    assert first.code == 0
    (lib / "moved").mkdir()
    os.rename(lib / "classical.flac", lib / "moved" / "renamed.flac")
    mutagen_file = mutagen.File(lib / "moved" / "renamed.flac")
    mutagen_file["title"] = ["retitled elsewhere"]  # another tagger touched it: size and mtime change
    mutagen_file.save()
    os.rename(lib / "rock.wv", tmp_path / "rock.wv")  # moved out of the library

    code, out, _ = _undo("--list", journal=journal)
    [line] = [ln for ln in out.splitlines() if " tag " in ln]
    run_id = line.split()[0]
    assert "3 files written, 0 undone" in line

    code, out, err = _undo("--run", run_id, lib, journal=journal)
    assert code == 1  # one file of the run is not under lib any more: said, in one line
    assert "renamed.flac: restored" in out and "then at" in out
    assert mutagen.File(lib / "moved" / "renamed.flac")["genre"] == ["Polka", "polka", "Ska"]
    assert mutagen.File(lib / "moved" / "renamed.flac")["title"] == ["retitled elsewhere"]
    [missing] = [ln for ln in err.splitlines() if "not found" in ln]
    assert "rock.wv" in missing
    code, out, _ = _undo("--list", journal=journal)
    assert "3 files written, 2 undone" in out


def test_a_journal_that_cannot_be_written_writes_no_file(tmp_path: Path, gtag_tag, monkeypatch) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["classical.flac"])
    _set_originals(lib / "classical.flac")
    before = sha(lib / "classical.flac")
    (tmp_path / "a-file").write_text("")
    run = gtag_tag("--replace", "--min-confidence", "0", "--journal", tmp_path / "a-file" / "undo.sqlite3", lib)
    assert run.code == 2 and "undo journal" in run.stderr and sha(lib / "classical.flac") == before

    (tmp_path / "garbage.sqlite3").write_bytes(b"not a database at all" * 100)
    run = gtag_tag("--replace", "--min-confidence", "0", "--journal", tmp_path / "garbage.sqlite3", lib)
    assert run.code == 2 and "cannot use the undo journal" in run.stderr and sha(lib / "classical.flac") == before
    assert len(run.stderr.strip().splitlines()) == 1

    def full_disk(*args, **kwargs):
        raise JournalError(f"undo journal {tmp_path / 'j'} cannot be written (database or disk is full)")

    monkeypatch.setattr(Journal, "record", full_disk)
    run = gtag_tag("--replace", "--min-confidence", "0", "--journal", tmp_path / "j.sqlite3", lib)
    assert run.code == 1 and run.report[0]["status"] == "failed"
    assert "disk is full" in run.report[0]["error"] and "not modified" in run.report[0]["error"]
    assert sha(lib / "classical.flac") == before


CHILD = """
import os, signal, sys
from pathlib import Path
from gtag.tags import formats
from gtag.tags import tempfiles
from gtag.keep.journal import Journal, RunJournal
real, when, journal, path = os.replace, sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
def crash(src, dst, **kw):
    if not os.path.basename(src).startswith(tempfiles.TEMP_PREFIX):
        return real(src, dst, **kw)
    if when == "after":
        real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
formats.os.replace = crash
j = Journal(journal)
RunJournal(j, j.start_run("tag", "sig")).write_genres(path, ["Classical"])
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_undo_after_kill_9_between_journal_and_rename(when: str, tmp_path: Path) -> None:
    # The child does what gtag tag does for one file (journal, then write) and is killed at the rename.
    lib = make_lib(tmp_path / "lib", ["metal.opus"])
    path = lib / "metal.opus"
    journal = tmp_path / "undo.sqlite3"
    before = sha(path)
    child = subprocess.run([sys.executable, "-c", CHILD, when, str(journal), str(path)], capture_output=True,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    [row] = Journal(journal).candidates(content_key(path), path)
    assert row.state == "pending" and row.before["vorbis:GENRE"] == ["Rock"]
    for leftover in lib.glob(".gtag-*"):
        leftover.unlink()  # the next gtag tag run removes it; undo never needs it
    if when == "before":
        assert sha(path) == before  # killed before the rename: the file is as it was
    else:
        assert mutagen.File(path)["genre"] == row.after["vorbis:GENRE"] == ["Classical"]
    code, out, err = _undo(lib, journal=journal)
    assert code == 0, err
    assert ("nothing to undo" if when == "before" else "restored") in out
    assert mutagen.File(path)["genre"] == ["Rock"]
    if when == "before":
        assert sha(path) == before


def test_undo_without_a_journal_is_one_line(tmp_path: Path) -> None:
    code, _, err = _undo(tmp_path, journal=tmp_path / "none.sqlite3")
    assert code == 2 and "no undo journal" in err and len(err.strip().splitlines()) == 1


def test_undo_after_album_merge(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["classical.flac", "jazz.m4a"])
    originals = {}
    for p in lib.iterdir():
        _set_originals(p)
        originals[p.name] = read_fields(p)[1]
    run = gtag_tag("--album", "--merge", "--min-confidence", "0", lib)  # the journal of $GTAG_JOURNAL
    assert run.code == 0, run.stderr
    assert {r["status"] for r in run.report} == {"tagged"}
    assert all(r["written"][:len(r["existing"])] == r["existing"] for r in run.report)  # merged
    result = CliRunner().invoke(main, ["undo", str(lib)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert {p.name: read_fields(p)[1] for p in lib.iterdir()} == originals
