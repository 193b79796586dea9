"""Voting: from per-window probabilities of several models to one genre per track.

Rule (documented in the README): each model's window probabilities are averaged over the track's
windows (soft voting, which uses the models' confidence instead of discarding it as a majority count
would); the models' track probabilities are then averaged with the weights of their manifest entries
(chosen on validation by `gtag-train ensemble`); models picked with ``--model`` vote equally, and
a selection whose weights are all zero votes equally.
Models may list their labels in different orders: everything is aligned on the first model's labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np


def track_probabilities(window_probs: np.ndarray) -> np.ndarray:
    """Mean of ``(n_windows, n_labels)`` window probabilities, renormalised to sum to 1."""
    p = np.asarray(window_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError("need a (n_windows, n_labels) array with at least one window")
    mean = p.mean(axis=0)
    total = mean.sum()
    return mean / total if total > 0 else np.full_like(mean, 1.0 / mean.size)


def align(probs: np.ndarray, labels: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Reorder the last axis of ``probs`` from ``labels`` order to ``target`` order."""
    if list(labels) == list(target):
        return probs
    if sorted(labels) != sorted(target):
        raise ValueError(f"label sets differ: {sorted(labels)} vs {sorted(target)}")
    index = [list(labels).index(t) for t in target]
    return probs[..., index]


def nearest_windows(starts: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each window start in ``starts``, the index of the window of ``other`` (sorted starts,
    same window length) that starts nearest to it, the earlier on a tie. Lets models with different
    hops vote on one timeline: a 3 s-hop model's window covers the 1.5 s-hop windows around it."""
    starts, other = np.asarray(starts), np.asarray(other)
    if other.size == 0:
        raise ValueError("the other model has no windows")
    right = np.clip(np.searchsorted(other, starts, side="left"), 0, other.size - 1)
    left = np.clip(right - 1, 0, other.size - 1)
    take_left = np.abs(starts - other[left]) <= np.abs(other[right] - starts)
    return np.where(take_left, left, right)


def model_weights(names: Sequence[str], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Vote weights of ``names`` (missing: 1), normalised to sum to 1. Models picked by hand that
    the shipped ensemble leaves out (all weights zero) vote equally."""
    w = np.array([float((weights or {}).get(n, 1.0)) for n in names])
    if np.any(w < 0):
        raise ValueError("model weights must be non-negative")
    if w.sum() <= 0:
        w = np.ones_like(w)
    return w / w.sum()


def combine(
    per_model: Mapping[str, np.ndarray],
    labels: Mapping[str, Sequence[str]],
    weights: Mapping[str, float] | None = None,
) -> tuple[tuple[str, ...], np.ndarray]:
    """Weighted mean of each model's track probabilities; returns (labels, probabilities)."""
    if not per_model:
        raise ValueError("no model probabilities to combine")
    names = list(per_model)
    target = tuple(labels[names[0]])
    w = model_weights(names, weights)
    stacked = np.stack([align(np.asarray(per_model[n], np.float64), labels[n], target) for n in names])
    out = (w[:, None] * stacked).sum(axis=0) / w.sum()
    return target, out / out.sum()


def top_k(labels: Sequence[str], probs: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
    """The ``k`` most probable labels with their probabilities, best first (ties by label order)."""
    order = np.argsort(-np.asarray(probs), kind="stable")[: max(1, k)]
    return [(labels[i], float(probs[i])) for i in order]


@dataclass(frozen=True)
class AbstainRule:
    """When gtag writes no genre (a manifest entry's "abstain"; chosen on held-out tracks)."""

    model: str  # whose signals the rule reads
    min_probability: float = 0.0  # voted probability below this: not sure enough
    max_unknown: float | None = None  # reject-class share above this: none of the genres it knows
    max_distance: float | None = None  # distance to the nearest genre above this: unlike what it learned
    # A second opinion (manifest "second_opinion": {"model", "min_probability"}): a track below
    # ``min_probability`` is still written when this other model's top genre is the voted one and
    # the vote is at least ``second_min_probability``. Two models trained apart (different inputs,
    # different data) rarely make the same mistake, so agreement is evidence the vote alone lacks.
    second_model: str | None = None
    second_min_probability: float | None = None

    @classmethod
    def from_manifest(cls, model: str, d: Mapping) -> "AbstainRule":
        def num(m: Mapping, key: str) -> float | None:
            v = m.get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None

        second = d.get("second_opinion")
        second = second if isinstance(second, Mapping) else {}
        name = second.get("model") if isinstance(second.get("model"), str) and second.get("model") else None
        low = num(second, "min_probability") if name else None
        return cls(model, num(d, "min_probability") or 0.0, num(d, "max_unknown"), num(d, "max_distance"),
                   name if low is not None else None, low)

    def needs_second_opinion(self, confidence: float, signals: Mapping[str, float]) -> bool:
        """Whether the second model's answer could change the decision: the other checks pass and
        the vote lies between the two probability thresholds."""
        if self.second_model is None or self.second_min_probability is None:
            return False
        return (self.second_min_probability <= confidence < self.min_probability
                and abstain_reason(confidence, signals, replace(self, min_probability=0.0)) is None)


def abstain_reason(confidence: float, signals: Mapping[str, float], rule: AbstainRule,
                   second_genre: str | None = None, genre: str | None = None) -> str | None:
    """Why a track should get no genre under ``rule`` (None: write it). ``signals``: the rule's
    model's track-level "unknown" and "ood_distance" (either may be missing); ``second_genre``: the
    top genre of the rule's second-opinion model, when it was asked; ``genre``: the voted genre."""
    unknown = signals.get("unknown")
    if rule.max_unknown is not None and unknown is not None and unknown > rule.max_unknown:
        return f"sounds like none of its genres ({unknown:.0%})"
    distance = signals.get("ood_distance")
    if rule.max_distance is not None and distance is not None and distance > rule.max_distance:
        return "unlike the music it learned from"
    if confidence < rule.min_probability:
        agrees = second_genre is not None and second_genre == genre
        if agrees and rule.second_min_probability is not None and confidence >= rule.second_min_probability:
            return None
        if agrees:
            return f"below the {rule.second_min_probability:.0%} it needs even with {rule.second_model} agreeing"
        if second_genre is not None:
            return (f"below the {rule.min_probability:.0%} it needs to be right 9 times in 10, "
                    f"and {rule.second_model} hears {second_genre}")
        return f"below the {rule.min_probability:.0%} it needs to be right 9 times in 10"
    return None
