import csv

import numpy as np
import pytest
from scipy.ndimage import median_filter

from gtag.audio import features, musicnn_input
from gtag.audio.decode import SAMPLE_RATE, WINDOW_SAMPLES, load_audio
from gtag.audio.features import FEATURE_NAMES, N_MELS, WINDOW_FRAMES

from .conftest import GTZAN, need


def test_feature_order_is_the_kaggle_gtzan_order():
    with open(need(GTZAN / "features_30_sec.csv")) as f:
        header = next(csv.reader(f))
    assert list(FEATURE_NAMES) == header[2:-1]  # minus filename, length ... label


def test_analysis_shapes(tone):
    an = features.analyze(tone)
    n = len(an.starts)
    assert n == 1 + (tone.size - WINDOW_SAMPLES) // features.HOP_SAMPLES
    assert an.features.shape == (n, 57) and an.features.dtype == np.float32
    assert an.log_mel.shape == (n, N_MELS, WINDOW_FRAMES)
    assert np.all(np.isfinite(an.features)) and np.all(np.isfinite(an.log_mel))
    # the log-mel patch is scaled to [-1, 1] relative to its own peak
    assert an.log_mel.max() == pytest.approx(1.0) and an.log_mel.min() >= -1.0 - 1e-6


def test_tone_features_mean_what_they_say():
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    f = dict(zip(FEATURE_NAMES, features.window_features(tone)[0]))
    assert f["spectral_centroid_mean"] == pytest.approx(440, rel=0.1)  # a 440 Hz tone
    assert f["zero_crossing_rate_mean"] == pytest.approx(2 * 440 / SAMPLE_RATE, rel=0.05)
    assert f["rms_mean"] == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    assert f["harmony_var"] > 10 * f["perceptr_var"]  # a steady tone is harmonic


def test_short_clip_gets_one_window():
    y = np.random.default_rng(1).standard_normal(int(1.5 * SAMPLE_RATE)).astype(np.float32) * 0.1
    assert features.window_features(y).shape == (1, 57)


def _reflect_median_rows(x: np.ndarray, k: int) -> np.ndarray:
    """Median over k along rows with scipy's 'reflect' extension (d c b a | a b c d | d c b a,
    repeated when k exceeds the row), by brute force."""
    n, half = x.shape[1], k // 2
    i = np.arange(-half, n + half) % (2 * n)
    padded = x[:, np.where(i >= n, 2 * n - 1 - i, i)]
    return np.stack([np.median(padded[:, j:j + k], axis=1) for j in range(n)], axis=1).astype(x.dtype)


@pytest.mark.parametrize("shape", [(40, 300), (5, 7), (3, 100)])
@pytest.mark.parametrize("k", [31, 5])
def test_fast_median_filters_equal_scipy(shape, k):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    assert np.array_equal(features._median_filter_time(x, k), _reflect_median_rows(x, k))
    assert np.array_equal(features._median_filter_freq(x, k), _reflect_median_rows(x.T, k).T)
    # scipy itself where the window fits the axis: its rank filter reads past short axes and is
    # not deterministic there (scipy#23075, #23293; seen here with 3 rows and k = 31).
    if shape[1] >= k:
        assert np.array_equal(features._median_filter_time(x, k), median_filter(x, size=(1, k), mode="reflect"))
    if shape[0] >= k:
        assert np.array_equal(features._median_filter_freq(x, k), median_filter(x, size=(k, 1), mode="reflect"))


@pytest.fixture(scope="module")
def clip():
    return load_audio(need(GTZAN / "audio" / "jazz" / "jazz.00015.ogg")).samples


def test_fast_features_match_the_per_window_reference(clip):
    """The whole-track pipeline must mean what the study's per-window librosa calls mean."""
    an = features.analyze(clip, want_mel=False)
    pick = [0, len(an.starts) // 2, len(an.starts) - 1]
    ref = np.stack([features.reference_features(clip[s : s + WINDOW_SAMPLES]) for s in an.starts[pick]])
    fast = an.features[pick]
    # scale of each feature across this clip's windows (and a floor for near-constant ones)
    scale = np.maximum(np.abs(ref).mean(0), 1e-9)
    rel = np.abs(fast - ref) / scale
    # Differences come only from frames at window edges, which see real neighbouring audio
    # instead of padding, and from tuning estimated once per track; harmony/perceptr means are ~0.
    loose = {FEATURE_NAMES.index(n) for n in ("harmony_mean", "perceptr_mean", "chroma_stft_var",
                                                "zero_crossing_rate_var", "tempo")}
    tight = [i for i in range(57) if i not in loose]
    assert np.median(rel[:, tight]) < 0.02
    assert rel[:, tight].max() < 0.25, FEATURE_NAMES[int(rel[:, tight].max(0).argmax())]


def test_reference_matches_the_kaggle_table_on_a_whole_clip(clip):
    """Our feature code reproduces the published GTZAN table (computed over the 30 s clip)."""
    with open(GTZAN / "features_30_sec.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["filename"] == "jazz.00015.wav")
    kaggle = np.array([float(row[n]) for n in FEATURE_NAMES])
    ours = features.reference_features(clip)
    near_zero = {FEATURE_NAMES.index(n) for n in ("harmony_mean", "perceptr_mean")}
    idx = [i for i in range(57) if i not in near_zero]
    rel = np.abs(ours[idx] - kaggle[idx]) / np.abs(kaggle[idx])
    # the shared audio is a ~90 kbps Ogg re-encode of the original WAV
    assert np.median(rel) < 0.01 and rel.max() < 0.1


def test_long_tracks_are_analysed_in_blocks_with_the_same_result(clip, monkeypatch):
    y = np.concatenate([clip] * 3)  # 90 s: two 60 s blocks
    blocked = features.analyze(y)
    monkeypatch.setattr(features, "BLOCK_SECONDS", 1e9)
    whole = features.analyze(y)
    assert np.array_equal(blocked.starts, whole.starts)
    scale = np.abs(whole.features).mean(0) + 1e-9
    assert np.median(np.abs(blocked.features - whole.features) / scale) < 0.005
    assert np.mean(np.abs(blocked.log_mel - whole.log_mel)) < 0.01  # only block-edge frames differ


def _float16_grid() -> np.ndarray:
    """Every finite float16 as float32, the float32s either side of each, and the exact midpoints
    between neighbours (the ties) with their float32 neighbours: where a rounding rule can slip."""
    h = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    h = np.unique(h[np.isfinite(h)])
    mids = ((h[:-1].astype(np.float64) + h[1:]) / 2).astype(np.float32)
    pts = np.concatenate([h, mids])
    return np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)), np.nextafter(pts, np.float32(-np.inf))])


@pytest.mark.parametrize("name, values", [
    ("float16 grid and ties", _float16_grid()),
    ("float32 bit patterns", np.arange(0, 2**32, 1009, dtype=np.uint64).astype(np.uint32).view(np.float32)),
    ("mel-like powers", (np.random.default_rng(0).random(200_000, dtype=np.float32) ** 8) * 3e4),
    ("signed zeros and the edges", np.array([0.0, -0.0, 2**-14, 2**-24, 2**-25, 3 * 2**-26, 65504.0, -65504.0],
                                            dtype=np.float32)),
])
def test_float16_rounding_is_numpys_cast_bit_for_bit(name, values):
    # musicnn's inputs pass through float16 (its stored mel): the fast rounding must not move one of them.
    x = values[np.isfinite(values) & (np.abs(values) <= np.finfo(np.float16).max)]
    want = x.astype(np.float16).astype(np.float32)
    got = musicnn_input.round_to_float16(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_float16_rounding_keeps_nan_and_the_array_shape():
    x = np.array([[np.nan, 1.0001], [2.0, np.float32(2**-20)]], dtype=np.float32)
    got = musicnn_input.round_to_float16(x)
    assert got.shape == (2, 2) and np.isnan(got[0, 0])
    assert np.array_equal(got[~np.isnan(got)], x[~np.isnan(x)].astype(np.float16).astype(np.float32))
