"""The beets plugin (beetsplug/gtag.py) on a real beets library in tmp_path, with real short clips
and the shipped models: the import stage, `beet gtag` and its options, and the order with lastgenre.
Skipped where beets is not installed; CI runs it on the newest beets and on beets 2.7.1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .beets_env import FORMATS, UNCERTAIN, file_genres, lib, sha  # noqa: F401 (lib: fixture)

BLUES = FORMATS / "blues_v23_untagged.mp3"  # the models hear blues (95%)
CLASSICAL = FORMATS / "classical.flac"  # classical (99%)


def beets_genres(path) -> list[str]:
    """The genres in a file, as beets' own reader (MediaFile) reads them."""
    from mediafile import MediaFile

    return list(MediaFile(str(path)).genres or [])


def one(lib, query: str = ""):
    (item,) = lib.items(query)
    return item


@pytest.mark.parametrize("threaded", [False, True])  # threaded: the stage runs off beets' main thread
def test_import_as_is_tags_the_library_copy_and_keeps_genres_a_person_set(lib, threaded):
    lib.config["threaded"] = threaded
    src = lib.add(BLUES, genres=None)
    mine = lib.add(CLASSICAL, genres=["Zydeco"])  # a genre of theirs, not what gtag hears
    before = sha(src), sha(mine)
    lib.run("import", "-A", "-q", str(lib.src))
    blues, = lib.items("title:blues")
    assert blues.genres == ["Blues"]
    assert file_genres(blues.filepath) == ["Blues"] == beets_genres(blues.filepath)  # written on -A
    assert blues.gtag_status == "tagged" and blues.gtag_written == ["Blues"] and blues.gtag_before == []
    assert 0.5 < blues.gtag_confidence <= 1 and blues.gtag_genres == ["Blues"] and blues.gtag_model
    classical, = lib.items("title:classical")
    assert classical.genres == ["Zydeco"] and file_genres(classical.filepath) == ["Zydeco"]
    assert "gtag_status" not in classical  # kept: not even analysed
    assert (sha(src), sha(mine)) == before  # the copied-from files are untouched
    # typed fields: a numeric range and a status query
    assert [i.title for i in lib.items("gtag_confidence:0.5..")] == [blues.title]
    assert [i.title for i in lib.items("gtag_status:tagged")] == [blues.title]


def test_pretend_changes_no_byte_and_no_field(lib, capfd):
    lib.add(BLUES, genres=["Zydeco"])
    lib.config["gtag"] = {"auto": False}
    lib.run("import", "-A", "-q", str(lib.src))
    item = one(lib)
    before = sha(item.filepath)
    lib.run("gtag", "-p", "-f")
    assert "Zydeco → Blues" in capfd.readouterr().out
    item = one(lib)
    assert sha(item.filepath) == before and item.genres == ["Zydeco"]
    assert not [k for k in item.keys() if k.startswith("gtag_")]


@pytest.mark.parametrize("flags, expected", [
    ((), ["Zydeco"]),  # a genre a person set is kept
    (("--merge",), ["Zydeco", "Blues"]),
    (("-f",), ["Blues"]),
])
def test_force_and_merge(lib, flags, expected):
    lib.add(BLUES, genres=["Zydeco"])
    lib.config["gtag"] = {"auto": False}
    lib.run("import", "-A", "-q", str(lib.src))
    lib.run("gtag", *flags)
    item = one(lib)
    assert item.genres == expected
    assert file_genres(item.filepath) == expected == beets_genres(item.filepath)
    if flags:
        assert item.gtag_before == ["Zydeco"]  # what was replaced or merged into stays known


@pytest.mark.parametrize("import_write, flag, written", [
    (True, "-W", False),  # store only, although beets writes by default
    (False, "-w", True),  # write, although beets does not by default
    (False, None, False),  # the default: beets' import.write
])
def test_write_or_store_only(lib, import_write, flag, written):
    lib.add(BLUES, genres=None)
    lib.config["gtag"] = {"auto": False}
    lib.config["import"]["write"] = import_write
    lib.run("import", "-A", "-q", str(lib.src))
    item = one(lib)
    before = sha(item.filepath)
    lib.run("gtag", *([flag] if flag else []))
    item = one(lib)
    assert item.genres == ["Blues"] and item.gtag_status == "tagged"
    assert file_genres(item.filepath) == (["Blues"] if written else [])
    assert (sha(item.filepath) == before) is not written


def test_a_corrupt_file_fails_alone(lib):
    lib.add(BLUES, "a.mp3", genres=None)
    lib.add(CLASSICAL, "b.flac", genres=None)
    lib.config["gtag"] = {"auto": False}
    lib.run("import", "-A", "-q", str(lib.src))
    bad = one(lib, "format:MP3")
    bad.filepath.write_bytes(b"ID3" + b"\x00" * 7 + b"not audio at all" * 1000)  # its audio is gone
    garbage = sha(bad.filepath)
    lib.run("gtag")
    bad, good = one(lib, "format:MP3"), one(lib, "format:FLAC")
    assert good.genres == ["Classical"] and file_genres(good.filepath) == ["Classical"]
    assert bad.gtag_status == "failed" and bad.gtag_reason and bad.genres == []
    assert sha(bad.filepath) == garbage  # nothing written into it


def test_update_keeps_gtag_fields_and_a_moved_file_is_not_analysed_again(lib, monkeypatch):
    lib.add(BLUES, genres=None)
    lib.run("import", "-A", "-q", str(lib.src))
    lib.run("update")
    item = one(lib)
    assert item.genres == ["Blues"] and item.gtag_status == "tagged" and item.gtag_written == ["Blues"]
    analysed = item.gtag_analyzed
    lib.config["paths"] = {"default": "moved/$title"}
    lib.run("move")
    assert "moved" in str(one(lib).filepath)
    import gtag.api

    def deaf(self, path):
        raise gtag.api.AudioLoadError(f"{path}: analysed again")

    monkeypatch.setattr(gtag.api.GenrePredictor, "predict", deaf)
    lib.run("gtag", "-f")  # the prediction the library keeps is reused: same models, same audio
    item = one(lib)
    assert item.gtag_status == "tagged" and item.genres == ["Blues"] and item.gtag_analyzed >= analysed
    lib.run("gtag", "-f", "--no-cache")
    assert one(lib).gtag_status == "failed" and one(lib).genres == ["Blues"]


def test_a_stopped_run_keeps_the_items_it_finished(lib, monkeypatch):
    lib.add(BLUES, "a.mp3", genres=None)
    lib.add(CLASSICAL, "b.flac", genres=None)
    lib.config["gtag"] = {"auto": False}
    lib.run("import", "-A", "-q", str(lib.src))
    import gtag.api

    real, calls = gtag.api.GenrePredictor.predict, []

    def ctrl_c_on_the_second(self, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(gtag.api.GenrePredictor, "predict", ctrl_c_on_the_second)
    report = lib.root / "report.csv"
    with pytest.raises(KeyboardInterrupt):
        lib.run("gtag", "-j", "1", "--report", str(report))
    done, stopped = sorted(lib.items(), key=lambda i: "gtag_status" not in i)
    assert done.genres and file_genres(done.filepath) == done.genres == done.gtag_written
    assert stopped.genres == [] and "gtag_status" not in stopped and file_genres(stopped.filepath) == []
    assert report.read_text().count(",tagged,") == 1  # the report says what was done


def test_models_that_cannot_load_are_reported_once_and_the_import_goes_on(lib, caplog):
    lib.add(BLUES, "a.mp3", genres=None)
    lib.add(CLASSICAL, "b.flac", genres=None)
    lib.config["gtag"] = {"models": str(lib.root / "no-such-models")}
    lib.run("import", "-A", "-q", str(lib.src))
    assert len(lib.items()) == 2 and all("gtag_status" not in i for i in lib.items())
    assert sum("gtag is off for this import" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture
def offline_lastfm(monkeypatch):
    pylast = pytest.importorskip("pylast")

    def offline(self):
        raise pylast.NetworkError(None, OSError("offline in tests"))

    monkeypatch.setattr(pylast._Request, "_download_response", offline)


@pytest.mark.parametrize("order, lastgenre, expected, written", [
    # lastgenre first: Last.fm has nothing, gtag fills the gap
    (["lastgenre", "gtag"], {}, ["Blues"], ["Blues"]),
    # lastgenre first and finding something (its fallback): gtag keeps it, not even analysing
    (["lastgenre", "gtag"], {"force": True, "fallback": "Electronic"}, ["Electronic"], None),
    # gtag first, then lastgenre with force: it replaces what came before (here by its fallback) ...
    (["gtag", "lastgenre"], {"force": True, "fallback": "Electronic"}, ["Electronic"], ["Blues"]),
    # ... and with source: album it sets the album's genre, which its tracks inherit
    (["gtag", "lastgenre"], {"force": True, "fallback": "Electronic", "source": "album"}, ["Electronic"], ["Blues"]),
])
def test_order_with_lastgenre(lib, offline_lastfm, order, lastgenre, expected, written):
    lib.add(BLUES, genres=None)
    lib.config["plugins"] = order
    lib.config["lastgenre"] = {"source": "track", **lastgenre}
    lib.run("import", "-A", "-q", str(lib.src))
    item = one(lib)
    assert item.genres == expected
    assert item.get("gtag_written") == written  # None: gtag left the item alone
    # On -A beets writes no tags, nor does lastgenre's stage: the library copy gets the item's final
    # genres where gtag's stage changed the item (it writes once the files are placed).
    assert file_genres(item.filepath) == (expected if written else [])
    lib.run("gtag")  # a genre another plugin set is not gtag's: never replaced without --force
    assert one(lib).genres == expected


def test_end_to_end_beet_in_a_subprocess(lib):
    lib.add(BLUES, genres=None)
    lib.add(UNCERTAIN, "electronic.mp3", genres=None)  # neither its vote nor its MSD tags are sure: gtag abstains
    done = lib.subprocess("import", "-A", "-q", str(lib.src))
    assert done.returncode == 0, done.stderr
    shown = lib.subprocess("ls", "-f", "$title|$genres|$gtag_confidence|$gtag_status").stdout.splitlines()
    rows = {line.split("|")[0]: line.split("|")[1:] for line in shown}
    genres, confidence, status = rows["Fixture blues v2.3"]
    assert genres == "Blues" and status == "tagged" and len(confidence.split(".")[1]) == 3
    uncertain = lib.subprocess("ls", "-f", "$path", "gtag_status:uncertain").stdout.splitlines()
    assert len(uncertain) == 1 and file_genres(uncertain[0]) == []


def test_the_plugin_loads_without_numpy_or_onnxruntime():
    code = ("import sys, beetsplug.gtag; "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'gtag.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_names_and_exclude_from_beets_config_and_gtag_config_file(lib):
    lib.add(BLUES, "a.mp3", genres=None)
    lib.add(CLASSICAL, "b.flac", genres=None)
    (lib.root / "gtag.toml").write_text('exclude = ["classical"]\n', encoding="utf-8")
    lib.config["gtag"] = {"auto": False, "config": str(lib.root / "gtag.toml"), "names": {"blues": "Delta Blues"}}
    lib.run("import", "-A", "-q", str(lib.src))
    lib.run("gtag")
    blues, classical = one(lib, "format:MP3"), one(lib, "format:FLAC")
    assert blues.genres == ["Delta Blues"] and file_genres(blues.filepath) == ["Delta Blues"]
    assert classical.genres == [] and classical.gtag_status == "excluded"  # excluded: nothing else fits
    lib.config["gtag"]["names"] = {"bluez": "Typo"}
    with pytest.raises(Exception, match="unknown genre names.bluez"):
        lib.run("gtag")


def test_album_votes_together_and_reports(lib):
    import json

    import mutagen

    for name in ("1.mp3", "2.mp3"):
        path = lib.add(BLUES, name, genres=None)
        f = mutagen.File(str(path), easy=True)
        f.update({"album": "Two Blues", "albumartist": "Nobody", "title": name})
        f.save()
    lib.config["gtag"] = {"auto": False}
    lib.run("import", "-A", "-q", str(lib.src))
    report = lib.root / "report.json"
    lib.run("gtag", "-a", "--report", str(report), "Two Blues")
    assert [i.genres for i in lib.items()] == [["Blues"], ["Blues"]]
    rows = json.loads(report.read_text())
    assert [r["status"] for r in rows] == ["tagged", "tagged"] and all(r["written"] == ["Blues"] for r in rows)
    from beets.library import Library

    db = Library(str(lib.db), str(lib.directory))
    (album,) = db.albums()
    assert album.genres == ["Blues"]
    db._close()
