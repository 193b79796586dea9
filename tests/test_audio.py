import numpy as np
import pytest
import soundfile as sf

from gtag.audio import decode as audio
from gtag.audio.decode import SAMPLE_RATE, WINDOW_SAMPLES, AudioLoadError, load_audio

from .conftest import FIXTURES, need, write_wav


@pytest.mark.parametrize(
    "n, hop, expected",
    [
        (WINDOW_SAMPLES - 1, 100, []),  # shorter than a window: no full window
        (WINDOW_SAMPLES, 1000, [0]),  # exactly one
        (WINDOW_SAMPLES + 999, 1000, [0]),  # partial tail dropped
        (WINDOW_SAMPLES + 1000, 1000, [0, 1000]),
        (3 * WINDOW_SAMPLES, WINDOW_SAMPLES, [0, WINDOW_SAMPLES, 2 * WINDOW_SAMPLES]),
    ],
)
def test_window_starts(n, hop, expected):
    assert audio.window_starts(n, WINDOW_SAMPLES, hop).tolist() == expected


def test_short_clip_is_tiled_not_padded_with_silence():
    y = np.linspace(-1, 1, SAMPLE_RATE * 2, dtype=np.float32)  # 2 s
    out = audio.fit_to_window(y)
    assert out.size == WINDOW_SAMPLES
    assert np.array_equal(out[: y.size], y) and np.array_equal(out[y.size :], y[: WINDOW_SAMPLES - y.size])


def test_too_short_clip_is_refused_clearly():
    with pytest.raises(ValueError, match="too short"):
        audio.fit_to_window(np.zeros(SAMPLE_RATE // 2, np.float32))


def test_frame_signal_shape_and_content():
    y = np.arange(10 * SAMPLE_RATE, dtype=np.float32)
    frames = audio.frame_signal(y, WINDOW_SAMPLES, audio.HOP_SAMPLES)
    assert frames.shape == (len(audio.window_starts(y.size)), WINDOW_SAMPLES)
    assert frames[1, 0] == audio.HOP_SAMPLES and frames[-1, -1] < y.size


FORMAT_FILES = sorted(p.name for p in (FIXTURES / "formats").glob("*")) if (FIXTURES / "formats").is_dir() else []


@pytest.mark.parametrize("name", FORMAT_FILES)
def test_every_container_decodes_to_mono_22k(name):
    a = load_audio(need(FIXTURES / "formats" / name))
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.sample_rate == SAMPLE_RATE
    # the fixtures are 12-second excerpts
    assert abs(a.samples.size / SAMPLE_RATE - 12.0) < 0.2, a.samples.size / SAMPLE_RATE
    assert 0.01 < float(np.abs(a.samples).max()) <= 1.0


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty file"),
        (b"this is a text file, not audio\n" * 50, "unreadable or corrupt audio file"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x10" + b"\x00" * 300, "unreadable or corrupt audio file"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, content, match):
    p = tmp_path / "song.mp3"
    p.write_bytes(content)
    with pytest.raises(AudioLoadError, match=match) as info:
        load_audio(p)
    assert str(p) in str(info.value)


def test_truncated_file_fails_clearly_or_decodes_what_is_there(tmp_path):
    src = need(FIXTURES / "formats" / "classical.flac")
    p = tmp_path / "cut.flac"
    p.write_bytes(src.read_bytes()[:4000])
    try:
        a = load_audio(p)
    except AudioLoadError as exc:
        assert str(p) in str(exc)
    else:
        assert a.samples.size < 12 * SAMPLE_RATE


def test_resampling_and_downmix(tmp_path):
    import soundfile as sf

    t = np.arange(44_100 * 2) / 44_100
    left = 0.5 * np.sin(2 * np.pi * 220 * t)
    p = tmp_path / "stereo44k.wav"
    sf.write(str(p), np.stack([left, left], axis=1), 44_100)
    a = load_audio(p)
    assert a.samples.size == 2 * SAMPLE_RATE
    assert np.allclose(np.abs(a.samples[1000:-1000]).max(), 0.5, atol=0.01)


def test_long_file_is_analysed_in_bounded_blocks(tmp_path):
    y = (0.1 * np.random.default_rng(0).standard_normal(90 * SAMPLE_RATE)).astype(np.float32)
    p = write_wav(tmp_path / "long.wav", y)
    a = load_audio(p, max_seconds=60)
    assert a.truncated and a.duration == pytest.approx(90, abs=0.01)
    assert a.samples.size == 60 * SAMPLE_RATE


def test_av_backend_reads_what_libsndfile_cannot():
    a = load_audio(need(FIXTURES / "formats" / "jazz.m4a"))
    assert a.samples.size > 10 * SAMPLE_RATE


def _write_m4a(path, y: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """AAC in MP4 with PyAV's bundled FFmpeg (libsndfile cannot read it: the PyAV path decodes)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=sr, layout="mono")
        for i in range(0, len(y), 16384):
            frame = av.AudioFrame.from_ndarray(y[None, i:i + 16384].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)


@pytest.mark.parametrize("suffix", [".m4a", ".flac"])
def test_long_files_are_analysed_as_evenly_spread_blocks_by_either_backend(tmp_path, suffix):
    """A file longer than max_seconds contributes evenly spread 30 s blocks, first to last, whether
    libsndfile (flac) or PyAV (m4a, by seeking) decodes it."""
    sr = SAMPLE_RATE
    freqs = (220, 330, 440, 550, 660)  # one tone per 30 s: the tone tells where a block came from
    y = np.concatenate([0.3 * np.sin(2 * np.pi * f * np.arange(30 * sr) / sr) for f in freqs]).astype(np.float32)
    path = tmp_path / f"mix{suffix}"
    if suffix == ".m4a":
        _write_m4a(path, y)
    else:
        sf.write(str(path), y, sr)
    a = load_audio(path, max_seconds=120)
    assert a.truncated and a.duration == pytest.approx(150, abs=0.2)
    assert a.samples.size == 120 * sr
    # blocks start at 0, 40, 80 and 120 s: inside them (1 s in) the tones of 0-30, 30-60, 60-90, 120-150 s
    got = []
    for k in range(4):
        seg = a.samples[k * 30 * sr + sr: k * 30 * sr + 2 * sr]
        got.append(round(np.abs(np.fft.rfft(seg)).argmax() * sr / seg.size))
    assert got == [220, 330, 440, 660]
    # the block from 40 s turns from 330 to 440 Hz 20 s in: the seek lands where it should
    block = a.samples[30 * sr: 60 * sr]
    late, early = block[int(20.2 * sr): int(20.2 * sr) + 2048], block[int(19.8 * sr) - 2048: int(19.8 * sr)]
    assert round(np.abs(np.fft.rfft(early)).argmax() * sr / 2048) in (323, 334)  # 330 Hz at 10.8 Hz bins
    assert round(np.abs(np.fft.rfft(late)).argmax() * sr / 2048) in (431, 441)
