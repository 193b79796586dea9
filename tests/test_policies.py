"""Tagging policies library owners ask for: the config file (genre names, whitelist, exclude
list, separator, defaults), --merge and --album; on real fixture files with the tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import mutagen
import numpy as np
import pytest

from gtag.config import DEFAULT_NAMES, ConfigError, GenrePolicy, load_config
from gtag.genres import names as genres
from gtag.tags.reading import read_genres
from gtag.tags.writing import write_genres

from .conftest import GENRES, need
from .test_tag_cli import FORMATS, gtag_tag, make_lib, snapshot  # noqa: F401  (gtag_tag: fixture)

# --- spelling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spellings",
    [
        ["Hip-Hop", "hip hop", "HipHop", "hiphop", "Hip_Hop", " HIP  HOP "],
        ["R&B", "R and B", "r & b", "R+B"],
        ["Rock 'n' Roll", "Rock'n'Roll", "rock n roll", "Rock and Roll", "Rock & Roll"],
        ["Drum & Bass", "Drum n Bass", "drum and bass", "Drum'n'Bass"],
        ["Música Popular", "musica popular"],
    ],
)
def test_normalise_spellings(spellings: list[str]) -> None:
    assert len({genres.normalise(s) for s in spellings}) == 1


@pytest.mark.parametrize("a, b", [("Rock", "Pop"), ("Hip-Hop", "Trip-Hop"), ("Rockin'", "Rock"), ("Nu Metal", "Metal")])
def test_normalise_keeps_genres_apart(a: str, b: str) -> None:
    assert genres.normalise(a) != genres.normalise(b)


def test_merge_keeps_existing_spelling_and_order() -> None:
    assert genres.merge(["hip hop", "Jazz"], ["Hip-Hop", "Blues", "jazz"]) == ["hip hop", "Jazz", "Blues"]
    assert genres.merge([], ["Rock", "rock"]) == ["Rock"]


# --- config file -------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gtag.toml"
    path.write_text(text)
    return path


def test_config_file_values(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, '''
separator = "; "
min_confidence = 0.25
top_k = 2
models = ["musicnn", "cnn"]
only = ["Hip Hop", "jazz", "rock"]
exclude = ["rock"]
[names]
hiphop = "Hip Hop"
'''))
    assert cfg.separator == "; " and cfg.min_confidence == 0.25 and cfg.top_k == 2
    assert cfg.models == ("musicnn", "cnn")
    assert cfg.policy.name("hiphop") == "Hip Hop" and cfg.policy.name("jazz") == "Jazz"
    assert cfg.policy.allowed("hiphop") and cfg.policy.allowed("jazz")
    assert not cfg.policy.allowed("rock")  # excluded wins over the whitelist
    assert not cfg.policy.allowed("blues")  # not on the whitelist
    assert cfg.policy.unknown(GENRES) == []


def test_default_config_is_the_builtin_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GTAG_CONFIG", str(tmp_path / "absent.toml"))
    cfg = load_config()
    assert dict(cfg.policy.names) == dict(DEFAULT_NAMES) and cfg.separator is None and cfg.top_k is None
    assert GenrePolicy().name("hiphop") == "Hip-Hop"


@pytest.mark.parametrize(
    "text, message",
    [
        ("top_k = ", "not valid TOML"),
        ("topk = 2", "unknown key 'topk'"),
        ("top_k = 0", "top_k must be"),
        ("min_confidence = 1.5", "min_confidence must be"),
        ('separator = ""', "separator must be"),
        ("only = \"rock\"", "only must be a list"),
        ("[names]\nhiphop = 3", "names.hiphop must be"),
        ("models = []", "models must be"),
    ],
)
def test_invalid_config_is_one_error_and_exit_2(text: str, message: str, tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["jazz.m4a"])
    before = snapshot(lib)
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    run = gtag_tag("--config", path, lib)
    assert run.code == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config {path}") and message in lines[0]
    assert snapshot(lib) == before


def test_missing_config_file_given_is_an_error(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    run = gtag_tag("--config", tmp_path / "nope.toml", make_lib(tmp_path / "lib", ["jazz.m4a"]))
    assert run.code == 2 and "cannot read" in run.stderr


def test_config_names_unknown_label(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    path = _config(tmp_path, 'exclude = ["polka"]\n[names]\nhiphpo = "Hip Hop"\n')
    run = gtag_tag("--config", path, make_lib(tmp_path / "lib", ["jazz.m4a"]))
    assert run.code == 2
    assert "unknown genre names.hiphpo, exclude: polka" in run.stderr


def _ranked(rec: dict) -> list[str]:
    return sorted(rec["probabilities"], key=lambda lab: -rec["probabilities"][lab])


def test_config_names_separator_and_defaults(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    mediafile = pytest.importorskip("mediafile")
    names = {lab: f"Genre {lab.upper()}" for lab in GENRES}
    path = _config(tmp_path, 'separator = " / "\ntop_k = 2\n[names]\n'
                   + "".join(f'{lab} = "{name}"\n' for lab, name in names.items()))
    lib = make_lib(tmp_path / "lib", ["blues_v23_untagged.mp3", "jazz.m4a", "classical.wav"])
    run = gtag_tag("--config", path, lib)
    assert run.code == 0, run.stderr
    for rec in run.report:
        file = Path(rec["path"])
        expected = [names[lab] for lab in _ranked(rec)[:2]]  # top_k = 2 from the config
        assert rec["genres"] == rec["written"] == expected
        # One value in every container, ID3v2.3 included, shown as such by mediafile.
        assert mediafile.MediaFile(file).genres == [" / ".join(expected)]
        assert read_genres(file, separator=" / ") == expected
    # A flag wins over the config: --top-k 1.
    again = gtag_tag("--config", path, "--force", "--top-k", "1", lib / "jazz.m4a")
    assert again.report[0]["written"] == [names[_ranked(again.report[0])[0]]]


def test_whitelist_and_exclude(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["jazz.m4a", "metal.ogg", "classical.wav"])
    probe = gtag_tag("--dry-run", lib)
    tops = {Path(r["path"]).name: _ranked(r) for r in probe.report}
    # Exclude each file's top genre (by its written name, any spelling): the next one is written.
    excluded = sorted({DEFAULT_NAMES[r[0]].lower().replace("-", " ") for r in tops.values()})
    path = _config(tmp_path, f"exclude = {excluded!r}\n".replace("'", '"'))
    run = gtag_tag("--config", path, lib)
    assert run.code == 0, run.stderr
    banned = {genres.normalise(x) for x in excluded}
    for rec in run.report:
        allowed = [lab for lab in _ranked(rec) if genres.normalise(lab) not in banned]
        assert rec["written"] == [DEFAULT_NAMES[allowed[0]]]
        assert read_genres(rec["path"]) == rec["written"]
    # A whitelist of two labels: only those are ever written.
    path = _config(tmp_path, 'only = ["jazz", "Hip-Hop"]\ntop_k = 3\n')
    run = gtag_tag("--config", path, "--force", lib)
    for rec in run.report:
        assert rec["written"] == [DEFAULT_NAMES[lab] for lab in _ranked(rec) if lab in ("jazz", "hiphop")]


# --- --merge -----------------------------------------------------------------------------------


def test_merge_adds_without_doubles(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", ["blues_v24_tagged.mp3", "classical.flac", "jazz.m4a"])
    probe = gtag_tag("--dry-run", "--force", "--top-k", "2", lib)
    first, second = {Path(r["path"]).name: r["genres"] for r in probe.report}["jazz.m4a"]
    # The file already holds the top genre, spelled differently, and a genre of its own.
    variant = first.upper().replace("-", " ")
    write_genres(lib / "jazz.m4a", [variant, "Polka"])

    assert gtag_tag("--merge", "--force", lib).code == 2  # one or the other

    run = gtag_tag("--merge", "--top-k", "2", lib)
    assert run.code == 0, run.stderr
    rec = run.rec("jazz.m4a")
    assert rec["existing"] == [variant, "Polka"]
    assert rec["written"] == [variant, "Polka", second] and rec["status"] == "tagged"
    assert read_genres(lib / "jazz.m4a") == [variant, "Polka", second]
    for name in ("blues_v24_tagged.mp3", "classical.flac"):
        r = run.rec(name)
        assert r["written"] == genres.merge(r["existing"], r["genres"]) and r["existing"]
        assert read_genres(lib / name) == r["written"]
    # Merging again changes nothing.
    again = gtag_tag("--merge", "--top-k", "2", lib)
    assert set(again.statuses().values()) == {"unchanged"}


# --- --album -----------------------------------------------------------------------------------


def _set_album(path: Path, album: str, artist: str) -> None:
    audio = mutagen.File(path)
    audio["ALBUM"], audio["ALBUMARTIST"] = [album], [artist]
    audio.save()


def test_album_vote(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    root = tmp_path / "lib"
    # Album 1: two tagged tracks in different folders; album 2: an untagged folder of three WAVs.
    make_lib(root / "cd1", ["classical.flac"])
    make_lib(root / "cd2", ["metal.ogg"])
    for p in (root / "cd1" / "classical.flac", root / "cd2" / "metal.ogg"):
        _set_album(p, "Live", "The Band")
    write_genres(root / "cd1" / "classical.flac", [])  # untag: both tracks get written
    make_lib(root / "folder", wavs={"a.wav": 4, "b.wav": 5, "c.wav": 3})
    shutil.copyfile(need(FORMATS / "blues_v24_tagged.mp3"), root / "folder" / "d.mp3")  # has a genre

    run = gtag_tag("--album", "--top-k", "2", root)
    assert run.code == 0, run.stderr
    albums: dict[str, list[dict]] = {}
    for rec in run.report:
        albums.setdefault(rec["album"]["key"], []).append(rec)
    assert sorted(len(v) for v in albums.values()) == [2, 4]
    assert "The Band — Live" in albums
    for key, recs in albums.items():
        album = recs[0]["album"]
        assert all(r["album"] == album for r in recs) and album["tracks"] == len(recs)
        # The album's vote is the mean of its tracks' own probabilities (kept in each record).
        mean = {lab: np.mean([r["probabilities"][lab] for r in recs]) for lab in GENRES}
        best = sorted(mean, key=lambda lab: -mean[lab])
        assert [DEFAULT_NAMES[lab] for lab in best[:2]] == album["genres"]
        assert album["confidence"] == pytest.approx(mean[best[0]], abs=1e-3)
        for r in recs:
            if Path(r["path"]).name == "d.mp3":  # voted, but keeps its own genre by default
                assert r["status"] == "skipped: has genre" and read_genres(r["path"]) == ["Blues"]
            else:
                assert r["status"] == "tagged" and r["written"] == album["genres"]
                assert read_genres(r["path"]) == album["genres"]
    assert "album The Band — Live (2 of 2 tracks voted)" in run.stdout
    # A re-run (as after an interruption) votes the same from the cache: every track now keeps its
    # genre; with --force the tracks already written are unchanged and d.mp3 joins its album.
    again = gtag_tag("--album", "--top-k", "2", root)
    assert {r["status"] for r in again.report} == {"skipped: has genre"}
    assert all(r["cached"] for r in again.report)
    assert {r["album"]["key"]: r["album"] for r in again.report} == {k: v[0]["album"] for k, v in albums.items()}
    forced = gtag_tag("--album", "--top-k", "2", "--force", root)
    assert {Path(r["path"]).name: r["status"] for r in forced.report} == {
        "classical.flac": "unchanged", "metal.ogg": "unchanged", "a.wav": "unchanged", "b.wav": "unchanged",
        "c.wav": "unchanged", "d.mp3": "tagged"}


def test_merge_never_drops_a_genre_id3v23(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    # ID3v2.3 keeps one value: with two genres there already (joined with '/', as Picard writes
    # them) and no separator configured, --merge has no room and leaves the file as it is.
    from mutagen.id3 import ID3, TCON

    lib = make_lib(tmp_path / "lib", ["blues_v23_untagged.mp3"])
    path = lib / "blues_v23_untagged.mp3"
    tag = ID3()
    tag.add(TCON(encoding=3, text=["Polka/Ska"]))
    tag.save(path, v2_version=3)
    before = snapshot(lib)
    run = gtag_tag("--merge", path)
    assert run.report[0]["existing"] == ["Polka", "Ska"]
    assert run.report[0]["status"] == "unchanged" and snapshot(lib) == before


@pytest.mark.slow
def test_album_vote_with_worker_processes(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    root = make_lib(tmp_path / "lib", wavs={"a.wav": 4, "b.wav": 5, "c.wav": 3})
    one = gtag_tag("--album", "--dry-run", "--no-cache", root)
    two = gtag_tag("--album", "--dry-run", "--no-cache", "--jobs", "2", root)
    assert one.code == two.code == 0, two.stderr
    assert [r["album"] for r in one.report] == [r["album"] for r in two.report]
    assert {r["status"] for r in two.report} == {"would tag"}
    assert len({tuple(r["written"]) for r in two.report}) == 1


def test_album_report_csv(tmp_path: Path, tiny_models: Path) -> None:
    import csv

    from click.testing import CliRunner

    from gtag.cli import main

    root = make_lib(tmp_path / "lib", wavs={"a.wav": 4, "b.wav": 3})
    report = tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--jobs", "1", "--no-cache", "--album",
                                       "--dry-run", "--report", str(report), str(root)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 2 and rows[0]["album"] == rows[1]["album"] == f"folder {root}"
    assert rows[0]["album_genres"] == rows[0]["written"] == rows[1]["written"]


def test_options_with_a_config_pickle(tmp_path: Path) -> None:
    """Options cross process boundaries (worker pools, Ray): a config's policy must travel too."""
    import pickle

    from gtag.run.records import TagOptions

    cfg = load_config(_config(tmp_path, 'exclude = ["disco"]\n[names]\nhiphop = "Hip Hop"\n'))
    opts = pickle.loads(pickle.dumps(TagOptions(policy=cfg.policy, separator="; ")))
    assert opts.policy.name("hiphop") == "Hip Hop" and not opts.policy.allowed("disco")


@pytest.mark.parametrize("label, written", [("hiphop", "Hip-Hop"), ("rock", "Rock"), ("post rock", "Post Rock"),
                                            ("EDM", "EDM"), ("R&B", "R&B"), ("Alternative Rock", "Alternative Rock")])
def test_learned_labels_keep_their_own_capitals(label, written):
    assert GenrePolicy().name(label) == written
