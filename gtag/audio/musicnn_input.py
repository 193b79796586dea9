"""musicnn's input, 16 kHz log-mel patches, computed exactly as musicnn's own extractor does
(librosa's mel power, here in numpy by gtag.audio.decode.dsp; float16 storage; log10(1 + 10000 x)).
``training`` imports this module too, so the pretrained backbone sees the same input in both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gtag.audio import dsp
from gtag.audio.decode import HOP_SAMPLES, SAMPLE_RATE, WINDOW_SAMPLES, fit_to_window, window_starts

if TYPE_CHECKING:
    from gtag.audio.spans import Span


# --- musicnn input: 16 kHz log-mel patches for the pretrained transfer model (training/musicnn.py) ---
# musicnn (Pons & Serra 2019) was trained on 3 s patches of this representation; it is computed
# exactly as musicnn's own extractor does (librosa's mel power, here in numpy by gtag.audio.dsp, float16
# storage, log10(1 + 10000 x)).
MUSICNN_SAMPLE_RATE = 16_000
MUSICNN_N_FFT = 512
MUSICNN_HOP = 256
MUSICNN_N_MELS = 96
MUSICNN_FRAMES = 187  # librosa.time_to_frames(3 s, sr=16000, n_fft=512, hop_length=256) + 1
# Every musicnn input value lies in [0, MUSICNN_LOG_MEL_MAX]: the mel power is >= 0 and is clipped to
# float16's largest value (as musicnn stores it) before log10(1 + 10000 x). Training relies on this bound
# to prove which of musicnn's filters can never fire (training.musicnn.dead_filters).
MUSICNN_LOG_MEL_MAX = float(np.log10(1.0 + 10000.0 * float(np.finfo(np.float16).max)))  # ~8.816


def musicnn_patches(y: np.ndarray, sr: int = SAMPLE_RATE, hop: int = HOP_SAMPLES) -> np.ndarray:
    """(n_windows, MUSICNN_FRAMES, MUSICNN_N_MELS) float32 musicnn input patches (time, mel) of a track.

    ``y`` is float32 mono at 22,050 Hz, as everywhere in gtag. The track is tiled to one window if
    shorter (``gtag.audio.decode.fit_to_window``), resampled to 16 kHz with soxr HQ (as ``gtag.audio.decode``
    resamples), and its mel power spectrogram computed once (``gtag.audio.dsp.mel_power``: librosa's
    melspectrogram with n_fft 512, hop 256, 96 bands, centred frames, in numpy); musicnn stores it as
    float16 (values clipped to float16's range), then ``log10(1 + 10000 x)``. Window i starts where
    gtag's window i starts (``gtag.audio.decode.window_starts`` at 22,050 Hz, hop ``hop``): at frame
    round(start / 22050 * 16000 / 256), so its votes line up with the other models' windows; it
    spans 187 frames (3 s).
    """
    import soxr

    if sr != SAMPLE_RATE:
        raise ValueError(f"musicnn_patches expects {SAMPLE_RATE} Hz audio, got {sr}")
    y = np.ascontiguousarray(fit_to_window(np.asarray(y, dtype=np.float32)))
    starts = window_starts(y.size, WINDOW_SAMPLES, hop)
    y16 = soxr.resample(y, SAMPLE_RATE, MUSICNN_SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    mel = dsp.mel_power(y16, MUSICNN_SAMPLE_RATE, MUSICNN_N_FFT, MUSICNN_HOP, MUSICNN_N_MELS)  # (frames, 96)
    log_mel = _musicnn_log(mel)  # (frames, 96)
    first = _musicnn_first_frames(starts)
    first = np.clip(first, 0, max(0, log_mel.shape[0] - MUSICNN_FRAMES))
    idx = first[:, None] + np.arange(MUSICNN_FRAMES)[None, :]
    return np.ascontiguousarray(log_mel[idx], dtype=np.float32)


def _musicnn_log(mel: np.ndarray) -> np.ndarray:
    """musicnn's compression of mel power: stored as float16 (clipped to its range), log10(1 + 10000 x)."""
    mel = round_to_float16(np.minimum(np.asarray(mel, dtype=np.float32), np.finfo(np.float16).max))
    return np.log10(10000.0 * mel + 1.0)


# float16 in float32 terms: 10 of float32's 23 mantissa bits, normal from 2**-14, subnormal steps of 2**-24.
_F16_DROPPED_BITS = 23 - 10
_F16_MIN_NORMAL = np.float32(2.0**-14)
_F16_SUBNORMAL_STEP = 2.0**-24


def round_to_float16(x: np.ndarray) -> np.ndarray:
    """``x.astype(float16).astype(float32)`` for float32 ``x`` with finite values of at most float16's
    largest (NaN stays NaN), bit for bit, in a few vectorised integer passes: numpy's float16 cast runs
    a scalar loop, ~15 ns a value, a fortieth of a track's time in gtag tag. Rounds to nearest, ties to
    even, as the cast does: the dropped mantissa bits of a normal float16, steps of 2**-24 below."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    keep = np.uint32(1) << np.uint32(_F16_DROPPED_BITS)
    # Add just under half a step, plus one where the kept lowest bit is odd (ties to even), then drop.
    half = (keep >> np.uint32(1)) - np.uint32(1) + ((bits >> np.uint32(_F16_DROPPED_BITS)) & np.uint32(1))
    normal = ((bits + half) & ~(keep - np.uint32(1))).view(np.float32)
    out = np.where(np.abs(x) < _F16_MIN_NORMAL,
                   np.rint(x * np.float32(1 / _F16_SUBNORMAL_STEP)) * np.float32(_F16_SUBNORMAL_STEP), normal)
    return np.where(np.isnan(x), x, out)


def _musicnn_first_frames(starts: np.ndarray) -> np.ndarray:
    """The 16 kHz mel frame at which each window (start sample at 22,050 Hz) begins."""
    return np.round(np.asarray(starts) * (MUSICNN_SAMPLE_RATE / SAMPLE_RATE) / MUSICNN_HOP).astype(np.int64)


def musicnn_span_patches(spans: list[Span], starts: np.ndarray) -> np.ndarray:
    """musicnn input patches of the windows at ``starts``, each from its own ``gtag.audio.spans.Span`` (the
    window and a margin around it, at 22,050 Hz): what ``musicnn_patches`` gives for those windows of
    the whole track, up to float rounding, without resampling or transforming the rest of it. Each
    span is resampled on its own; its first sample maps to 16 kHz sample ``start * 320 / 441``, and
    its mel frames are those of the whole track's frame grid (``gtag.audio.dsp.mel_power_frames``)."""
    import soxr

    out = np.empty((len(starts), MUSICNN_FRAMES, MUSICNN_N_MELS), dtype=np.float32)
    for i, (span, first) in enumerate(zip(spans, _musicnn_first_frames(starts))):
        y16 = soxr.resample(np.ascontiguousarray(span.samples, dtype=np.float32), SAMPLE_RATE,
                            MUSICNN_SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
        origin = int(round(span.start * MUSICNN_SAMPLE_RATE / SAMPLE_RATE))
        mel = dsp.mel_power_frames(y16, MUSICNN_SAMPLE_RATE, MUSICNN_N_FFT, MUSICNN_HOP, MUSICNN_N_MELS,
                                   int(first), int(first) + MUSICNN_FRAMES, origin)
        out[i] = _musicnn_log(mel)
    return out
