"""Audio decoding and windowing: the one place that turns a file into model-ready samples.

Every constant the models depend on lives here, with its derivation, so training and tagging can
never disagree about what "a 3-second window" means.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# GTZAN is 22,050 Hz mono; every shipped model is trained at this rate.
SAMPLE_RATE = 22_050
# The study (and the Kaggle 3-second table) classifies 3-second windows.
WINDOW_SECONDS = 3.0
WINDOW_SAMPLES = int(SAMPLE_RATE * WINDOW_SECONDS)  # 66,150 samples
# Default hop between window starts at tag time: 50 % overlap doubles the votes per track for
# the cost of one extra window each 3 s, which the shared STFT makes cheap. A model's manifest entry
# may set its own ("hop_seconds"): musicnn, whose windows cost far more, uses 3 s.
HOP_SECONDS = 1.5
HOP_SAMPLES = int(SAMPLE_RATE * HOP_SECONDS)  # 33,075 samples
# Tracks shorter than this are refused: below one second there is no genre to hear, and a
# tiled second already repeats the same beat three times.
MIN_SECONDS = 1.0
# A very long track (a DJ mix, an audiobook) is analysed on at most this many seconds, taken as
# evenly spaced blocks, so memory and time stay bounded; see ``load_audio``.
MAX_ANALYSED_SECONDS = 600.0

AUDIO_EXTENSIONS = frozenset(
    ".mp3 .flac .ogg .oga .opus .m4a .m4b .mp4 .aac .alac .wav .wave .aif .aiff .aifc .wma "
    ".ape .wv .mpc .mp+ .ofr .ofs .tak .spx .au .snd .dsf .webm .mka".split()
)


class AudioLoadError(Exception):
    """A file could not be decoded by any backend; the message names the file and each reason."""


class SilentAudio(AudioLoadError):
    """The decoded audio is silence or near-silence: there is no genre to hear."""


# Below this RMS level (-60 dBFS) over the analysed samples a track is silence or the hiss of an
# empty recording; any model would still name a genre for it, with confidence it has not earned.
SILENCE_RMS = 10 ** (-60 / 20)


def is_silent(y: np.ndarray, threshold: float = SILENCE_RMS) -> bool:
    """Whether ``y`` is silence or near-silence (RMS under ``threshold``)."""
    if y.size == 0:
        return True
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < threshold


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 mono samples at ``sample_rate`` and what was left out."""

    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int  # always SAMPLE_RATE unless the caller asked otherwise
    duration: float  # seconds of the whole file (may exceed the analysed samples)
    truncated: bool  # True when only part of a very long file was decoded


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence messages that C decoders print straight to fd 2 (libmpg123's "Note: Illegal
    Audio-MPEG-Header..." on a bad mp3): gtag reports one clear line per failed file instead."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture, IDEs)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _reason(exc: Exception) -> str:
    """A backend's error without its noise (errno numbers, the path repeated, libsndfile's guess
    that an unknown format might be a pipe)."""
    msg = str(exc).strip() or type(exc).__name__
    msg = re.sub(r"^Error opening '.*?': ", "", msg)
    msg = re.sub(r"^\[Errno -?\d+\] ", "", msg)
    msg = re.sub(r": '[^']*'$", "", msg)
    msg = msg.replace("File does not exist or is not a regular file (possibly a pipe?).", "format not recognised")
    return msg.rstrip(".")


def _load_soundfile(path: Path, sr: int, max_seconds: float | None) -> tuple[np.ndarray, float]:
    import soundfile as sf

    with _quiet_native_stderr(), sf.SoundFile(str(path)) as f:
        native = f.samplerate
        if not 1000 <= native <= MAX_NATIVE_RATE or not 1 <= f.channels <= MAX_CHANNELS:
            # What a damaged header says; believing it would size every buffer below by it.
            raise ValueError(f"{native} Hz, {f.channels} channels: not a plausible audio stream")
        # libsndfile says SF_COUNT_MAX (or 0) when the header does not declare the length, as a
        # FLAC written to a pipe does: such a file is read by blocks, whatever it turns out to hold.
        declared = 0 < f.frames < 2**40
        total = f.frames / native if declared else 0.0
        if declared and (max_seconds is None or (total <= max_seconds and f.frames * f.channels <= _ONE_READ)):
            # One read of at most the declared length (libsndfile never reads past it).
            mono = _mono(f.read(dtype="float32", always_2d=True))
        elif declared and max_seconds is not None and total > max_seconds and f.seekable():
            mono = _read_spread_sf(f, native, total, max_seconds)
        else:
            spread = _Spread(native, max_seconds)
            while not spread.full:
                try:
                    data = f.read(_READ_FRAMES, dtype="float32", always_2d=True)
                except sf.LibsndfileError:
                    # At the end of a stream of undeclared length soundfile's bookkeeping seek
                    # fails ("psf_fseek() failed"): what was read is the stream.
                    if not spread.seen:
                        raise
                    break
                if not len(data):
                    break
                spread.add(_mono(data))
            mono = spread.samples()
            total = max(total, spread.seen / native)
    return _resample(mono, native, sr), total


def downmix(data: np.ndarray) -> np.ndarray:
    """Mono float32 from ``(frames, channels)``: the channels' mean, bit for bit what
    ``data.mean(axis=1, dtype=np.float32)`` gives, but ~15x faster (numpy reduces a short
    interleaved axis one frame at a time; here each channel is one vectorised add). From 8
    channels numpy sums in another order, so it is left to numpy."""
    if data.shape[1] == 1:
        return data[:, 0]
    if data.shape[1] >= 8:
        return data.mean(axis=1, dtype=np.float32)
    mono = data[:, 0] + data[:, 1]
    for c in range(2, data.shape[1]):
        mono += data[:, c]
    mono /= np.float32(data.shape[1])
    return mono


def _mono(data: np.ndarray) -> np.ndarray:
    return downmix(data)


# Bounds on what a header may claim: rates up to DXD's 384 kHz, up to 64 channels (3rd-order
# Ambisonics needs 16). A file read in one piece holds at most 600 s of 48 kHz stereo (230 MB);
# anything bigger is read by blocks and mixed to mono as it comes.
MAX_NATIVE_RATE = 384_000
MAX_CHANNELS = 64
_ONE_READ = int(MAX_ANALYSED_SECONDS * 48_000 * 2)
_READ_FRAMES = 1 << 14  # frames per read when a file is read sequentially (the last may be lost, below)
# A file read sequentially (its length undeclared, or not seekable) is decoded up to this many
# seconds and no further, so even a stream that never ends costs a bounded time.
MAX_DECODED_SECONDS = 6 * 3600.0


class _Spread:
    """Evenly spread blocks of a stream whose length is not known in advance, in bounded memory.

    Blocks of ``SPREAD_BLOCK_SECONDS`` are kept every ``stride`` blocks; when more than
    ``max_seconds`` worth are kept, every other one is dropped and the stride doubles. A stream of
    up to ``max_seconds`` is kept whole; a longer one ends as between half and all of
    ``max_seconds`` in blocks spread evenly over it, and memory never holds more than that.
    ``max_seconds`` None keeps everything (training reads whole 30 s clips).
    """

    def __init__(self, rate: int, max_seconds: float | None):
        self.limit = None if max_seconds is None else int(max_seconds * rate)
        self.block = int(min(SPREAD_BLOCK_SECONDS, max_seconds or SPREAD_BLOCK_SECONDS) * rate)
        self.max_blocks = None if max_seconds is None else max(1, int(max_seconds * rate) // self.block)
        self.cap = None if max_seconds is None else int(MAX_DECODED_SECONDS * rate)
        self.kept: list[np.ndarray] = []
        self.part: list[np.ndarray] = []
        self.part_n = 0
        self.index = 0  # block being filled
        self.stride = 1
        self.seen = 0  # samples received

    @property
    def full(self) -> bool:
        """Whether the hard cap on samples read is reached (the caller stops reading)."""
        return self.cap is not None and self.seen >= self.cap

    def add(self, chunk: np.ndarray) -> None:
        self.seen += chunk.size
        if self.max_blocks is None:
            self.part.append(chunk)
            return
        while chunk.size:
            take = min(self.block - self.part_n, chunk.size)
            if self.index % self.stride == 0:
                self.part.append(chunk[:take])  # each chunk is a fresh array: a view is enough
            self.part_n += take
            chunk = chunk[take:]
            if self.part_n == self.block:
                if self.index % self.stride == 0:
                    self.kept.append(np.concatenate(self.part, dtype=np.float32))
                    if len(self.kept) > self.max_blocks:
                        self.kept = self.kept[::2]
                        self.stride *= 2
                self.part, self.part_n = [], 0
                self.index += 1

    def samples(self) -> np.ndarray:
        parts = self.kept + self.part
        if len(parts) == 1:
            return parts[0][: self.limit]
        y = np.concatenate(parts, dtype=np.float32) if parts else np.zeros(0, np.float32)
        return y if self.limit is None else y[: self.limit]


SPREAD_BLOCK_SECONDS = 30.0  # a long file is analysed as evenly spaced blocks of this length


def _spread_starts(total: float, max_seconds: float) -> np.ndarray:
    """Start times (s) of the evenly spaced blocks that stand for a file longer than ``max_seconds``:
    the first at 0, the last ending at the end of the file."""
    n_blocks = max(1, int(max_seconds // SPREAD_BLOCK_SECONDS))
    return np.linspace(0, max(0.0, total - SPREAD_BLOCK_SECONDS), n_blocks)


def _read_spread_sf(f, native: int, total: float, max_seconds: float) -> np.ndarray:
    """Read ``max_seconds`` of a long file as evenly spaced 30 s blocks, in mono (bounded memory)."""
    parts = []
    for s in _spread_starts(total, max_seconds):
        f.seek(int(s * native))
        parts.append(_mono(f.read(int(SPREAD_BLOCK_SECONDS * native), dtype="float32", always_2d=True)))
    return np.concatenate(parts)


def _decode_av(container, stream, sr: int, start: float | None, limit: int | None) -> list[np.ndarray]:
    """Mono float32 chunks at ``sr`` from ``stream``: from ``start`` seconds (after a seek; frames
    before it are dropped) or from where the container is, until ``limit`` samples (None: the end)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
    chunks: list[np.ndarray] = []
    got = 0
    for frame in container.decode(stream):
        if start is not None and got == 0:
            if frame.time is None:  # (later frames may lack one: WMA's last, flushed at the end)
                raise ValueError("frames without timestamps: cannot decode from a position")
            if frame.time + frame.samples / frame.sample_rate <= start:
                continue  # a seek lands on the packet at or before the target
        for out in resampler.resample(frame):
            arr = out.to_ndarray().reshape(-1)
            if start is not None and got == 0 and frame.time < start:
                arr = arr[int((start - frame.time) * sr):]  # the part of the first frame before start
            chunks.append(arr)
            got += arr.size
        if limit is not None and got >= limit:
            break
    else:
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return chunks


def _load_av(path: Path, sr: int, max_seconds: float | None) -> tuple[np.ndarray, float]:
    import av

    with av.open(str(path)) as container:
        streams = container.streams.audio
        if not streams:
            raise ValueError("no audio stream")
        stream = streams[0]
        total = float(container.duration / 1_000_000) if container.duration else 0.0
        if max_seconds is not None and total > max_seconds:
            # Evenly spread blocks, as for soundfile: seek to each block (to the packet at or
            # before it) and decode 30 s. A container that cannot seek gets its first max_seconds.
            block = int(SPREAD_BLOCK_SECONDS * sr)
            parts = []
            try:
                for s in _spread_starts(total, max_seconds):
                    container.seek(int(s / stream.time_base), stream=stream, backward=True, any_frame=False)
                    y = np.concatenate(_decode_av(container, stream, sr, float(s), block) or [np.zeros(0, np.float32)])
                    parts.append(y[:block])
            except (av.FFmpegError, OSError, ValueError):
                container.seek(0)
                parts = [np.concatenate(_decode_av(container, stream, sr, None, int(max_seconds * sr)))]
            y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            return y[: int(max_seconds * sr)].astype(np.float32, copy=False), total
        # Length undeclared (a .mka written to a pipe) or within bounds: decode by blocks, keeping
        # evenly spread ones, so neither a missing nor a lying duration makes memory grow.
        spread = _Spread(sr, max_seconds)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                spread.add(out.to_ndarray().reshape(-1))
            if spread.full:
                break
        else:
            for out in resampler.resample(None):
                spread.add(out.to_ndarray().reshape(-1))
    if not spread.seen:
        raise ValueError("no audio frames decoded")
    return spread.samples(), max(total, spread.seen / sr)


def _resample(y: np.ndarray, native: int, sr: int) -> np.ndarray:
    if native == sr:
        return np.ascontiguousarray(y, dtype=np.float32)
    import soxr  # installed with librosa; the fastest high-quality resampler available

    return soxr.resample(y, native, sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    sr: int = SAMPLE_RATE,
    max_seconds: float | None = MAX_ANALYSED_SECONDS,
) -> Audio:
    """Decode ``path`` to float32 mono at ``sr`` Hz.

    libsndfile (soundfile) is tried first because it is fast and exact; PyAV (FFmpeg) covers what it
    cannot read (AAC, ALAC, WMA, APE...). If both fail, one ``AudioLoadError`` names the file and each
    backend's reason. Files longer than ``max_seconds`` are decoded as evenly spread 30 s blocks
    (``max_seconds`` in all), and ``Audio.truncated`` says so.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AudioLoadError(f"{p}: no such file") from None
    except OSError as exc:
        raise AudioLoadError(f"{p}: cannot read ({_reason(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        # Never opened: a FIFO would block and /dev/zero behind an audio name would never end.
        raise AudioLoadError(f"{p}: not a regular file, not read")
    if st.st_size == 0:
        raise AudioLoadError(f"{p}: empty file")
    if not os.access(p, os.R_OK):
        raise AudioLoadError(f"{p}: permission denied")
    errors = []
    for name, loader in (("soundfile", _load_soundfile), ("pyav", _load_av)):
        try:
            y, total = loader(p, sr, max_seconds)
        except Exception as exc:  # each backend raises its own types; collect them all
            errors.append(f"{name}: {_reason(exc)}")
            continue
        if y.size == 0:
            errors.append(f"{name}: no samples")
            continue
        if not np.all(np.isfinite(y)):
            y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        return Audio(y, sr, float(total), truncated=y.size / sr + 1.0 < total)
    # The words the tag reader uses for a file it cannot open (gtag.run.messages): one failure, one phrase.
    raise AudioLoadError(f"{p}: unreadable or corrupt audio file ({'; '.join(errors)})")


def window_starts(n_samples: int, window: int = WINDOW_SAMPLES, hop: int = HOP_SAMPLES) -> np.ndarray:
    """Start sample of every full window that fits in ``n_samples``.

    Rule: windows start at 0 and every ``hop`` samples; a partial tail shorter than a window is
    dropped (it is covered by the overlapping window before it when hop < window). A signal shorter
    than one window yields no start; ``frame_signal`` handles it by tiling.
    """
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def fit_to_window(y: np.ndarray, window: int = WINDOW_SAMPLES, min_samples: int | None = None) -> np.ndarray:
    """Make a signal at least one window long by tiling it (a short clip loops, it is not padded with
    silence that no model saw in training). Raises ``ValueError`` under ``min_samples``."""
    if min_samples is None:
        min_samples = int(MIN_SECONDS * SAMPLE_RATE)
    if y.size < min_samples:
        raise ValueError(
            f"too short to classify: {y.size / SAMPLE_RATE:.2f} s < {min_samples / SAMPLE_RATE:.1f} s"
        )
    if y.size >= window:
        return y
    reps = math.ceil(window / y.size)
    return np.tile(y, reps)[:window]


def frame_signal(y: np.ndarray, window: int = WINDOW_SAMPLES, hop: int = HOP_SAMPLES) -> np.ndarray:
    """Stack the windows of ``y`` into a ``(n_windows, window)`` view (no copy)."""
    y = fit_to_window(y, window)
    starts = window_starts(y.size, window, hop)
    return np.lib.stride_tricks.as_strided(
        y, shape=(starts.size, window), strides=(y.strides[0] * hop, y.strides[0]), writeable=False
    )
