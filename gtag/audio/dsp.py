"""The STFT and mel filterbank of the spectrogram models, in plain numpy.

librosa computes the same thing, but importing ``librosa.feature`` pulls in scipy.signal, scipy.stats
and numba (about 3 s of a `gtag predict`, more than decoding a 3-minute mp3). These few lines give
librosa's results with its defaults (tested against librosa in tests/test_dsp.py):

- ``stft``: ``librosa.stft(y, n_fft, hop_length)``: periodic Hann window of ``n_fft`` samples, frames
  centred on ``k * hop`` with ``n_fft // 2`` zeros of padding at each end (librosa's ``center=True``,
  ``pad_mode="constant"``), one-sided FFT;
- ``mel_filterbank``: ``librosa.filters.mel(sr, n_fft, n_mels)``: Slaney's mel scale (linear below
  1 kHz, logarithmic above), triangles from 0 Hz to sr / 2, each scaled to unit area ("slaney" norm);
- ``mel_power``: ``librosa.feature.melspectrogram(y, sr, n_fft, hop_length, n_mels)``, i.e. the
  filterbank applied to ``|stft|**2``, computed in blocks of frames so memory stays small.

Only the order of floating-point sums differs from librosa (FFT and matrix products), a relative
difference of about 1e-6 in mel power.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Frames per block in ``mel_power``: ~4 MB of float32 frames at n_fft 512, ~16 MB at 2048.
BLOCK_FRAMES = 2048


@lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    """Periodic Hann window (scipy.signal.get_window("hann", n, fftbins=True), librosa's window)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float64)


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz (200/3 Hz per mel), then
# logarithmic with a step of ln(6.4) / 27 per mel.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa.hz_to_mel with htk=False): linear to 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of ``hz_to_mel`` (librosa.mel_to_hz with htk=False)."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 Slaney mel filterbank, as librosa.filters.mel(sr=sr,
    n_fft=n_fft, n_mels=n_mels) builds it (fmin 0, fmax sr / 2, norm "slaney"), step by step."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    weights.setflags(write=False)  # shared by every caller (lru_cache)
    return weights


def n_frames(n_samples: int, hop: int) -> int:
    """Frames of a centred STFT: one every ``hop`` samples, from sample 0 to the last."""
    return 1 + n_samples // hop


def _frames(y: np.ndarray, n_fft: int, hop: int, start: int, stop: int, origin: int = 0) -> np.ndarray:
    """Hann-windowed frames ``start..stop-1`` of the centred, zero-padded signal, (frames, n_fft)
    float64: the padding is built only for the frames that reach past either end. ``origin``: the
    sample of the whole signal that ``y`` starts at (frame k is centred on sample ``k * hop`` of the
    whole signal), for a part of a track."""
    pad = n_fft // 2
    lo = start * hop - pad - origin  # first sample of the first frame, in y's coordinates
    hi = (stop - 1) * hop - pad + n_fft - origin  # one past the last sample of the last frame
    if lo >= 0 and hi <= y.size:
        seg = y[lo:hi]
    else:
        seg = np.zeros(hi - lo, dtype=y.dtype)
        a, b = max(lo, 0), min(hi, y.size)
        if b > a:
            seg[a - lo : b - lo] = y[a:b]
    frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop]
    return frames * hann(n_fft)


def stft(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(1 + n_fft // 2, frames) complex64 STFT of float32 ``y``: librosa.stft(y, n_fft=n_fft,
    hop_length=hop) with its defaults (Hann window, centred frames, zero padding)."""
    y = np.asarray(y, dtype=np.float32)
    total = n_frames(y.size, hop)
    out = np.empty((1 + n_fft // 2, total), dtype=np.complex64)
    for s in range(0, total, BLOCK_FRAMES):
        e = min(total, s + BLOCK_FRAMES)
        out[:, s:e] = np.fft.rfft(_frames(y, n_fft, hop, s, e), axis=-1).T
    return out


def mel_power(y: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """(frames, n_mels) float32 mel power spectrogram of float32 ``y``, frames first:
    librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels).T."""
    return mel_power_frames(y, sr, n_fft, hop, n_mels, 0, n_frames(np.asarray(y).size, hop))


def mel_power_frames(y: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int, start: int, stop: int,
                     origin: int = 0) -> np.ndarray:
    """Frames ``start..stop-1`` of ``mel_power`` of a whole signal of which ``y`` holds the samples
    from ``origin`` on (zeros outside them, as the centred padding of the whole signal has)."""
    y = np.asarray(y, dtype=np.float32)
    basis_t = mel_filterbank(sr, n_fft, n_mels).T  # (bins, n_mels)
    out = np.empty((stop - start, n_mels), dtype=np.float32)
    for s in range(start, stop, BLOCK_FRAMES):
        e = min(stop, s + BLOCK_FRAMES)
        spec = np.fft.rfft(_frames(y, n_fft, hop, s, e, origin), axis=-1).astype(np.complex64)
        power = spec.real * spec.real + spec.imag * spec.imag
        np.matmul(power, basis_t, out=out[s - start:e - start])
    return out
