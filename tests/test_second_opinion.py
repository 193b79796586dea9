"""The abstain rule's second opinion: the CNN, asked about tracks musicnn is unsure of, on the audio of
musicnn's own windows; agreeing, it lets a less probable genre be written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gtag.audio import decode as audio
from gtag.audio import features, spans
from gtag.audio.decode import SAMPLE_RATE, WINDOW_SAMPLES
from gtag.models.runtime import default_models_dir, load_models
from gtag.predict.pipeline import AnalysisConfig, Predictor, analyse_file, second_opinion

from .conftest import GTZAN, need, shipped_models_copy
from .test_spans import MUSICNN_HOP, music, write


@pytest.mark.parametrize("seconds", [75.0, 30.0, 2.0, 3.0])
def test_cnn_patches_from_window_audio_are_those_of_the_whole_track(seconds):
    """Long (two 60 s analysis blocks), a GTZAN clip's length, shorter than a window (tiled), exactly one."""
    y = audio.fit_to_window(music(seconds))
    ref = features.analyze(y, SAMPLE_RATE, MUSICNN_HOP, want_features=False, want_mel=True)
    starts = ref.starts
    got = features.log_mel_span_patches(spans.spans_from_signal(y, starts), starts, y.size)
    assert got.shape == ref.log_mel.shape
    assert np.abs(got - ref.log_mel).max() < 1e-4  # float rounding of the blocked matmul


def _models_with_rule(tmp_path: Path, min_probability: float, second_min: float | None) -> Path:
    """A copy of the shipped models whose musicnn abstain rule has the given thresholds."""
    def edit(e: dict) -> None:
        if e["name"] == "musicnn":
            e["abstain"] = dict(e["abstain"], min_probability=min_probability)
            e["abstain"].pop("second_opinion", None)
            if second_min is not None:
                e["abstain"]["second_opinion"] = {"model": "cnn", "min_probability": second_min}
            e["abstain"]["max_unknown"] = e["abstain"]["max_distance"] = None

    return shipped_models_copy(tmp_path, edit)


def test_the_cnn_is_asked_between_the_thresholds_and_decides_there(tmp_path):
    clip = need(GTZAN / "audio" / "jazz" / "jazz.00000.ogg")
    asked = Predictor(load_models(_models_with_rule(tmp_path / "a", 0.9999, 0.0), ["musicnn"], device="cpu", threads=1))
    assert asked.second is not None and asked.config.keep_spans
    pred = asked.predict_file(clip)
    assert "cnn" in pred.models
    # what the CNN alone says on the same (non-overlapping 3 s) windows
    (cnn,) = load_models(default_models_dir(), ["cnn"], device="cpu", threads=1)
    alone = Predictor([cnn], hop_seconds=3.0).predict_file(clip)
    assert np.allclose(pred.models["cnn"], alone.probabilities, atol=1e-5)
    agrees = alone.genre == pred.genre
    assert (asked.abstain_reason(pred) is None) is agrees
    # the vote itself is musicnn's alone
    plain = Predictor(load_models(_models_with_rule(tmp_path / "b", 0.9999, None), ["musicnn"], device="cpu", threads=1))
    assert plain.second is None and not plain.config.keep_spans
    again = plain.predict_file(clip)
    assert np.allclose(again.probabilities, pred.probabilities) and "cnn" not in again.models
    assert "9 times in 10" in plain.abstain_reason(again)
    assert asked.agreed_by(pred) == ("cnn" if agrees else None) and plain.agreed_by(again) is None
    assert plain.signature != asked.signature  # a cached prediction knows whether it could hold one
    # sure enough on its own (or hopeless): the CNN is not run
    sure = Predictor(load_models(_models_with_rule(tmp_path / "c", 0.0, 0.0), ["musicnn"], device="cpu", threads=1))
    assert "cnn" not in sure.predict_file(clip).models


def test_a_long_file_decoded_on_its_spread_windows_gets_the_same_second_opinion(tmp_path, monkeypatch):
    path = write(tmp_path / "long.flac", music(95, 44100, channels=2, seed=3), 44100)
    (musicnn,) = load_models(default_models_dir(), ["musicnn"], device="cpu", threads=1)
    (cnn,) = load_models(default_models_dir(), ["cnn"], device="cpu", threads=1)
    config = AnalysisConfig(hops=(("musicnn_mel", MUSICNN_HOP),), max_windows=10, keep_spans=True)
    seeking = analyse_file(path, config)
    assert len(seeking.window_audio) == 10 and seeking.n_samples >= 94 * SAMPLE_RATE
    monkeypatch.setattr(spans, "declared_samples", lambda p: None)  # decode the whole file instead
    whole = analyse_file(path, config)
    assert np.array_equal(whole.starts["musicnn_mel"], seeking.starts["musicnn_mel"])
    assert np.abs(second_opinion(cnn, seeking) - second_opinion(cnn, whole)).max() < 1e-3
    assert musicnn.spec.hop_seconds * SAMPLE_RATE == MUSICNN_HOP and WINDOW_SAMPLES == MUSICNN_HOP


@pytest.mark.parametrize("jobs", [1, 2])
def test_tag_reports_the_second_opinion_and_writes_what_it_allows(tmp_path, jobs):
    """End to end, in the parent (--jobs 1) and in worker processes: between the thresholds a track is
    written exactly when the CNN names musicnn's genre, and the report shows the CNN's answer."""
    from click.testing import CliRunner

    from gtag.cli import main

    clips = [need(GTZAN / "audio" / g / f"{g}.00000.ogg") for g in ("jazz", "blues", "metal")]
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    for c in clips:  # copyfile, not copy: the shared clips are read-only, and a dry run reports that
        shutil.copyfile(c, music_dir / c.name)
    models = _models_with_rule(tmp_path, 0.9999, 0.0)
    report = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["tag", str(music_dir), "--dry-run", "--no-cache", "--models", str(models),
                                    "--jobs", str(jobs), "--report", str(report)])
    assert res.exit_code == 0, res.output
    rows = json.loads(report.read_text())
    assert len(rows) == 3
    for r in rows:
        cnn = r["models"]["cnn"]
        agrees = max(cnn, key=cnn.get) == r["genre"].lower()  # labels, and the names written
        assert (r["status"] == "skipped: uncertain") is not agrees, r
        if not agrees:
            assert "cnn hears" in r["reason"] and "agreed" not in r
        else:
            assert r["agreed"] == "cnn" and r["written"] == [r["genre"]]
            assert f"{Path(r['path']).name}: — → {r['genre']} (" in res.output and "cnn agrees, would write" in res.output


def test_predict_json_says_when_the_second_opinion_let_it_be_written(tmp_path):
    from click.testing import CliRunner

    from gtag.cli import main

    clips = [str(need(GTZAN / "audio" / g / f"{g}.00000.ogg")) for g in ("jazz", "metal")]
    models = _models_with_rule(tmp_path, 0.9999, 0.0)
    res = CliRunner().invoke(main, ["predict", "--json", "--models", str(models), *clips])
    assert res.exit_code == 0, res.output
    for r in json.loads(res.output):
        cnn = r["models"]["cnn"]["probabilities"]
        agrees = max(cnn, key=cnn.get) == r["genre"]
        assert r["would_tag"] is agrees and (r.get("agreed") == "cnn") is agrees
