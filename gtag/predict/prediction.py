"""One track's prediction (``Prediction``): the vote's genres and probabilities, each model's, the
MSD tags and the windows' genres; and its record in the prediction cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gtag.models import vote


@dataclass(frozen=True)
class Prediction:
    """What the models say about one track."""

    path: str  # the file, as given
    labels: tuple[str, ...]  # genre order of ``probabilities``
    probabilities: np.ndarray  # ensemble track probabilities
    models: dict[str, np.ndarray]  # model name -> its track probabilities (aligned to ``labels``)
    window_starts: np.ndarray  # seconds at which each analysed window starts
    window_genres: list[str]  # ensemble's top genre per window (genre over time)
    duration: float  # seconds of the whole file
    truncated: bool  # only part of a very long file was analysed
    # model name -> its tags (musicnn's MSD tags), best first: (tag, mean score over the windows);
    # only for models with a tag output. Cached; the taxonomy's node scorers read them (gtag.genres.hierarchy).
    tags: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # model name -> its track-level abstain signals ("unknown", "ood_distance"; gtag.models.runtime.SIGNAL_OUTPUTS)
    signals: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def genre(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    def top(self, k: int = 1) -> list[tuple[str, float]]:
        return vote.top_k(self.labels, self.probabilities, k)

    def to_json(self) -> dict:
        """The stable JSON shape of `gtag predict --json` (see README)."""
        return {
            "path": self.path,
            "genre": self.genre,
            "confidence": round(self.confidence, 6),
            "probabilities": _as_dict(self.labels, self.probabilities),
            "models": {n: {"probabilities": _as_dict(self.labels, p)} for n, p in self.models.items()},
        }


def prediction_from_cache(path: str, d: dict) -> Prediction:
    """Rebuild a Prediction from ``cache_record``'s output."""
    return Prediction(
        path=path,
        labels=tuple(d["labels"]),
        probabilities=np.asarray(d["probabilities"]),
        models={k: np.asarray(v) for k, v in d["models"].items()},
        window_starts=np.asarray(d["window_starts"]),
        window_genres=list(d["window_genres"]),
        duration=float(d["duration"]),
        truncated=bool(d["truncated"]),
        signals={k: dict(v) for k, v in d.get("signals", {}).items()},
        tags={k: [(str(t), float(x)) for t, x in v] for k, v in d.get("tags", {}).items()},
    )


def cache_record(p: Prediction) -> dict:
    """Everything of a Prediction except its path, as JSON-able values."""
    return {
        "labels": list(p.labels),
        "probabilities": p.probabilities.tolist(),
        "models": {k: v.tolist() for k, v in p.models.items()},
        "window_starts": p.window_starts.tolist(),
        "window_genres": p.window_genres,
        "duration": p.duration,
        "truncated": p.truncated,
        "signals": p.signals,
        "tags": {k: [[t, round(x, 6)] for t, x in v] for k, v in p.tags.items()},
    }


def _as_dict(labels, probs) -> dict[str, float]:
    return {lab: round(float(p), 6) for lab, p in zip(labels, probs)}
