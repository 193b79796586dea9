"""Features shared by tagging and training: the GTZAN 57-feature vector and the log-mel spectrogram.

``training`` imports this module too, so what a model was fitted on and what it sees at tag time
cannot drift apart.

Speed: the study called librosa once per 3-second window. Here a whole track is analysed once: one
complex STFT (n_fft 2048, hop 512, librosa's defaults, which every GTZAN feature uses) feeds chroma,
RMS, spectral shape, MFCCs, the onset envelope for tempo, harmonic/percussive separation and the mel
spectrogram; the frame-level values are then aggregated per window with cumulative sums. The meaning
of each feature is unchanged; only the frames at window edges see real neighbouring audio instead of
padding (checked against the per-window reference in the tests).

Import cost: the spectrogram models (CNN, musicnn) need only numpy (``gtag.audio.dsp``: librosa's STFT and
mel filterbank, tested against librosa); librosa, scipy and numba are imported inside the functions
of the 57 features, so a tag run that does not use rf or knn never loads them.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from gtag.audio import dsp
from gtag.audio.decode import HOP_SAMPLES, SAMPLE_RATE, WINDOW_SAMPLES, fit_to_window, window_starts
from gtag.audio.numba_cache import import_librosa  # never a bare `import librosa`: see gtag.audio.numba_cache

if TYPE_CHECKING:
    from gtag.audio.spans import Span


N_FFT = 2048  # librosa default, ~93 ms at 22,050 Hz; used by every GTZAN feature
HOP_LENGTH = 512  # librosa default, ~23 ms; 3 s = 129.2 frames
N_MFCC = 20  # the GTZAN table has mfcc1..mfcc20
N_MELS = 128  # mel bands of the CNN input (librosa's default mel count)
# Frames of one window: what librosa gives for a centred 3 s signal: 1 + 66150 // 512 = 130.
WINDOW_FRAMES = 1 + WINDOW_SAMPLES // HOP_LENGTH
HPSS_KERNEL = 31  # librosa.decompose.hpss default median-filter length
# Long tracks are analysed in blocks of whole windows of about this length (bounded memory); a
# frame at a block edge sees padding instead of its neighbour, as in the study's per-window code.
BLOCK_SECONDS = 60.0

# Column order of the Kaggle GTZAN tables (features_3_sec.csv / features_30_sec.csv), minus
# filename, length and label. Models are fitted on exactly this order; the manifest records it.
_BASE = [
    "chroma_stft",
    "rms",
    "spectral_centroid",
    "spectral_bandwidth",
    "rolloff",
    "zero_crossing_rate",
    "harmony",
    "perceptr",
]
FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"{b}_{s}" for b in _BASE for s in ("mean", "var")]
    + ["tempo"]
    + [f"mfcc{i}_{s}" for i in range(1, N_MFCC + 1) for s in ("mean", "var")]
)
assert len(FEATURE_NAMES) == 57


@dataclass(frozen=True)
class TrackAnalysis:
    """Everything the models need from one track, computed from one shared STFT."""

    starts: np.ndarray  # start sample of each window, shape (n,)
    features: np.ndarray | None  # (n, 57) float32 in FEATURE_NAMES order, or None if not asked
    log_mel: np.ndarray | None  # (n, N_MELS, WINDOW_FRAMES) float32, or None if not asked


_CACHE: dict = {}


def _cached(kind: str, sr: int) -> np.ndarray:
    """Constant matrices of the 57-feature path, built once per process."""
    key = (kind, sr)
    if key not in _CACHE:
        if kind == "freqs":  # == librosa.fft_frequencies
            _CACHE[key] = np.fft.rfftfreq(n=N_FFT, d=1.0 / sr).astype(np.float64)
        elif kind == "dct":
            import scipy.fft

            _CACHE[key] = scipy.fft.dct(np.eye(N_MELS), axis=0, type=2, norm="ortho")[:N_MFCC].astype(
                np.float32
            )
    return _CACHE[key]


def _window_stats(frames: np.ndarray, first: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance of ``frames[..., first[i]:first[i]+n]`` for every window i.

    Cumulative sums make this O(frames) whatever the overlap. Computed in float64 about the overall
    mean so the variance of large-valued features (centroid in Hz) stays exact.
    """
    x = np.asarray(frames, dtype=np.float64)
    shift = x.mean(axis=-1, keepdims=True)
    x = x - shift
    zero = np.zeros(x.shape[:-1] + (1,))
    c1 = np.concatenate([zero, np.cumsum(x, axis=-1)], axis=-1)
    c2 = np.concatenate([zero, np.cumsum(x * x, axis=-1)], axis=-1)
    s1 = c1[..., first + n] - c1[..., first]
    s2 = c2[..., first + n] - c2[..., first]
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    return mean + shift, var


def _median_filter_time(x: np.ndarray, k: int) -> np.ndarray:
    """Median over ``k`` frames along time, identical to scipy.ndimage.median_filter(size=(1, k),
    mode='reflect') but ~20x faster: a running sorted window (numba) instead of a fresh selection
    at every position. HPSS spends nearly all its time here."""
    return _running_median_rows(np.ascontiguousarray(x, dtype=np.float32), k)


def _median_filter_freq(x: np.ndarray, k: int) -> np.ndarray:
    """Median over ``k`` bins along frequency (scipy size=(k, 1), mode='reflect')."""
    return np.ascontiguousarray(_running_median_rows(np.ascontiguousarray(x.T, dtype=np.float32), k).T)


def _running_median_rows(x: np.ndarray, k: int) -> np.ndarray:
    return _numba_kernels()(x, k)


@lru_cache(maxsize=1)
def _numba_kernels():
    from numba import njit

    # No cache=True: numba's on-disk cache is not safe when several processes (gtag's worker pool,
    # a training run beside a tag run) compile the same function at once (numba#4807, #10128); we
    # saw a wrong median once that way. Compiling costs ~1.7 s once per process.
    @njit(nogil=True)
    def running_median_rows(x, k):  # pragma: no cover - compiled
        rows, n = x.shape
        half = k // 2
        out = np.empty_like(x)
        buf = np.empty(k, dtype=x.dtype)
        padded = np.empty(n + 2 * half, dtype=x.dtype)
        for r in range(rows):
            # scipy's 'reflect' mode: (d c b a | a b c d | d c b a), repeated for short rows.
            for j in range(n + 2 * half):
                i = j - half
                period = 2 * n
                i = i % period
                if i >= n:
                    i = period - 1 - i
                padded[j] = x[r, i]
            for j in range(k):
                buf[j] = padded[j]
            buf.sort()
            out[r, 0] = buf[half]
            for j in range(1, n):
                old = padded[j - 1]
                new = padded[j + k - 1]
                # Replace ``old`` by ``new`` and slide it into place: only the values between
                # the two move, and neighbouring STFT bins differ little, so that is few moves.
                pos = np.searchsorted(buf, old)
                if new >= old:
                    while pos + 1 < k and buf[pos + 1] < new:
                        buf[pos] = buf[pos + 1]
                        pos += 1
                else:
                    while pos > 0 and buf[pos - 1] > new:
                        buf[pos] = buf[pos - 1]
                        pos -= 1
                buf[pos] = new
                out[r, j] = buf[half]
        return out

    return running_median_rows


def _hpss_waveforms(D: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """librosa.effects.hpss on a precomputed STFT: soft masks (power 2, margin 1) and inverse STFT."""
    librosa = import_librosa()

    S = np.abs(D).astype(np.float32)
    H = _median_filter_time(S, HPSS_KERNEL)
    P = _median_filter_freq(S, HPSS_KERNEL)
    mask_h = librosa.util.softmask(H, P, power=2.0)
    mask_p = librosa.util.softmask(P, H, power=2.0)
    y_h = librosa.istft(D * mask_h, hop_length=HOP_LENGTH, n_fft=N_FFT, length=length)
    y_p = librosa.istft(D * mask_p, hop_length=HOP_LENGTH, n_fft=N_FFT, length=length)
    return y_h.astype(np.float32), y_p.astype(np.float32)


def analyze(
    y: np.ndarray,
    sr: int = SAMPLE_RATE,
    hop: int = HOP_SAMPLES,
    want_features: bool = True,
    want_mel: bool = True,
) -> TrackAnalysis:
    """Analyse a whole track once and return per-window features and/or log-mel patches.

    ``y`` is float32 mono at ``sr``. A track shorter than one window is tiled to one window first
    (see ``gtag.audio.decode.fit_to_window``); windows follow ``gtag.audio.decode.window_starts``. Long tracks
    are analysed in blocks of about ``BLOCK_SECONDS`` (whole windows each), so peak memory stays
    bounded: an STFT and its HPSS masks cost ~25 MB per minute of audio.
    """
    if sr != SAMPLE_RATE:
        raise ValueError(f"features expect {SAMPLE_RATE} Hz audio, got {sr}")
    y = np.ascontiguousarray(fit_to_window(np.asarray(y, dtype=np.float32)))
    starts = window_starts(y.size, WINDOW_SAMPLES, hop)
    per_block = max(1, (int(BLOCK_SECONDS * sr) - WINDOW_SAMPLES) // hop + 1)
    parts = []
    for b in range(0, len(starts), per_block):
        block = starts[b : b + per_block]
        # Start the block on a multiple of HOP_LENGTH so its STFT frames are the whole track's, and
        # give it N_FFT // 2 samples of real audio on each side where the track has them, so the
        # centred frames at its edges see what a whole-track STFT sees instead of reflect padding.
        s0 = max(0, int(block[0]) // HOP_LENGTH * HOP_LENGTH - N_FFT // 2)
        s1 = min(y.size, int(block[-1]) + WINDOW_SAMPLES + N_FFT // 2)
        parts.append(_analyze_block(y[s0:s1], block - s0, sr, want_features, want_mel))
    return TrackAnalysis(
        starts=starts,
        features=np.concatenate([p[0] for p in parts]) if want_features else None,
        log_mel=np.concatenate([p[1] for p in parts]) if want_mel else None,
    )


_WARM = {"started": False}


def _librosa_warmed():
    """librosa, with every numba kernel of the 57-feature path loaded (or compiled) once in this
    process while holding the cache's exclusive lock: a worker pool starting at once, two runs, or
    training beside tagging then never compile or load those kernels concurrently. Locking each of
    numba's saves and loads on its own was not enough once here: a first test run from an empty
    cache, beside other runs on a loaded machine, had workers crash (SIGSEGV) in the feature path
    (cause not pinned down; three later runs from empty caches were clean). Compiling a whole
    feature pass under one lock does not depend on how numba orders its files. Costs one small
    feature pass per process (~0.5 s once the cache is warm)."""
    from gtag.audio import numba_cache

    if _WARM["started"]:
        return import_librosa()
    _WARM["started"] = True  # set first: the warm-up pass below calls back in here
    y = (np.random.default_rng(0).standard_normal(int(4.5 * SAMPLE_RATE)) * 0.1).astype(np.float32)
    lock = numba_cache.cache_lock(exclusive=True) if numba_cache.prepare() == "shared" else contextlib.nullcontext()
    with lock:  # the import compiles librosa's eager kernels, the pass its lazy ones
        librosa = import_librosa()
        analyze(y, SAMPLE_RATE, HOP_SAMPLES, want_features=True, want_mel=False)
    return librosa


def _analyze_block(y: np.ndarray, starts: np.ndarray, sr: int, want_features: bool, want_mel: bool):
    """Features and log-mel of the windows of ``y`` that start at ``starts`` (samples into ``y``)."""
    # Frame k of a centred STFT is centred on sample k * HOP_LENGTH; window i covers the
    # WINDOW_FRAMES frames from the one nearest its start.
    first = np.minimum(np.round(starts / HOP_LENGTH).astype(np.int64), 1 + (y.size - WINDOW_SAMPLES) // HOP_LENGTH)
    n = WINDOW_FRAMES

    if want_features:
        D = dsp.stft(y, N_FFT, HOP_LENGTH)  # (1025, frames) complex64, == librosa.stft
        S = np.abs(D)
        power = S * S
        mel_power = dsp.mel_filterbank(sr, N_FFT, N_MELS) @ power  # (128, frames)
    else:  # the CNN alone: mel power straight from the frames, no STFT kept
        mel_power = dsp.mel_power(y, sr, N_FFT, HOP_LENGTH, N_MELS).T
    n_frames = mel_power.shape[1]
    first = np.minimum(first, n_frames - n)
    # Per-window mel patches, (n_windows, 128, 130): a strided view, no copy.
    idx = first[:, None] + np.arange(n)[None, :]
    mel_windows = mel_power[:, idx].transpose(1, 0, 2)

    log_mel = log_mel_patches(mel_windows) if want_mel else None

    feats = None
    if want_features:
        librosa = _librosa_warmed()  # the 57 features only: librosa's feature modules cost seconds to import

        freqs = _cached("freqs", sr)
        with warnings.catch_warnings():  # silence (digital silence) has no pitch: tuning 0 is right
            warnings.simplefilter("ignore", UserWarning)
            tuning = librosa.estimate_tuning(S=S, sr=sr, n_fft=N_FFT)
        chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=N_FFT, tuning=tuning)
        # librosa.feature.rms(y) frames the raw signal with no window; reproduce that exactly.
        padded = np.pad(y, N_FFT // 2, mode="constant")
        framed = librosa.util.frame(padded, frame_length=N_FFT, hop_length=HOP_LENGTH)[:, :n_frames]
        rms = np.sqrt(np.mean(framed.astype(np.float64) ** 2, axis=0))
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP_LENGTH)[0][:n_frames]
        centroid = librosa.feature.spectral_centroid(S=S, sr=sr, freq=freqs)[0]
        bandwidth = librosa.feature.spectral_bandwidth(S=S, sr=sr, freq=freqs)[0]
        rolloff = librosa.feature.spectral_rolloff(S=S, sr=sr, freq=freqs)[0]
        # librosa.power_to_db clips 80 dB below the peak of the signal it is given: per window, as
        # the study computed it, so quiet windows in a loud track keep their MFCCs.
        db = 10.0 * np.log10(np.maximum(mel_windows, 1e-10))
        db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80.0)
        mfcc = np.einsum("cm,wmt->wct", _cached("dct", sr), db)  # == librosa.feature.mfcc
        mean, var = _window_stats(np.vstack([rms, centroid, bandwidth, rolloff, zcr]), first, n)
        # chroma: mean/var over all 12 bins and all frames of the window, as np.mean(chroma) does.
        c_mean, c_var = _chroma_stats(chroma, first, n)
        m_mean, m_var = mfcc.mean(axis=2).T, mfcc.var(axis=2).T

        y_h, y_p = _hpss_waveforms(D, y.size)
        h_mean, h_var = _sample_window_stats(y_h, starts)
        p_mean, p_var = _sample_window_stats(y_p, starts)

        onset_env = librosa.onset.onset_strength(S=db, sr=sr)  # (n_windows, frames)
        tempo = np.asarray(
            librosa.feature.tempo(onset_envelope=onset_env, sr=sr, hop_length=HOP_LENGTH), dtype=np.float64
        ).reshape(-1)

        cols = [c_mean, c_var]
        for i in range(5):
            cols += [mean[i], var[i]]
        cols += [h_mean, h_var, p_mean, p_var, tempo]
        for i in range(N_MFCC):
            cols += [m_mean[i], m_var[i]]
        feats = np.stack(cols, axis=1).astype(np.float32)
    return feats, log_mel


def _chroma_stats(chroma: np.ndarray, first: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    mean_b, var_b = _window_stats(chroma, first, n)  # per bin, (12, n_windows)
    mean = mean_b.mean(axis=0)
    # Total variance over bins and frames = mean within-bin variance + variance of the bin means.
    var = var_b.mean(axis=0) + mean_b.var(axis=0)
    return mean, var


def _sample_window_stats(x: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, v = _window_stats(x[None, :], starts, WINDOW_SAMPLES)
    return m[0], v[0]


def log_mel_patches(mel_power: np.ndarray) -> np.ndarray:
    """CNN input from mel power patches ``(..., N_MELS, frames)``: dB relative to each patch's peak,
    floored 80 dB below it, scaled to [-1, 1] (so recording loudness does not become a genre cue)."""
    db = 10.0 * np.log10(np.maximum(mel_power, 1e-10))
    peak = db.max(axis=(-2, -1), keepdims=True)
    db = np.maximum(db, peak - 80.0)
    return ((db - peak) / 40.0 + 1.0).astype(np.float32)


def log_mel_spectrogram(y: np.ndarray, sr: int = SAMPLE_RATE, hop: int = HOP_SAMPLES) -> np.ndarray:
    """(n_windows, N_MELS, WINDOW_FRAMES) log-mel patches of a track: the CNN's input."""
    return analyze(y, sr, hop, want_features=False, want_mel=True).log_mel


def window_features(y: np.ndarray, sr: int = SAMPLE_RATE, hop: int = HOP_SAMPLES) -> np.ndarray:
    """(n_windows, 57) GTZAN features of a track, columns in ``FEATURE_NAMES`` order."""
    return analyze(y, sr, hop, want_features=True, want_mel=False).features


def reference_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The study-style computation: plain librosa calls on one signal (a window or a whole clip), as
    the Kaggle GTZAN tables were made. Slow; kept as the reference the fast path is tested against
    and as the baseline of the benchmark."""
    librosa = import_librosa()

    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    rms = librosa.feature.rms(y=y)
    cent = librosa.feature.spectral_centroid(y=y, sr=sr)
    bw = librosa.feature.spectral_bandwidth(y=y, sr=sr)
    roll = librosa.feature.spectral_rolloff(y=y, sr=sr)
    zcr = librosa.feature.zero_crossing_rate(y)
    harm, perc = librosa.effects.hpss(y)
    tempo = float(np.mean(librosa.feature.tempo(y=y, sr=sr)))
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC)
    vals: list[float] = []
    for a in (chroma, rms, cent, bw, roll, zcr, harm, perc):
        vals += [float(np.mean(a)), float(np.var(a))]
    vals.append(tempo)
    for row in mfcc:
        vals += [float(np.mean(row)), float(np.var(row))]
    return np.asarray(vals, dtype=np.float32)


def log_mel_span_patches(spans: list[Span], starts: np.ndarray, n_samples: int) -> np.ndarray:
    """CNN input patches ``(n, N_MELS, WINDOW_FRAMES)`` of the windows at ``starts`` of a track of
    ``n_samples`` (22,050 Hz, tiled to a window when shorter), each from its own ``gtag.audio.spans.Span``:
    what ``log_mel_spectrogram`` gives for windows at those starts, up to float rounding, from the
    audio another model's windows already decoded (the frames are the whole track's frame grid, and
    a window's first frame is the one nearest its start, clamped as ``analyze`` clamps it)."""
    n_samples = max(int(n_samples), WINDOW_SAMPLES)
    total_frames = 1 + n_samples // HOP_LENGTH
    first = np.round(np.asarray(starts) / HOP_LENGTH).astype(np.int64)
    first = np.minimum(first, 1 + (n_samples - WINDOW_SAMPLES) // HOP_LENGTH)
    first = np.minimum(first, total_frames - WINDOW_FRAMES)
    out = np.empty((len(starts), N_MELS, WINDOW_FRAMES), dtype=np.float32)
    for i, (span, f) in enumerate(zip(spans, first)):
        mel = dsp.mel_power_frames(span.samples, SAMPLE_RATE, N_FFT, HOP_LENGTH, N_MELS, int(f),
                                   int(f) + WINDOW_FRAMES, span.start)
        out[i] = mel.T
    return log_mel_patches(out)
