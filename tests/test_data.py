from pathlib import Path

import pytest

from training.data import Track, check_disjoint, read_dataset

from .conftest import GTZAN, need


def _tree(root: Path, files: dict[str, list[str]], splits: dict[str, list[str]] | None = None) -> Path:
    for genre, names in files.items():
        (root / genre).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / genre / n).write_bytes(b"")
    for name, ids in (splits or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_reads_any_genre_per_folder_tree(tmp_path):
    root = _tree(tmp_path, {"rock": ["a.mp3", "b.flac", ".hidden.mp3", "cover.jpg"], "jazz": ["c.ogg"]},
                 {"train": ["a", "c"], "valid": ["b"]})
    ds = read_dataset(root)
    assert ds.labels == ("jazz", "rock")
    assert {t.track_id: t.split for t in ds.tracks} == {"a": "train", "b": "valid", "c": "train"}


def test_a_track_listed_in_two_splits_is_refused(tmp_path):
    root = _tree(tmp_path, {"rock": ["a.mp3"]}, {"train": ["a"], "valid": ["a"]})
    with pytest.raises(ValueError, match="both"):
        read_dataset(root)


def test_duplicate_ids_are_refused(tmp_path):
    root = _tree(tmp_path, {"rock": ["a.mp3"], "jazz": ["a.ogg"]})
    with pytest.raises(ValueError, match="unique"):
        read_dataset(root)


def test_check_disjoint():
    t = Track("x", Path("x.ogg"), "rock", "train")
    check_disjoint([t], [Track("y", Path("y.ogg"), "rock", "valid")])
    with pytest.raises(AssertionError, match="both sides"):
        check_disjoint([t], [t])


def test_shared_gtzan_splits_keep_tracks_apart():
    ds = read_dataset(need(GTZAN))
    train, valid = ds.split("train"), ds.split("valid")
    check_disjoint(train, valid)
    assert len(train) + len(valid) == len(ds.tracks)  # every file has a split
    assert len(ds.labels) == 10
    assert {t.variant for t in ds.tracks} >= {"original", "excerpt_2to3s_gainnorm"}
