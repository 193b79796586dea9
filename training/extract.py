"""Per-window feature extraction over a dataset, with a progress bar and an on-disk cache.

The cache key is the file's sha256 plus a version of the feature code, so a re-run over unchanged
audio loads every track instantly, and any change to the features invalidates it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gtag.audio import decode as audio
from gtag.audio import features

from .data import Track

# Bump when gtag.audio changes what it computes; old cache entries are then ignored.
FEATURE_CACHE_VERSION = "feat57-v1"


@dataclass(frozen=True)
class WindowTable:
    """Feature rows of many tracks, with the track each row belongs to."""

    X: np.ndarray  # (n_windows, 57) float32
    y: np.ndarray  # (n_windows,) int label index
    groups: np.ndarray  # (n_windows,) int track index into ``tracks``
    tracks: tuple[Track, ...]  # the tracks, in order
    labels: tuple[str, ...]  # genre of each label index


def _cache_path(cache_dir: Path, track: Track, hop: int) -> Path:
    h = hashlib.sha256()
    with open(track.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    key = f"{FEATURE_CACHE_VERSION}-{hop}-{h.hexdigest()[:32]}"
    return cache_dir / f"{key}.npy"


def _extract_one(args: tuple[Track, Path | None, int]) -> np.ndarray:
    track, cache_dir, hop = args
    cached = _cache_path(cache_dir, track, hop) if cache_dir else None
    if cached and cached.is_file():
        return np.load(cached, allow_pickle=False)
    decoded = audio.load_audio(track.path)
    X = features.window_features(decoded.samples, decoded.sample_rate, hop)
    if cached:
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, X, allow_pickle=False)
        os.replace(tmp, cached)
    return X


def extract(
    tracks: list[Track] | tuple[Track, ...],
    labels: tuple[str, ...],
    cache_dir: Path | None,
    hop: int = audio.HOP_SAMPLES,
    jobs: int = 0,
    desc: str = "features",
) -> WindowTable:
    """Features of every window of ``tracks`` (in parallel, cached)."""
    if cache_dir:
        cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    work = [(t, cache_dir, hop) for t in tracks]
    if jobs == 1:
        results = [_extract_one(w) for w in tqdm(work, desc=desc, unit="track")]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(tqdm(pool.map(_extract_one, work, chunksize=2), total=len(work), desc=desc, unit="track"))
    index = {g: i for i, g in enumerate(labels)}
    X = np.concatenate(results).astype(np.float32)
    y = np.concatenate([np.full(len(r), index[t.genre]) for r, t in zip(results, tracks)])
    groups = np.concatenate([np.full(len(r), i) for i, r in enumerate(results)])
    return WindowTable(X, y, groups, tuple(tracks), labels)
