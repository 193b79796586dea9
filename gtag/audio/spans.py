"""Long tracks on a bounded number of windows, spread evenly over the track.

musicnn costs ~6 ms per 3 s window on one core, three times what decoding those 3 s costs, so on a
3-minute track (60 windows) the model, not the decoder, is what a user waits for. A track's genre
is the mean of its windows' probabilities; on long tracks a few dozen windows spread over the
whole track give the same mean within a few hundredths (README, "Speed": measured agreement).

Rule (``capped_starts``): a kind's windows are the usual ones (``gtag.audio.decode.window_starts``); when a
track has more than ``max_windows`` of them, ``max_windows`` of them evenly spread from the first
to the last are analysed. Tracks with at most ``max_windows`` windows are analysed exactly as
without a cap. 0 means no cap.

Decoding (``read_spans``): when only the spread windows are analysed, only they (and a short
margin on each side) need decoding. libsndfile seeks sample-exactly (mp3 included), so each span
is decoded and resampled on its own, at sample offsets that keep it on the grid of a whole-file
decode: the windows' inputs are those of a whole-file decode up to float rounding. What libsndfile
cannot read (AAC and ALAC in .m4a, WMA, WavPack, APE) PyAV seeks by timestamp instead, a short
pre-roll before each span so the decoder has settled when the span starts: the windows then match
a whole-file decode to within a sample or two of 22,050 Hz and the resampler's phase.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gtag.audio import decode as audio

# Samples (22,050 Hz) decoded before and after each window: past soxr's filter and mel frames'
# reach, so the window's own samples come out as a whole-file decode gives them. A multiple of
# 441 (22,050 / 50), so a span's start maps to a whole sample at 16 kHz (x 320 / 441) too.
SPAN_MARGIN = 441 * 5  # 0.1 s
# Seconds decoded and dropped before each span PyAV seeks to: an AAC or WMA frame decoded right after
# a seek lacks its predecessor's overlap (one frame, ~23-46 ms), and must not land in the span.
AV_PREROLL_SECONDS = 0.2


def spread(n: int, k: int) -> np.ndarray:
    """Indices of ``k`` evenly spread rows out of ``n``, first and last included (all when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def capped_starts(n_samples: int, hop: int, max_windows: int = 0) -> np.ndarray:
    """Start samples of the windows analysed on a track of ``n_samples`` (22,050 Hz): every window
    (``gtag.audio.decode.window_starts``, a short track tiled to one), or ``max_windows`` spread ones."""
    starts = audio.window_starts(max(n_samples, audio.WINDOW_SAMPLES), audio.WINDOW_SAMPLES, hop)
    return starts[spread(len(starts), max_windows)] if max_windows else starts


@dataclass(frozen=True)
class Span:
    """Samples of a track (22,050 Hz mono) from sample ``start`` on."""

    start: int
    samples: np.ndarray


def spans_from_signal(y: np.ndarray, starts: np.ndarray, margin: int = SPAN_MARGIN) -> list[Span]:
    """The span of each window of a decoded track: the window with ``margin`` samples around it."""
    out = []
    for s in starts:
        a = max(0, int(s) - margin)
        out.append(Span(a, y[a:int(s) + audio.WINDOW_SAMPLES + margin]))
    return out


def declared_samples(path: str | os.PathLike) -> int | None:
    """The track's length at 22,050 Hz as its header declares it, when libsndfile reads the file,
    can seek in it and the length is declared; else None (the file is decoded whole). Costs a
    header read, no decoding. Any length: an hour-long mix is read on its spread windows too, not
    as the 600 s of blocks ``gtag.audio.decode.load_audio`` keeps of it."""
    import soundfile as sf

    try:
        with audio._quiet_native_stderr(), sf.SoundFile(str(path)) as f:
            if not (0 < f.frames < 2**40 and f.seekable() and 1000 <= f.samplerate <= audio.MAX_NATIVE_RATE
                    and 1 <= f.channels <= audio.MAX_CHANNELS):
                return None
            seconds = f.frames / f.samplerate
    except Exception:  # not for libsndfile: PyAV's container header, if it declares a duration
        return _declared_samples_av(path)
    return int(seconds * audio.SAMPLE_RATE)


def _declared_samples_av(path: str | os.PathLike) -> int | None:
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams or not container.duration:
                return None
            ctx = streams[0].codec_context
            if not (1000 <= (ctx.sample_rate or 0) <= audio.MAX_NATIVE_RATE
                    and 1 <= (ctx.channels or 0) <= audio.MAX_CHANNELS):
                return None
            seconds = container.duration / 1_000_000
    except Exception:  # whatever PyAV cannot open either, load_audio reports
        return None
    return int(seconds * audio.SAMPLE_RATE) if 0 < seconds < 2**40 / audio.MAX_NATIVE_RATE else None


def read_spans(path: str | os.PathLike, starts: np.ndarray, margin: int = SPAN_MARGIN) -> list[Span] | None:
    """Decode only the windows at ``starts`` (22,050 Hz samples), each with ``margin`` samples
    around it, seeking in the file: one Span per window. None when a window's samples are not all
    there (a header that overstated the length): the caller decodes the whole file instead."""
    import soundfile as sf

    try:
        with audio._quiet_native_stderr():
            f = sf.SoundFile(str(Path(path)))
    except Exception:  # not for libsndfile (AAC, ALAC, WMA...): PyAV seeks by timestamp
        return _read_spans_av(path, starts, margin)
    spans = []
    with audio._quiet_native_stderr(), f:
        native = f.samplerate
        for s in starts:
            a = max(0, int(s) - margin)
            b = int(s) + audio.WINDOW_SAMPLES + margin
            first = a * native // audio.SAMPLE_RATE  # exact for 44.1, 48, 32, 88.2, 96 kHz: a is a multiple of 441
            f.seek(first)
            mono = audio.downmix(f.read(-(-b * native // audio.SAMPLE_RATE) - first, dtype="float32", always_2d=True))
            y = audio._resample(mono, native, audio.SAMPLE_RATE)
            if y.size < int(s) - a + audio.WINDOW_SAMPLES:  # the file ends inside the window
                return None
            if not np.all(np.isfinite(y)):
                y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
            spans.append(Span(a, y))
    return spans


def _read_spans_av(path: str | os.PathLike, starts: np.ndarray, margin: int) -> list[Span] | None:
    """``read_spans`` through PyAV: seek to each span's time (less a pre-roll) and decode from it."""
    import av

    spans = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        # A whole-file decode counts samples from the first frame, whose timestamp need not be 0
        # (WMA's first frame says ~0.09 s): spans are placed on that count, not on the timestamps.
        origin = next((f.time for f in container.decode(stream)), None)
        if origin is None:
            return None
        for s in starts:
            a = max(0, int(s) - margin)
            n = int(s) + audio.WINDOW_SAMPLES + margin - a
            t0 = origin + a / audio.SAMPLE_RATE
            container.seek(int(max(0.0, t0 - AV_PREROLL_SECONDS) / stream.time_base), stream=stream,
                           backward=True, any_frame=False)
            chunks = audio._decode_av(container, stream, audio.SAMPLE_RATE, t0, n)
            y = np.concatenate(chunks)[:n] if chunks else np.zeros(0, np.float32)
            if y.size < int(s) - a + audio.WINDOW_SAMPLES:  # the file ends inside the window
                return None
            if not np.all(np.isfinite(y)):
                y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
            spans.append(Span(a, np.ascontiguousarray(y, np.float32)))
    return spans
