"""--max-windows: short tracks analysed whole, long ones on exactly N spread windows, decoded by seeking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gtag.audio import decode as audio
from gtag.audio import features, musicnn_input, spans
from gtag.audio.decode import SAMPLE_RATE, WINDOW_SAMPLES
from gtag.models.runtime import KIND_LOG_MEL, KIND_MUSICNN, load_models, sha256_file
from gtag.predict.pipeline import Predictor, analyse_file

from .conftest import GENRES, SHARED, _linear_model, need

MUSICNN_HOP = 3 * SAMPLE_RATE  # the shipped musicnn's hop


def music(seconds: float, sr: int = SAMPLE_RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Notes that change every half second over noise: every window differs from the others."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freq = 110 * 2 ** (rng.integers(0, 36, int(seconds * 2) + 1)[(t * 2).astype(int)] / 12)
    y = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / sr) + 0.02 * rng.standard_normal(t.size)
    y = y.astype(np.float32)
    return np.stack([y, 0.8 * y], axis=1) if channels == 2 else y


def write(path: Path, y: np.ndarray, sr: int) -> Path:
    import soundfile as sf

    sf.write(str(path), y, sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def musicnn():
    """The shipped musicnn (its CPU variant), the default vote."""
    return load_models(None, ["musicnn"], device="cpu", threads=1)


def test_spread_keeps_short_grids_whole_and_picks_n_from_first_to_last():
    assert list(spans.spread(5, 20)) == [0, 1, 2, 3, 4]
    picked = spans.spread(60, 20)
    assert len(picked) == 20 and picked[0] == 0 and picked[-1] == 59 and np.all(np.diff(picked) > 0)
    assert np.diff(picked).max() - np.diff(picked).min() <= 1  # evenly spread
    from gtag.learn.embed import spread

    assert list(spread(60, 16)) == list(spans.spread(60, 16))  # learn's cache and tag pick alike


def test_capped_starts_rule():
    n = 180 * SAMPLE_RATE
    every = audio.window_starts(n, WINDOW_SAMPLES, MUSICNN_HOP)
    assert len(every) == 60
    assert np.array_equal(spans.capped_starts(n, MUSICNN_HOP, 0), every)  # 0: all
    capped = spans.capped_starts(n, MUSICNN_HOP, 20)
    assert len(capped) == 20 and set(capped) <= set(every) and capped[0] == 0 and capped[-1] == every[-1]
    one_minute = int(60.2 * SAMPLE_RATE)  # the real library's excerpts: 20 windows, all kept
    assert np.array_equal(spans.capped_starts(one_minute, MUSICNN_HOP, 20),
                          audio.window_starts(one_minute, WINDOW_SAMPLES, MUSICNN_HOP))
    assert len(spans.capped_starts(SAMPLE_RATE, MUSICNN_HOP, 20)) == 1  # a 1 s clip is tiled to one window


def test_span_patches_are_the_whole_track_patches_of_those_windows():
    y = music(75)
    every = musicnn_input.musicnn_patches(y, SAMPLE_RATE, MUSICNN_HOP)
    starts = audio.window_starts(y.size, WINDOW_SAMPLES, MUSICNN_HOP)
    rows = spans.spread(len(starts), 7)
    got = musicnn_input.musicnn_span_patches(spans.spans_from_signal(y, starts[rows]), starts[rows])
    # float rounding may flip a float16 step of the stored mel: ~4e-4 in log10 (musicnn's own format)
    assert np.abs(got - every[rows]).max() < 1e-3
    assert np.mean(got == every[rows]) > 0.99


@pytest.mark.parametrize("sr,fmt", [(44100, "flac"), (48000, "wav")])
def test_read_spans_decodes_what_a_whole_decode_gives(tmp_path, sr, fmt):
    path = write(tmp_path / f"long.{fmt}", music(95, sr, channels=2), sr)
    y = audio.load_audio(path).samples
    n = spans.declared_samples(path)
    assert abs(n - y.size) <= 2
    starts = spans.capped_starts(n, MUSICNN_HOP, 10)
    parts = spans.read_spans(path, starts)
    assert [p.start for p in parts] == [max(0, int(s) - spans.SPAN_MARGIN) for s in starts]
    for s, p in zip(starts, parts):  # the window itself, sample for sample (up to soxr's rounding)
        a = int(s) - p.start
        assert np.abs(p.samples[a:a + WINDOW_SAMPLES] - y[s:s + WINDOW_SAMPLES]).max() < 1e-4


@pytest.mark.parametrize("codec,ext", [("aac", "m4a"), ("alac", "m4a"), ("wmav2", "wma"), ("wavpack", "wv")])
def test_files_libsndfile_cannot_read_are_decoded_on_their_spread_windows_only(tmp_path, musicnn, monkeypatch,
                                                                               codec, ext):
    """AAC, ALAC, WMA, WavPack: PyAV seeks to each spread window instead of decoding the whole
    track, and the windows' predictions are those of a whole-file decode."""
    pytest.importorskip("av")
    from benchmarks.bench_containers import encode

    path = encode(tmp_path / f"long.{ext}", music(95, 44100, channels=2, seed=5), codec, 44100)
    whole = audio.load_audio(path).samples
    n = spans.declared_samples(path)
    assert n is not None and abs(n - whole.size) < 0.05 * SAMPLE_RATE
    starts = spans.capped_starts(n, MUSICNN_HOP, 10)
    parts = spans.read_spans(path, starts)
    assert parts is not None and [p.start for p in parts] == [max(0, int(s) - spans.SPAN_MARGIN) for s in starts]
    # every window's patch as a whole-file decode gives it: a sample or two apart at most (WMA's
    # millisecond timestamps: up to ~20 samples; a misplaced window differs by ~0.2 per value)
    got = musicnn_input.musicnn_span_patches(parts, starts)
    ref = musicnn_input.musicnn_span_patches(spans.spans_from_signal(whole, starts), starts)
    assert np.median(np.abs(got - ref)) < 0.02 and np.abs(got - ref).mean() < 0.05
    # a window 50 ms from the end: its span's margin runs to the end of the file (where WMA's last,
    # flushed frame has no timestamp)
    last = np.array([whole.size - WINDOW_SAMPLES - SAMPLE_RATE // 20])
    tail = spans.read_spans(path, last)
    assert tail is not None
    near_end = musicnn_input.musicnn_span_patches(spans.spans_from_signal(whole, last), last)
    assert np.abs(musicnn_input.musicnn_span_patches(tail, last) - near_end).mean() < 0.05
    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: pytest.fail("decoded the whole file"))
    pred = Predictor(musicnn, max_windows=10).predict_file(path)
    assert len(pred.window_starts) == 10 and not pred.truncated and abs(pred.duration - 95) < 0.1
    probs = musicnn[0].predict(ref)
    assert np.abs(pred.models["musicnn"] - probs.mean(axis=0) / probs.mean(axis=0).sum()).max() < 0.02


def test_short_track_is_analysed_whole_as_without_a_cap(tmp_path, musicnn):
    path = write(tmp_path / "minute.flac", music(62, 44100, channels=2), 44100)
    whole = Predictor(musicnn).predict_file(path)
    capped = Predictor(musicnn, max_windows=20).predict_file(path)
    assert len(whole.window_starts) == 20
    assert np.array_equal(capped.window_starts, whole.window_starts)
    assert np.array_equal(capped.probabilities, whole.probabilities)
    assert capped.signals == whole.signals


def test_real_one_minute_track_is_unchanged_by_the_default_cap(musicnn):
    """The shared library's one-minute mp3s keep every window under the default cap."""
    from gtag.config import DEFAULT_MAX_WINDOWS

    clip = sorted(need(SHARED / "library" / "music" / "rock").glob("*.mp3"))[0]
    whole = Predictor(musicnn).predict_file(clip)
    capped = Predictor(musicnn, max_windows=DEFAULT_MAX_WINDOWS).predict_file(clip)
    assert len(whole.window_starts) <= DEFAULT_MAX_WINDOWS
    assert np.array_equal(capped.probabilities, whole.probabilities) and capped.signals == whole.signals


def test_long_track_on_exactly_n_spread_windows(tmp_path, musicnn):
    path = write(tmp_path / "long.flac", music(150, 44100, channels=2, seed=1), 44100)
    full = Predictor(musicnn)
    every = analyse_file(path, full.config)
    assert len(every.starts[KIND_MUSICNN]) == 50  # 0 = all: windows at 0, 3, ..., 147 s
    capped = Predictor(musicnn, max_windows=12)
    pred = capped.predict_file(path)
    rows = spans.spread(50, 12)
    assert np.allclose(pred.window_starts * SAMPLE_RATE, every.starts[KIND_MUSICNN][rows])
    assert abs(pred.duration - 150) < 0.01 and not pred.truncated
    # the windows' own predictions, as a whole-file analysis gives them for those windows
    probs = musicnn[0].predict(every.batches[KIND_MUSICNN][rows])
    assert np.abs(pred.models["musicnn"] - probs.mean(axis=0) / probs.mean(axis=0).sum()).max() < 1e-3
    assert capped.signature != full.signature and capped.source.max_windows == 12


def test_hour_long_file_is_read_on_its_spread_windows_to_the_end(tmp_path, musicnn):
    """Past gtag.audio.decode.MAX_ANALYSED_SECONDS (600 s, which a whole decode keeps as 30 s blocks) the
    spread windows still reach the end of the file."""
    import soundfile as sf

    path = tmp_path / "mix.wav"
    minute = music(60, 11025, seed=3)
    with sf.SoundFile(str(path), "w", 11025, 1, subtype="PCM_16") as f:
        for _ in range(11):
            f.write(minute)
    pred = Predictor(musicnn, max_windows=20).predict_file(path)
    assert len(pred.window_starts) == 20 and pred.window_starts[-1] == 657.0  # last window: 657-660 s
    assert abs(pred.duration - 660) < 0.01


def test_overstated_length_falls_back_to_a_whole_decode(tmp_path, musicnn, monkeypatch):
    """A header that claims more than the file holds (an mp3 without a Xing frame can): the
    spread windows are then taken from a whole-file decode, never from past the end."""
    path = write(tmp_path / "long.wav", music(100, 22050, seed=2), 22050)
    true = Predictor(musicnn, max_windows=10).predict_file(path)
    monkeypatch.setattr(spans, "declared_samples", lambda p: 130 * SAMPLE_RATE)
    pred = Predictor(musicnn, max_windows=10).predict_file(path)
    assert len(pred.window_starts) == 10 and pred.window_starts[-1] * SAMPLE_RATE <= 100 * SAMPLE_RATE - WINDOW_SAMPLES
    assert np.abs(pred.probabilities - true.probabilities).max() < 1e-3


def test_cap_applies_to_other_kinds_from_a_whole_decode(tmp_path):
    pytest.importorskip("onnx")
    root = tmp_path / "models"
    root.mkdir()
    model = _linear_model("log_mel", ["batch", 1, features.N_MELS, features.WINDOW_FRAMES],
                          features.N_MELS * features.WINDOW_FRAMES, list(GENRES), 0, KIND_LOG_MEL)
    (root / "mel.onnx").write_bytes(model.SerializeToString())
    (root / "manifest.json").write_text(json.dumps({"format": 1, "models": [{
        "name": "mel", "file": "mel.onnx", "sha256": sha256_file(root / "mel.onnx"), "kind": KIND_LOG_MEL,
        "labels": list(GENRES), "sample_rate": SAMPLE_RATE, "window_seconds": 3.0, "hop_seconds": 1.5,
        "weight": 1.0, "input_name": "log_mel"}]}))
    path = write(tmp_path / "a.wav", music(40), SAMPLE_RATE)
    models = load_models(root, device="cpu")
    every = analyse_file(path, Predictor(models).config)
    capped = analyse_file(path, Predictor(models, max_windows=5).config)
    rows = spans.spread(len(every.starts[KIND_LOG_MEL]), 5)
    assert len(every.starts[KIND_LOG_MEL]) == 25 and len(capped.starts[KIND_LOG_MEL]) == 5
    assert np.array_equal(capped.starts[KIND_LOG_MEL], every.starts[KIND_LOG_MEL][rows])
    assert np.array_equal(capped.batches[KIND_LOG_MEL], every.batches[KIND_LOG_MEL][rows])


def test_negative_cap_is_refused(musicnn):
    with pytest.raises(ValueError):
        Predictor(musicnn, max_windows=-1)


@pytest.mark.parametrize("command", ["predict", "tag"])
def test_cli_passes_max_windows(tmp_path, command):
    """`--max-windows` reaches the analysis in both commands: 3 windows vote otherwise than 13."""
    from click.testing import CliRunner

    from gtag.cli import main

    path = write(tmp_path / "a.wav", music(40, seed=4), SAMPLE_RATE)

    def probabilities(cap: str) -> dict:
        report = tmp_path / f"r{cap}.json"
        args = (["predict", "--json"] if command == "predict" else
                ["tag", "--dry-run", "--no-cache", "--jobs", "1", "--min-confidence", "0", "--report", str(report)])
        result = CliRunner().invoke(main, [*args, "--max-windows", cap, str(path)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output if command == "predict" else report.read_text())
        return rows[0]["probabilities"]

    assert probabilities("0") != probabilities("3")
    assert probabilities("0") == probabilities("13")  # 13 windows: the cap keeps them all


@pytest.mark.parametrize("cap, spread_note", [("3", True), ("0", False), ("13", False)])
def test_predict_says_when_windows_are_spread(tmp_path, cap, spread_note):
    """`gtag predict` tells the user a long track was heard on spread windows, and only then."""
    from click.testing import CliRunner

    from gtag.cli import main

    path = write(tmp_path / "a.wav", music(40, seed=4), SAMPLE_RATE)
    result = CliRunner().invoke(main, ["predict", "--max-windows", cap, str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert ("spread over the track" in result.output) == spread_note


def test_learn_embeds_the_spread_windows_tag_analyses(tmp_path, monkeypatch):
    """`gtag learn` embeds CACHED_WINDOWS spread windows of a long track, decoding only them,
    and a short track's every window, as before."""
    from gtag.learn.embed import CACHED_WINDOWS, Backbone

    bb = Backbone()
    short = write(tmp_path / "clip.wav", music(30, seed=7), SAMPLE_RATE)
    assert np.array_equal(bb.embed_file(short), bb.embed_samples(audio.load_audio(short).samples))
    path = write(tmp_path / "long.flac", music(150, 44100, channels=2, seed=6), 44100)
    every = bb.embed_samples(audio.load_audio(path).samples)
    assert len(every) == 50
    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: pytest.fail("decoded the whole file"))
    got = bb.embed_file(path)
    assert got.shape == (CACHED_WINDOWS, every.shape[1])
    diff = np.abs(got - every[spans.spread(len(every), CACHED_WINDOWS)])
    assert diff.max() < 0.05  # float16 steps of the stored mel (embeddings reach ~100)
