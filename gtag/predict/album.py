"""`gtag tag --album`: which tracks form an album, and the album's vote.

Tracks that share album and album artist tags are one album wherever they lie; a track with an
album but no album artist is grouped with the same album in its own folder only (so that every
"Greatest Hits" of a library does not become one album); an untagged track's album is its folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gtag.predict.prediction import Prediction
from gtag.tags import formats, reading

__all__ = ["album_key", "album_vote", "group_albums"]


def album_key(path: Path, album: str | None, artist: str | None) -> str:
    """A readable key naming the album ``path`` belongs to (see the module docstring)."""
    folder = os.path.dirname(os.path.abspath(path))
    if album and artist:
        return f"{artist} — {album}"
    if album:
        return f"{album} (in {folder})"
    return f"folder {folder}"


def group_albums(paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
    """The albums of ``paths``, each with its tracks, in the order each album is first met.

    Tags compare without regard to case or surrounding spaces; a file whose tags cannot be read
    goes with its folder (it will fail with its own error line when it is processed).
    """
    groups: dict[str, tuple[str, list[Path]]] = {}
    for path in paths:
        try:
            album, artist = reading.read_album(path)
        except formats.TagError:
            album = artist = None
        key = album_key(path, album, artist)
        groups.setdefault(key.casefold(), (key, []))[1].append(path)
    return list(groups.values())


def album_vote(preds: Sequence[Prediction]) -> Prediction:
    """One prediction for a whole album: the mean of its tracks' probabilities (each model's too),
    so every track counts the same however long it is."""
    if not preds:
        raise ValueError("an album vote needs at least one track")
    labels = preds[0].labels
    if any(p.labels != labels for p in preds):
        raise ValueError("tracks predicted with different labels cannot vote together")
    models = {name: np.mean([p.models[name] for p in preds], axis=0)
              for name in preds[0].models if all(name in p.models for p in preds)}
    # An album is as unknown / as far from every genre as its tracks are on average.
    signals = {name: {k: float(np.mean([p.signals[name][k] for p in preds])) for k in preds[0].signals[name]
                      if all(k in p.signals.get(name, {}) for p in preds)}
               for name in preds[0].signals}
    # Its tags (what the taxonomy's node scorers read) are its tracks' mean tags.
    tags = {}
    for name in preds[0].tags:
        if all(name in p.tags for p in preds):
            mean = {t: float(np.mean([dict(p.tags[name]).get(t, 0.0) for p in preds])) for t, _ in preds[0].tags[name]}
            tags[name] = sorted(mean.items(), key=lambda kv: -kv[1])
    return Prediction(
        path=preds[0].path,
        labels=labels,
        probabilities=np.mean([p.probabilities for p in preds], axis=0),
        models=models,
        window_starts=np.zeros(0),
        window_genres=[],
        duration=float(sum(p.duration for p in preds)),
        truncated=any(p.truncated for p in preds),
        signals=signals,
        tags=tags,
    )
