"""Training and validation windows of in-memory tracks, for the neural trainers (``training.loop``).

Inputs are built with gtag's own code: the CNN's log-mel patches are slices of the same mel
spectrogram ``gtag.audio.features.analyze`` computes (``track_mel_power``, checked against it in the
tests) scaled by ``gtag.audio.features.log_mel_patches``; the WaveNet sees raw samples, tiled with
``gtag.audio.decode.fit_to_window`` when a clip is short, as ``gtag.audio.decode.frame_signal`` does. Validation
windows (``EvalSet``) are exactly the tag-time ones (hop 1.5 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tqdm import tqdm

from gtag.audio import decode as audio
from gtag.audio import dsp, features

from .data import Track

# The share's resampled_16k variant has nothing above 8 kHz; training windows are band-limited the
# same way at random so the models do not read "no treble" as a genre.
BAND_LIMIT_RATE = 16_000


class MelAugment(Protocol):
    """What ``MelWindows`` reads of the CNN's options (``training.loop.CnnOptions``)."""

    short_views: int  # rotations kept of a clip shorter than a window
    band_limit_p: float  # share of patches drawn from the band-limited copy
    mask_bands: int  # widest SpecAugment band mask (0: none)
    mask_frames: int  # widest SpecAugment time mask (0: none)
    tilt_p: float  # EqOptions' fields: mastering and codec EQ per patch
    tilt_db: float
    lowpass_p: float
    lowpass_hz: tuple[float, float]


@dataclass(frozen=True)
class EqOptions:
    """Mastering and codec EQ drawn per training window (issue 15: real libraries' masters are
    brighter or darker than GTZAN's recordings, and lossy codecs cut the top octave). Part of the
    CNN's options (applied per mel band) and the distilled net's (applied to the audio)."""

    tilt_p: float = 0.0  # share of windows given a random EQ tilt ...
    tilt_db: float = 3.0  # ... of up to +-tilt_db dB per octave around 1 kHz
    lowpass_p: float = 0.0  # share of windows low-passed as a codec does ...
    lowpass_hz: tuple[float, float] = (5_000.0, 10_000.0)  # ... at a random cutoff in this range


def draw_eq(o: EqOptions, rng: np.random.Generator) -> tuple[float, float | None]:
    """One window's random EQ under ``o``: (tilt in dB per octave, low-pass cutoff in Hz or None)."""
    tilt = rng.uniform(-o.tilt_db, o.tilt_db) if o.tilt_p and rng.random() < o.tilt_p else 0.0
    cutoff = rng.uniform(*o.lowpass_hz) if o.lowpass_p and rng.random() < o.lowpass_p else None
    return tilt, cutoff


def eq_gain(freqs: np.ndarray, tilt_db_per_octave: float, cutoff_hz: float | None) -> np.ndarray:
    """Amplitude gain at ``freqs`` (Hz) of a spectral tilt of ``tilt_db_per_octave`` around 1 kHz (a
    brighter or darker master) and, if ``cutoff_hz``, a codec-like low-pass with a 500 Hz
    raised-cosine edge."""
    f = np.asarray(freqs, dtype=np.float64)
    gain = 10.0 ** (tilt_db_per_octave * np.log2(np.maximum(f, 40.0) / 1000.0) / 20.0)
    if cutoff_hz is not None:
        edge = np.clip((f - cutoff_hz) / 500.0, 0.0, 1.0)
        gain = gain * 0.5 * (1.0 + np.cos(np.pi * edge))
    return gain


def mel_band_gain(tilt_db_per_octave: float, cutoff_hz: float | None) -> np.ndarray:
    """``eq_gain`` as a power gain per mel band of the CNN's spectrogram: each band's filter-weighted
    mean of the squared gain over its FFT bins (exact where the spectrum is flat within a band), so
    the EQ is applied to a stored mel spectrogram without recomputing it."""
    fb = dsp.mel_filterbank(audio.SAMPLE_RATE, features.N_FFT, features.N_MELS).astype(np.float64)
    g2 = eq_gain(np.fft.rfftfreq(features.N_FFT, 1.0 / audio.SAMPLE_RATE), tilt_db_per_octave, cutoff_hz) ** 2
    return (fb @ g2) / np.maximum(fb.sum(axis=1), 1e-12)


class WaveAugment(Protocol):
    """What ``WaveWindows`` reads of the WaveNet's options (``training.loop.WaveNetOptions``)."""

    band_limit_p: float
    gain_db: float  # random gain within +-gain_db


def decode(tracks: list[Track], desc: str) -> list[np.ndarray]:
    """Decode every track once (float32 mono at 22,050 Hz), with a progress bar."""
    return [audio.load_audio(t.path).samples for t in tqdm(tracks, desc=desc, unit="track")]


def band_limit(y: np.ndarray) -> np.ndarray:
    """What the resampled_16k variant went through: down to 16 kHz and back (nothing above 8 kHz)."""
    import soxr

    low = soxr.resample(y, audio.SAMPLE_RATE, BAND_LIMIT_RATE, quality="HQ")
    back = soxr.resample(low, BAND_LIMIT_RATE, audio.SAMPLE_RATE, quality="HQ").astype(np.float32)
    out = np.zeros_like(y)
    out[: min(y.size, back.size)] = back[: y.size]
    return out


def track_mel_power(y: np.ndarray) -> np.ndarray:
    """Mel power ``(N_MELS, frames)`` of a whole track, computed as ``gtag.audio.features.analyze`` does
    (tiled to a window if short, centred STFT, n_fft 2048, hop 512, librosa's mel filters, all by
    ``gtag.audio.dsp``), so ``log_mel_patches(mel[:, f:f + WINDOW_FRAMES])`` is the patch analyze gives a
    window at frame f."""
    y = np.ascontiguousarray(audio.fit_to_window(np.asarray(y, dtype=np.float32)))
    return dsp.mel_power(y, audio.SAMPLE_RATE, features.N_FFT, features.HOP_LENGTH, features.N_MELS).T


class WindowSource(Protocol):
    """Draws one augmented training input of a track: ``(1, ...)`` float32."""

    def draw(self, track: int, rng: np.random.Generator) -> np.ndarray: ...


class MelWindows:
    """Random log-mel patches of in-memory tracks (CNN input).

    Each track keeps its whole mel spectrogram (plain and band-limited), so a patch at any frame
    offset costs a slice and a log. A clip shorter than a window has one patch only; it keeps
    ``short_views`` rotations of the clip instead (tiled as gtag tiles it), i.e. time shifts.
    """

    def __init__(self, signals: list[np.ndarray], opts: MelAugment, rng: np.random.Generator):
        self.opts = opts
        self.views: list[dict[bool, list[np.ndarray]]] = []
        for y in tqdm(signals, desc="mel spectrograms", unit="track"):
            if y.size >= audio.WINDOW_SAMPLES:
                variants = [y]
            else:
                variants = [np.roll(y, int(rng.integers(y.size))) for _ in range(opts.short_views)]
            self.views.append({
                False: [track_mel_power(v) for v in variants],
                True: [track_mel_power(band_limit(v)) for v in variants],
            })

    def draw(self, track: int, rng: np.random.Generator) -> np.ndarray:
        views = self.views[track][bool(rng.random() < self.opts.band_limit_p)]
        mel = views[int(rng.integers(len(views)))]
        first = int(rng.integers(mel.shape[1] - features.WINDOW_FRAMES + 1))
        power = mel[:, first : first + features.WINDOW_FRAMES]
        tilt, cutoff = draw_eq(self.opts, rng)
        if tilt or cutoff is not None:  # real libraries' masters are brighter or darker than GTZAN's
            power = power * mel_band_gain(tilt, cutoff)[:, None].astype(np.float32)
        patch = features.log_mel_patches(power)
        if self.opts.mask_bands:  # SpecAugment masks, filled with the patch mean
            w = int(rng.integers(self.opts.mask_bands + 1))
            b = int(rng.integers(features.N_MELS - w + 1))
            patch[b : b + w, :] = patch.mean()
        if self.opts.mask_frames:
            w = int(rng.integers(self.opts.mask_frames + 1))
            f = int(rng.integers(features.WINDOW_FRAMES - w + 1))
            patch[:, f : f + w] = patch.mean()
        return patch[None]


class WaveWindows:
    """Random raw windows of in-memory tracks (WaveNet input), with random gain.

    Time shifts: a window starts at any sample of a full clip (the tag-time windows start every
    1.5 s); a clip shorter than a window is rotated at random, then tiled with
    ``gtag.audio.decode.fit_to_window`` as gtag tiles a short file.
    """

    def __init__(self, signals: list[np.ndarray], opts: WaveAugment):
        self.opts = opts
        self.signals = signals
        self.limited = [band_limit(y) for y in tqdm(signals, desc="band-limited copies", unit="track")]

    def draw(self, track: int, rng: np.random.Generator) -> np.ndarray:
        o = self.opts
        y = (self.limited if rng.random() < o.band_limit_p else self.signals)[track]
        n = audio.WINDOW_SAMPLES
        if y.size >= n:
            start = int(rng.integers(y.size - n + 1))
            x = y[start : start + n]
        else:
            x = audio.fit_to_window(np.roll(y, int(rng.integers(y.size))), n)
        gain = 10.0 ** (rng.uniform(-o.gain_db, o.gain_db) / 20.0)
        return (x * gain).astype(np.float32)[None]


@dataclass(frozen=True)
class EvalSet:
    """Held-out tracks with every tag-time window built exactly as gtag builds it."""

    inputs: list[np.ndarray]  # per track, (n_windows, 1, ...) float32
    y: np.ndarray  # (n_tracks,) label index

    @property
    def windows(self) -> int:
        return sum(len(x) for x in self.inputs)


def mel_eval_set(signals: list[np.ndarray], y: np.ndarray) -> EvalSet:
    """Log-mel batches as ``gtag.predict.pipeline.Predictor.analyse`` makes them (hop 1.5 s)."""
    inputs = [features.analyze(s, audio.SAMPLE_RATE, audio.HOP_SAMPLES, want_features=False).log_mel[:, None]
              for s in tqdm(signals, desc="valid log-mel", unit="track")]
    return EvalSet(inputs, y)


def wave_eval_set(signals: list[np.ndarray], y: np.ndarray) -> EvalSet:
    """Raw-window batches as ``gtag.predict.pipeline.Predictor.analyse`` makes them (hop 1.5 s)."""
    return EvalSet([audio.frame_signal(s, audio.WINDOW_SAMPLES, audio.HOP_SAMPLES)[:, None] for s in signals], y)
