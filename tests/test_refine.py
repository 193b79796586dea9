"""Refine, never coarsen (gtag.genres.refine): --force keeps a finer genre, --merge adds the parent beside it
in every container (read back by mutagen, TagLib and mediafile), --replace replaces."""

from __future__ import annotations

import csv
from pathlib import Path

import mutagen
import pytest
from mutagen.id3 import ID3, TCON

from gtag.genres.refine import MERGE, REFINE, REPLACE, decide
from gtag.tags.reading import read_genres
from gtag.tags.writing import write_genres

from .test_tag_cli import gtag_tag, make_lib  # noqa: F401  (gtag_tag is a fixture)


@pytest.mark.parametrize("existing, heard, mode, one_value, values, says", [
    # --force: the file's finer genre (any alias of a style of gtag's genre) is kept as spelled
    (["Alt. Rock"], ["Rock"], REFINE, False, ["Alt. Rock"], "kept Alt. Rock: finer than Rock"),
    (["Alternative"], ["Rock"], REFINE, False, ["Alternative"], "finer than Rock"),
    (["Hard Rock"], ["Rock"], REFINE, True, ["Hard Rock"], "finer than Rock"),
    (["Prog"], ["Rock"], REFINE, False, ["Prog"], "finer than Rock"),
    (["hip hop"], ["Hip-Hop"], REFINE, False, ["hip hop"], ""),  # the same genre: the file's spelling stays
    # a sibling or unrelated genre is replaced, and the line says so
    (["Jazz"], ["Rock"], REFINE, False, ["Rock"], "replaced Jazz: not Rock or a style of it"),
    (["Heavy Metal"], ["Rock"], REFINE, False, ["Rock"], "replaced Heavy Metal"),  # Metal's style, not Rock's
    (["Alt. Rock", "Polka"], ["Rock"], REFINE, False, ["Alt. Rock"], "replaced Polka"),
    (["Rock"], ["Hard Rock"], REFINE, False, ["Hard Rock"], "refined Rock to Hard Rock"),  # coarser: refined
    # --merge: the parent goes beside the style; the same genre in another spelling is not added twice
    (["Alt. Rock"], ["Rock"], MERGE, False, ["Alt. Rock", "Rock"], ""),
    (["Alternative Rock"], ["Alt Rock", "Rock"], MERGE, False, ["Alternative Rock", "Rock"], ""),
    (["rock"], ["Rock"], MERGE, False, ["rock"], "nothing to add: the file has rock"),
    # one genre fits (ID3v2.3): the most specific wins, and the line says why nothing was added
    (["Alt. Rock"], ["Rock"], MERGE, True, ["Alt. Rock"], "Rock not added: the tag holds one genre"),
    (["Polka"], ["Rock"], MERGE, True, ["Polka"], "--merge keeps the file's Polka"),
    (["Rock"], ["Hard Rock"], MERGE, True, ["Hard Rock"], "refined Rock to Hard Rock"),
    # --replace: gtag's genre, whatever the file had
    (["Alt. Rock"], ["Rock"], REPLACE, False, ["Rock"], "replaced Alt. Rock (--replace)"),
    ([], ["Rock", "Pop"], REFINE, True, ["Rock"], ""),
    # gtag names a path, genre > style: the file's style is judged against the style gtag hears
    (["Alt. Rock"], ["Rock", "Alternative Rock"], REFINE, False, ["Rock", "Alt. Rock"], ""),  # its spelling
    (["Hard Rock"], ["Rock", "Alternative Rock"], REFINE, False, ["Rock", "Alternative Rock"],
     "replaced Hard Rock"),  # a sibling style
    (["rock"], ["Rock", "Alternative Rock"], REFINE, False, ["rock", "Alternative Rock"], ""),
    (["rock"], ["Rock", "Alternative Rock"], REFINE, True, ["Alternative Rock"], "refined rock"),
    ([], ["Rock", "Alternative Rock"], REFINE, True, ["Alternative Rock"], ""),  # one fits: the style
    (["Rock"], ["Rock", "Alternative Rock"], MERGE, True, ["Alternative Rock"], "refined Rock to Alternative Rock"),
    (["Polka"], ["Rock", "Alternative Rock"], MERGE, True, ["Polka"], "Alternative Rock not added"),
    (["Jazz"], ["Rock", "Hard Rock"], REPLACE, True, ["Hard Rock"], "replaced Jazz (--replace)"),
])
def test_decide(existing, heard, mode, one_value, values, says) -> None:
    d = decide(existing, heard, mode, one_value)
    assert d.values == values
    assert says in d.note and (says or not d.note)


def test_decide_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError):
        decide(["Rock"], ["Rock"], "coarsen")


# --- gtag tag on real files: gtag hears Rock (a whitelist of one), each file has a style of it --------

ROCK_ONLY = 'only = ["rock"]\n'
FILES = ["blues_v23_untagged.mp3", "blues_v24_tagged.mp3", "classical.flac", "hiphop.wma", "jazz.m4a",
         "metal.ogg", "rock.wv"]


def _read_taglib(path: Path) -> list[str]:
    taglib = pytest.importorskip("taglib")
    with taglib.File(str(path)) as f:
        return list(f.tags.get("GENRE", []))


def _read_mediafile(path: Path) -> list[str]:
    mediafile = pytest.importorskip("mediafile")
    return list(mediafile.MediaFile(path).genres or [])


def _library(tmp_path: Path) -> Path:
    lib = make_lib(tmp_path / "lib", FILES)
    for name in FILES:
        if name == "blues_v23_untagged.mp3":
            tag = ID3()
            tag.add(TCON(encoding=1, text=["Alternative Rock"]))
            tag.save(lib / name, v2_version=3)
        else:
            write_genres(lib / name, ["Alt. Rock"])
    return lib


@pytest.fixture
def rock_config(tmp_path: Path) -> Path:
    path = tmp_path / "rock.toml"
    path.write_text(ROCK_ONLY)
    return path


def test_force_keeps_a_finer_genre_and_replace_replaces_it(tmp_path: Path, gtag_tag, rock_config) -> None:  # noqa: F811
    lib = _library(tmp_path)
    run = gtag_tag("--force", "--min-confidence", "0", "--config", rock_config, lib)
    assert run.code == 0, run.stderr
    for rec in run.report:
        assert rec["status"] == "unchanged" and rec["written"] == rec["existing"], rec
        assert "finer than Rock" in rec["note"]
    assert run.stdout.count("finer than Rock") == len(FILES)
    assert read_genres(lib / "jazz.m4a") == ["Alt. Rock"]
    # The CSV report says it too, in a note column (there only when a file has a note).
    report = tmp_path / "r.csv"
    gtag_tag("--force", "--dry-run", "--min-confidence", "0", "--config", rock_config, "--report", report, lib)
    with report.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(FILES) and all("finer than Rock" in r["note"] for r in rows)
    run = gtag_tag("--replace", "--min-confidence", "0", "--config", rock_config, lib)
    assert {r["status"] for r in run.report} == {"tagged"}
    assert all(read_genres(lib / n) == ["Rock"] for n in FILES)
    assert "replaced Alt. Rock (--replace)" in run.stdout


def test_merge_adds_the_parent_in_every_container(tmp_path: Path, gtag_tag, rock_config) -> None:  # noqa: F811
    lib = _library(tmp_path)
    run = gtag_tag("--merge", "--min-confidence", "0", "--config", rock_config, lib)
    assert run.code == 0, run.stderr
    v23 = run.rec("blues_v23_untagged.mp3")
    assert v23["status"] == "unchanged" and "Rock not added: the tag holds one genre" in v23["note"]
    assert "already" not in run.stdout and "Rock not added" in run.stdout
    for name in FILES:
        path = lib / name
        if name == "blues_v23_untagged.mp3":  # the most specific genre stays, as every reader shows it
            want = ["Alternative Rock"]
        else:
            assert run.rec(name)["status"] == "tagged"
            want = ["Alt. Rock", "Rock"]
        assert read_genres(path) == want, name  # mutagen
        assert _read_taglib(path) == want, name
        assert _read_mediafile(path) == want, name
    assert [f.text for f in mutagen.File(lib / "blues_v24_tagged.mp3").tags.getall("TCON")] == [["Alt. Rock", "Rock"]]
