"""`gtag learn`: spellings merged, small genres dropped, a model learned from a library's own tags."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from gtag.learn.labels import LibraryTrack, label_tracks, normalise, read_map

from .conftest import SHARED, need

LIBRARY = SHARED / "library"


@pytest.mark.parametrize("spellings", [
    ("Hip Hop", "Hip-Hop", "hiphop", "HIP HOP"),
    ("R&B", "RnB", "R and B", "Rhythm & Blues"),
    ("Alt. Rock", "Alternative Rock", "alternative rock", "Alternative"),
    ("Drum & Bass", "Drum and Bass", "DnB", "drum'n'bass"),
    ("Electronica", "Electronic"),
    ("OST", "Soundtrack", "Soundtracks"),
    ("Rap", "Hip-Hop"),
])
def test_spellings_of_one_genre_share_a_key(spellings):
    assert len({normalise(s) for s in spellings}) == 1


def test_different_genres_keep_different_keys():
    assert len({normalise(s) for s in ("Rock", "Hard Rock", "Pop", "Indie Pop", "Electronic", "Electro Rock")}) == 6


def test_map_file_merges_and_drops(tmp_path):
    f = tmp_path / "map.txt"
    f.write_text("# mine\nElectro Rock = Electronic\nSoundtrack = -\n")
    m = read_map(f)
    assert m == {normalise("Electro Rock"): "Electronic", normalise("Soundtrack"): "-"}
    (tmp_path / "bad.txt").write_text("Electro Rock -> Electronic\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_map(tmp_path / "bad.txt")


def _t(genres, group="a"):
    return LibraryTrack(Path("x.mp3"), tuple(genres), group)


def test_labels_merge_spellings_keep_the_common_one_and_drop_small_genres():
    tracks = ([_t(["Alternative Rock"])] * 5 + [_t(["Alt. Rock"])] * 3 + [_t(["Classical", "Baroque"])] * 8
              + [_t(["Hard Rock"])] * 2 + [_t([])] * 4 + [_t(["Soundtrack"])] * 9)
    lab = label_tracks(tracks, min_tracks=8, user_map={normalise("Soundtrack"): "-"})
    assert lab.labels == ("Alternative Rock", "Classical")  # most tracks first; the first genre counts
    assert lab.merged == {"Alternative Rock": ["Alt. Rock"]}
    assert lab.dropped == {"Hard Rock": 2, "Soundtrack (mapped to -)": 9}
    assert lab.untagged == 4 and len(lab.tracks) == 16


def test_map_renames_a_genre():
    lab = label_tracks([_t(["Electro Rock"])] * 3 + [_t(["Electronic"])] * 3 + [_t(["Jazz"])] * 3, min_tracks=3,
                       user_map={normalise("Electro Rock"): "Electronic"})
    assert lab.labels == ("Electronic", "Jazz")
    assert sorted(lab.y.tolist()) == [0] * 6 + [1] * 3


@pytest.mark.parametrize("counts, labels, folded, dropped", [
    # rare styles of a kept genre teach that genre; a rare sibling style is dropped
    ({"Electronic": 8, "Electro": 2, "Ambient": 1, "Alternative Rock": 8, "Hard Rock": 2},
     ("Alternative Rock", "Electronic"), {"Electronic": ["Electro (2)", "Ambient (1)"]}, {"Hard Rock": 2}),
    # a style with enough tracks stays a label of its own, beside its genre
    ({"Electronic": 8, "Ambient": 8, "Jazz": 8}, ("Ambient", "Electronic", "Jazz"), {}, {}),
    # no kept ancestor: nothing folds
    ({"Jazz": 8, "Classical": 8, "Ambient": 3}, ("Classical", "Jazz"), {}, {"Ambient": 3}),
])
def test_a_rare_style_folds_into_its_genre_only_when_that_genre_is_a_label(counts, labels, folded, dropped):
    tracks = [_t([g]) for g, n in counts.items() for _ in range(n)]
    lab = label_tracks(tracks, min_tracks=8)
    assert lab.labels == labels and lab.folded == folded and lab.dropped == dropped
    taught = {g: int((lab.y == i).sum()) for i, g in enumerate(lab.labels)}
    assert sum(taught.values()) == sum(counts.values()) - sum(dropped.values())  # folded tracks are kept


@pytest.mark.parametrize("name, labels, outside", [
    ("Hard Rock", ("Alternative Rock", "Classical"), True),  # siblings under Rock
    ("Jazz", ("Classical", "Electronic"), True),
    ("Rock", ("Alternative Rock", "Classical"), False),  # a label's genre: it may be that style
    ("Ambient", ("Jazz", "Electronic"), False),  # a label's style
    ("Alternative", ("Alternative Rock", "Jazz"), False),  # the label itself, spelt otherwise
    ("Vaporwave", ("Alternative Rock", "Jazz"), False),  # unknown to the taxonomy: it may be anything
])
def test_a_dropped_genre_teaches_none_of_these_only_when_it_is_none_of_the_labels(name, labels, outside):
    from gtag.learn.labels import unrelated

    assert unrelated(name, labels) is outside


def test_the_library_s_own_none_of_these_are_the_tracks_of_unrelated_small_genres():
    tracks = ([_t(["Alternative Rock"])] * 8 + [_t(["Classical"])] * 8 + [_t(["Hard Rock"])] * 2
              + [_t(["Rock"])] + [_t(["Vaporwave"])] * 2 + [_t(["Jazz"])] * 3)
    lab = label_tracks(tracks, min_tracks=8, user_map={normalise("Jazz"): "-"})
    assert [t.genres for t in lab.outside] == [("Hard Rock",)] * 2  # not Rock, Vaporwave, nor a mapped-away genre
    assert lab.dropped == {"Hard Rock": 2, "Rock": 1, "Vaporwave": 2, "Jazz (mapped to -)": 3}


def test_a_map_to_minus_wins_over_folding_and_labels_know_their_place():
    from gtag.learn.labels import label_paths

    lab = label_tracks([_t(["Electronic"])] * 8 + [_t(["Ambient"])] * 2 + [_t(["Alt. Rock"])] * 8, min_tracks=8,
                       user_map={normalise("Ambient"): "-"})
    assert lab.folded == {} and lab.dropped == {"Ambient (mapped to -)": 2}
    assert label_paths(lab.labels + ("Vaporwave",)) == {
        "Alt. Rock": ["Rock", "Alternative Rock"], "Electronic": ["Electronic"], "Vaporwave": []}


def _strip_genre(path: Path) -> None:
    from mutagen.id3 import ID3

    tags = ID3(str(path))
    tags.delall("TCON")
    tags.save(str(path))


@pytest.mark.slow
def test_learn_from_two_thirds_then_tag_the_stripped_third(tmp_path, monkeypatch):
    """A user's session: learn from the tagged part of a library, then tag the untagged part with the
    learned model; the written genres agree with the tags that were stripped. Re-learning after
    adding files embeds only the new ones."""
    from click.testing import CliRunner

    from gtag.cli import main
    from gtag.tags.reading import read_genres

    music = need(LIBRARY / "music")
    monkeypatch.setenv("GTAG_CACHE", str(tmp_path / "cache.sqlite3"))
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "models"))
    lib, held = tmp_path / "lib", tmp_path / "held"
    truth = {}
    for folder in ("classical", "electronic", "rock"):
        files = sorted((music / folder).glob("*.mp3"))[:12]
        for i, f in enumerate(files):
            dst = (held if i % 3 == 0 else lib) / folder / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
            dst.chmod(0o644)
            if i % 3 == 0:
                truth[dst] = read_genres(dst)[0]
                _strip_genre(dst)
    # hold back two tracks per genre to add later
    later = tmp_path / "later"
    for folder in ("classical", "electronic", "rock"):
        for f in sorted((lib / folder).glob("*.mp3"))[:2]:
            (later / folder).mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), later / folder / f.name)
    runner = CliRunner()
    r = runner.invoke(main, ["learn", str(lib), "--name", "mine", "--min-tracks", "4", "--jobs", "2"])
    assert r.exit_code == 0, r.output
    first = re.search(r"embedded (\d+) new tracks; 0 came from the cache", r.output)
    assert first and int(first.group(1)) >= 16, r.output
    manifest = json.loads((tmp_path / "models" / "mine" / "manifest.json").read_text())
    entry = manifest["models"][0]
    assert {"balanced_accuracy", "per_genre", "confusion"} <= set(entry["metrics"]["cv_track"])
    assert entry["abstain"]["min_probability"] >= 0
    # "none of these": taught on the reference genres outside the library's, never its own
    outside = entry["training"]["none_of_these"]
    assert {"jazz", "blues"} <= set(outside["genres"]) and not {"rock", "classical"} & set(outside["genres"])
    assert 0 < entry["abstain"]["max_unknown"] < 1
    assert "(none of these)" not in entry["labels"] and "none of these: taught on" in r.output
    # `gtag models` lists it where --models finds it, with its genres and figures
    listed = json.loads(runner.invoke(main, ["models", "--json"]).stdout)
    [learned] = [c for c in listed["collections"] if c["source"] == "learned"]
    assert (learned["name"], learned["folder"]) == ("mine", str(tmp_path / "models" / "mine"))
    assert learned["models"][0]["labels"] == entry["labels"]
    assert learned["models"][0]["metrics"]["cv_accuracy"] == entry["metrics"]["cv_track"]["accuracy"]
    # learning again from the cache gives the very same model as the first run's fresh embeddings,
    # and embedding them afresh one file at a time the same figures (the first run used two threads)
    model = tmp_path / "models" / "mine" / entry["file"]
    first_sha = hashlib.sha256(model.read_bytes()).hexdigest()
    r = runner.invoke(main, ["learn", str(lib), "--name", "mine", "--min-tracks", "4"])
    assert r.exit_code == 0 and f"embedded 0 new tracks; {first.group(1)} came" in r.output, r.output
    assert hashlib.sha256(model.read_bytes()).hexdigest() == first_sha
    r = runner.invoke(main, ["learn", str(lib), "--name", "mine", "--min-tracks", "4", "--jobs", "1",
                             "--cache", str(tmp_path / "fresh.sqlite3")])
    assert r.exit_code == 0 and f"embedded {first.group(1)} new tracks; 0 came" in r.output, r.output
    again = json.loads((tmp_path / "models" / "mine" / "manifest.json").read_text())["models"][0]
    assert again["metrics"] == entry["metrics"] and again["abstain"] == entry["abstain"]
    for folder in ("classical", "electronic", "rock"):
        for f in (later / folder).glob("*.mp3"):
            shutil.move(str(f), lib / folder / f.name)
    r = runner.invoke(main, ["learn", str(lib), "--name", "mine", "--min-tracks", "4"])
    assert r.exit_code == 0, r.output
    assert re.search(rf"embedded [1-6] new tracks; {first.group(1)} came from the cache", r.output), r.output

    report = tmp_path / "r.json"
    r = runner.invoke(main, ["tag", "--models", "mine", "--min-confidence", "0", "--no-cache", "-j", "1",
                             "--report", str(report), str(held)])
    assert r.exit_code == 0, r.output
    written = {Path(d["path"]): d["written"] for d in json.loads(report.read_text())}
    right = sum(written[p] == [g] for p, g in truth.items())
    assert right >= 0.75 * len(truth), (written, truth)
    for p, g in truth.items():  # and it really is in the files now
        assert read_genres(p) == written[p]


def _learning_library(tmp_path: Path, monkeypatch, per_genre: int) -> Path:
    """``per_genre`` real classical and rock tracks copied to tmp_path/lib; gtag's cache and user
    models folder in tmp_path too."""
    music = need(LIBRARY / "music")
    lib = tmp_path / "lib"
    for folder in ("classical", "rock"):
        (lib / folder).mkdir(parents=True)
        for f in sorted((music / folder).glob("*.mp3"))[:per_genre]:
            shutil.copyfile(f, lib / folder / f.name)
    monkeypatch.setenv("GTAG_CACHE", str(tmp_path / "cache.sqlite3"))
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "models"))
    return lib


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_while_embedding_keeps_what_is_done_and_a_rerun_resumes(tmp_path, monkeypatch, jobs):
    import os
    import signal
    import time

    from click.testing import CliRunner

    from gtag.cli import main
    from gtag.learn.embed import Backbone

    lib = _learning_library(tmp_path, monkeypatch, 5)
    real, calls = Backbone.embed_file, []

    def ctrl_c_on_the_sixth(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C: the main thread stops
            time.sleep(0.5)
        return real(self, path, *a, **k)

    monkeypatch.setattr(Backbone, "embed_file", ctrl_c_on_the_sixth)
    args = ["learn", str(lib), "--name", "mine", "--min-tracks", "3", "--jobs", jobs]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130, r.output
    done = int(re.search(r"interrupted: (\d+) new embeddings are cached", r.output).group(1))
    assert 1 <= done < 10
    monkeypatch.setattr(Backbone, "embed_file", real)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"embedded {10 - done} new tracks; {done} came from the cache" in r.output


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_right_after_a_write_is_counted(tmp_path, monkeypatch, jobs):
    """The count `gtag learn` gives on Ctrl-C is what a re-run finds cached, wherever the Ctrl-C
    lands: here just after the third embedding was written, before anything counted it (a race the
    threaded run met at random)."""
    from click.testing import CliRunner

    from gtag.cli import main
    from gtag.run.cache import EmbeddingCache

    lib = _learning_library(tmp_path, monkeypatch, 3)
    real_put, puts = EmbeddingCache.put, []

    def put_then_ctrl_c(self, *a, **k):
        out = real_put(self, *a, **k)
        puts.append(1)
        if len(puts) == 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(EmbeddingCache, "put", put_then_ctrl_c)
    args = ["learn", str(lib), "--name", "mine", "--min-tracks", "2", "--jobs", jobs]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130, r.output
    assert "interrupted: 3 new embeddings are cached" in r.output
    monkeypatch.setattr(EmbeddingCache, "put", real_put)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "embedded 3 new tracks; 3 came from the cache" in r.output


def test_an_unusable_cache_is_one_line_and_exit_2(tmp_path):
    from click.testing import CliRunner

    from gtag.cli import main

    music = need(LIBRARY / "music")
    for folder in ("classical", "electronic"):
        for f in sorted((music / folder).glob("*.mp3"))[:2]:
            (tmp_path / "lib" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, tmp_path / "lib" / folder / f.name)
    bad = tmp_path / "cache.db"
    bad.write_text("not a database")
    r = CliRunner().invoke(main, ["learn", str(tmp_path / "lib"), "--min-tracks", "2", "--cache", str(bad),
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "cannot use the cache" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_learn_without_a_usable_reference_set_warns_or_stops_before_embedding(tmp_path, monkeypatch, damage):
    """No reference set: a warning, and the model is learned without "none of these". A damaged one:
    exit 3 in one line, before a single track is embedded, as a damaged model file."""
    from click.testing import CliRunner

    from gtag.cli import main
    from gtag.learn.embed import Backbone
    from gtag.learn.reference import REFERENCE_ARRAYS, REFERENCE_CARD

    from .conftest import shipped_models_copy

    lib = _learning_library(tmp_path, monkeypatch, 3)
    models = shipped_models_copy(tmp_path, lambda e: None)
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "learned"))
    if damage == "missing":
        (models / REFERENCE_CARD).unlink()
        (models / REFERENCE_ARRAYS).unlink()
    else:
        (models / REFERENCE_ARRAYS).write_bytes(b"damaged")
    embedded = []
    real = Backbone.embed_file
    monkeypatch.setattr(Backbone, "embed_file", lambda self, p, *a, **k: (embedded.append(p), real(self, p, *a, **k))[1])
    r = CliRunner().invoke(main, ["learn", str(lib), "--name", "mine", "--min-tracks", "3", "--models", str(models)])
    if damage == "missing":
        assert r.exit_code == 0, r.output
        assert "warning: no reference set in" in r.output and "may get one of them" in r.output
        entry = json.loads((tmp_path / "learned" / "mine" / "manifest.json").read_text())["models"][0]
        assert "max_unknown" not in entry["abstain"]
    else:
        assert r.exit_code == 3, r.output
        assert [ln for ln in r.output.splitlines() if ln.startswith("error:")] == [
            f"error: reference set {models / REFERENCE_CARD}: {REFERENCE_ARRAYS} is missing or does not match its card"]
        assert embedded == []
