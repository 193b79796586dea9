"""From a file path to a prediction: decode once, analyse once, one batched ONNX call per model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio, features, vote
from .models import KIND_FEATURES, KIND_LOG_MEL, KIND_WAVEFORM, OnnxModel


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
    extra: dict = field(default_factory=dict)

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


def _as_dict(labels, probs) -> dict[str, float]:
    return {lab: round(float(p), 6) for lab, p in zip(labels, probs)}


class Predictor:
    """Keeps ONNX sessions alive across files and predicts one track at a time."""

    def __init__(self, models: list[OnnxModel], hop_seconds: float | None = None):
        if not models:
            raise ValueError("no models to predict with")
        rates = {m.spec.sample_rate for m in models}
        windows = {m.spec.window_seconds for m in models}
        if rates != {audio.SAMPLE_RATE} or windows != {audio.WINDOW_SECONDS}:
            raise ValueError(f"models expect {rates} Hz / {windows} s windows; gtag analyses "
                             f"{audio.SAMPLE_RATE} Hz / {audio.WINDOW_SECONDS} s")
        self.models = models
        self.hop = int(round((hop_seconds or models[0].spec.hop_seconds) * audio.SAMPLE_RATE))
        self.labels = {m.spec.name: m.spec.labels for m in models}
        self.weights = {m.spec.name: m.spec.weight for m in models}
        kinds = {m.spec.kind for m in models}
        self.want_features = KIND_FEATURES in kinds
        self.want_mel = KIND_LOG_MEL in kinds
        self.want_wave = KIND_WAVEFORM in kinds

    def analyse(self, decoded: audio.Audio) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Model inputs of one decoded track: window starts and a batch per kind."""
        an = features.analyze(decoded.samples, decoded.sample_rate, self.hop,
                              want_features=self.want_features, want_mel=self.want_mel)
        batches: dict[str, np.ndarray] = {}
        if self.want_features:
            batches[KIND_FEATURES] = an.features
        if self.want_mel:
            batches[KIND_LOG_MEL] = an.log_mel[:, None, :, :]
        if self.want_wave:
            frames = audio.frame_signal(decoded.samples, audio.WINDOW_SAMPLES, self.hop)
            batches[KIND_WAVEFORM] = np.ascontiguousarray(frames)[:, None, :]
        return an.starts, batches

    def infer(self, path: str | os.PathLike, decoded: audio.Audio, starts: np.ndarray,
              batches: dict[str, np.ndarray]) -> Prediction:
        """Run every model on its batch (one call each) and vote."""
        window_probs: dict[str, np.ndarray] = {}
        track: dict[str, np.ndarray] = {}
        for m in self.models:
            p = m.predict(batches[m.spec.kind])
            window_probs[m.spec.name] = p
            track[m.spec.name] = vote.track_probabilities(p)
        labels, probs = vote.combine(track, self.labels, self.weights)
        aligned = {n: vote.align(p, self.labels[n], labels) for n, p in track.items()}
        # Genre over time: the weighted ensemble of each window.
        w = np.array([self.weights[n] for n in window_probs])
        per_window = sum(wi * vote.align(window_probs[n], self.labels[n], labels)
                         for wi, n in zip(w, window_probs)) / w.sum()
        return Prediction(
            path=str(path),
            labels=labels,
            probabilities=probs,
            models=aligned,
            window_starts=starts / audio.SAMPLE_RATE,
            window_genres=[labels[i] for i in np.argmax(per_window, axis=1)],
            duration=decoded.duration,
            truncated=decoded.truncated,
        )

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """Decode, analyse and predict one file. Raises AudioLoadError / ValueError on bad input."""
        decoded = audio.load_audio(Path(path))
        starts, batches = self.analyse(decoded)
        return self.infer(path, decoded, starts, batches)
