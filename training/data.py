"""Dataset readers and the split rule: a track (clip) is the unit of every split, never a window."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gtag.audio.decode import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Track:
    """One audio file of a labelled dataset."""

    track_id: str  # unique id, e.g. "blues.00042"; windows are grouped by it
    path: Path  # audio file
    genre: str  # label
    split: str  # "train", "valid", "test" or "" when the dataset has no split lists
    variant: str = "original"  # GTZAN share: original / resampled_16k / first15s_44k_stereo / excerpt...


@dataclass(frozen=True)
class Dataset:
    """Tracks of a genre-per-folder tree with their splits."""

    root: Path
    tracks: tuple[Track, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({t.genre for t in self.tracks}))

    def split(self, name: str) -> list[Track]:
        return [t for t in self.tracks if t.split == name]

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per split and genre, for reports."""
        out: dict[str, dict[str, int]] = {}
        for t in self.tracks:
            out.setdefault(t.split or "all", Counter())[t.genre] += 1
        return {k: dict(sorted(v.items())) for k, v in out.items()}


def read_dataset(root: str | Path) -> Dataset:
    """Read a genre-per-folder tree (``root/<genre>/<file>``, or ``root/audio/<genre>/<file>``).

    Split lists ``splits/train.txt``, ``splits/valid.txt`` (and ``test.txt``), one track id (file
    stem) per line, assign splits; ``MANIFEST.tsv`` (GTZAN share) adds each file's variant. A track
    listed in two splits is an error: that is exactly the leak this project refuses.
    """
    root = Path(root).expanduser()
    audio_root = root / "audio" if (root / "audio").is_dir() else root
    if not audio_root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    split_of: dict[str, str] = {}
    for name in ("train", "valid", "test"):
        f = root / "splits" / f"{name}.txt"
        if not f.is_file():
            continue
        for line in f.read_text().split():
            if line in split_of and split_of[line] != name:
                raise ValueError(f"{line} is listed in both {split_of[line]} and {name}")
            split_of[line] = name
    variant_of: dict[str, str] = {}
    manifest = root / "MANIFEST.tsv"
    if manifest.is_file():
        with manifest.open(newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                variant_of[row["clip_id"]] = row.get("variant") or "original"
    tracks = []
    for genre_dir in sorted(p for p in audio_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(genre_dir.iterdir()):
            if f.suffix.lower() not in AUDIO_EXTENSIONS or f.name.startswith("."):
                continue
            tid = f.stem
            tracks.append(
                Track(tid, f, genre_dir.name, split_of.get(tid, ""), variant_of.get(tid, "original"))
            )
    if not tracks:
        raise ValueError(f"no audio files under {audio_root}/<genre>/")
    ids = [t.track_id for t in tracks]
    dup = [k for k, v in Counter(ids).items() if v > 1]
    if dup:
        raise ValueError(f"track ids must be unique; duplicated: {dup[:5]}")
    return Dataset(root, tuple(tracks))


def check_disjoint(*groups: list[Track]) -> None:
    """Raise if any track id appears in more than one group (train/valid/test)."""
    seen: dict[str, int] = {}
    for i, g in enumerate(groups):
        for t in g:
            if seen.setdefault(t.track_id, i) != i:
                raise AssertionError(f"track {t.track_id} is on both sides of a split")


def train_valid(root: str | Path) -> tuple[Dataset, list[Track], list[Track]]:
    """The dataset and its train and valid splits, checked disjoint: what every training command
    starts from. Raises ValueError when either split is missing or has no audio."""
    ds = read_dataset(root)
    train, valid = ds.split("train"), ds.split("valid")
    if not train or not valid:
        raise ValueError(f"{root}: needs splits/train.txt and splits/valid.txt with audio")
    check_disjoint(train, valid)
    return ds, train, valid
