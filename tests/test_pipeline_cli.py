import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from gtag.cli import main
from gtag.cli.predict import timeline
from gtag.models.runtime import load_models
from gtag.predict.pipeline import Predictor, analyse_file

from .conftest import FIXTURES, GTZAN, need, write_wav


def test_predictor_votes_over_models_with_different_label_orders(tmp_path, tiny_models, tone):
    path = write_wav(tmp_path / "a.wav", tone)
    pred = Predictor(load_models(tiny_models, device="cpu")).predict_file(path)
    assert set(pred.models) == {"feat", "mel"}
    assert pred.labels[0] == "blues"  # aligned on the first model's order
    assert pred.probabilities.sum() == pytest.approx(1.0)
    expected = (pred.models["feat"] + pred.models["mel"]) / 2  # equal weights in the tiny manifest
    assert np.allclose(pred.probabilities, expected / expected.sum())
    assert pred.window_starts.tolist() == [0.0, 1.5]  # 5 s: full 3 s windows every 1.5 s
    assert len(pred.window_genres) == 2
    assert pred.genre == pred.labels[int(np.argmax(pred.probabilities))]


def test_models_left_out_of_the_ensemble_still_predict_when_picked(tmp_path, tiny_models, tone):
    """A model with vote weight 0, picked by name, must give a real vote and genre timeline."""
    manifest = tiny_models / "manifest.json"
    data = json.loads(manifest.read_text())
    for m in data["models"]:
        m["weight"] = 0.0
    manifest.write_text(json.dumps(data))
    path = write_wav(tmp_path / "a.wav", tone)
    model = load_models(tiny_models, ["mel"], device="cpu")[0]
    predictor = Predictor([model])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. a 0/0 in the per-window vote
        pred = predictor.predict_file(path)
    assert np.all(np.isfinite(pred.probabilities)) and pred.probabilities.sum() == pytest.approx(1.0)
    assert np.allclose(pred.probabilities, pred.models["mel"])
    window_probs = model.predict(analyse_file(path, predictor.config).batches[model.spec.kind])
    assert pred.window_genres == [model.spec.labels[i] for i in window_probs.argmax(axis=1)]


def test_predict_json_shape_is_stable(tmp_path, tiny_models, tone):
    good = write_wav(tmp_path / "good.wav", tone)
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    r = CliRunner().invoke(main, ["predict", "--json", "--models", str(tiny_models), str(good), str(bad)])
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    assert [d["path"] for d in data] == [str(good), str(bad)]
    ok, failed = data
    assert set(ok) == {"path", "genre", "confidence", "probabilities", "models", "would_tag"}
    assert ok["genre"] in ok["probabilities"] and ok["confidence"] == max(ok["probabilities"].values())
    assert set(ok["models"]) == {"feat", "mel"} and set(ok["models"]["mel"]) == {"probabilities"}
    assert set(failed) == {"path", "error"} and "bad.mp3" in failed["error"]


def test_predict_model_selection(tmp_path, tiny_models, tone):
    good = write_wav(tmp_path / "good.wav", tone)
    r = CliRunner().invoke(main, ["predict", "--json", "--models", str(tiny_models), "-m", "mel", str(good)])
    assert r.exit_code == 0 and set(json.loads(r.stdout)[0]["models"]) == {"mel"}


def test_predict_table_and_error_line(tmp_path, tiny_models, tone):
    good = write_wav(tmp_path / "good.wav", tone)
    short = write_wav(tmp_path / "short.wav", tone[:11025])  # 0.5 s
    r = CliRunner().invoke(main, ["predict", "--models", str(tiny_models), str(good), str(short)])
    assert r.exit_code == 1
    assert "good.wav" in r.stdout and "vote" in r.stdout
    assert "short.wav" in r.stderr and "too short" in r.stderr


def test_missing_models_exit_3(tmp_path, tone):
    good = write_wav(tmp_path / "good.wav", tone)
    r = CliRunner().invoke(main, ["predict", "--models", str(tmp_path), str(good)])
    assert r.exit_code == 3 and "manifest" in r.stderr


def test_shipped_models_recognise_a_training_clip():
    """End to end with the shipped models on a clip the models were fitted on: a sanity check
    that the whole path (decode, features, ONNX, vote) is wired as in training."""
    clip = need(GTZAN / "audio" / "classical" / "classical.00030.ogg")
    r = CliRunner().invoke(main, ["predict", "--json", str(clip)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["genre"] == "classical"


@pytest.mark.parametrize("name", ["jazz.m4a", "blues_v23_untagged.mp3", "classical.flac", "metal.ogg"])
def test_shipped_models_on_real_containers(name):
    r = CliRunner().invoke(main, ["predict", str(need(FIXTURES / "formats" / name))])
    assert r.exit_code == 0, r.output
    assert name in r.stdout


def test_models_command_lists_metrics_readable_in_80_columns():
    """`gtag models` in a standard 80-column terminal: every model's row and figures whole, none cut
    to "…" (the table used to need ~120 columns)."""
    import subprocess
    import sys

    from gtag.models.runtime import default_models_dir, read_manifest

    r = subprocess.run([sys.executable, "-m", "gtag.cli", "models"], capture_output=True, text=True,
                       env={**__import__("os").environ, "COLUMNS": "80"}, check=True)
    table = r.stdout.split("valid acc:")[0]
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80
    for spec in read_manifest(default_models_dir()):
        row = next(line for line in table.splitlines() if line.split()[:1] == [spec.name])
        assert f"{spec.metrics['valid_track']['accuracy']:.3f}" in row
        assert f"{spec.weight:.2f}" in row
        assert f"{spec.name} ({spec.kind}, {spec.hop_seconds:g} s hop)" in r.stdout


def test_timeline_merges_runs():
    assert timeline([0, 1.5, 3.0, 4.5], ["a", "a", "b", "a"]) == [(0, 3.0, "a"), (3.0, 4.5, "b"), (4.5, 7.5, "a")]


def test_each_model_windows_at_its_own_hop(tmp_path, tiny_models, tone):
    """A manifest hop per model: the log-mel model votes every 3 s while the feature model votes
    every 1.5 s; the timeline uses the finer windows; an explicit hop applies to all models."""
    from gtag.audio import decode as audio
    from gtag.audio import features
    from gtag.models import vote

    entry = json.loads((tiny_models / "manifest.json").read_text())
    for m in entry["models"]:
        m["hop_seconds"] = 3.0 if m["name"] == "mel" else 1.5
    (tiny_models / "manifest.json").write_text(json.dumps(entry))
    y = np.tile(tone, 2)  # 10 s: windows at 0, 1.5, ..., 6 s (5) and at 0, 3, 6 s (3)
    path = write_wav(tmp_path / "a.wav", y)
    models = load_models(tiny_models, device="cpu")
    pred = Predictor(models)
    an = analyse_file(path, pred.config)
    assert len(an.batches["features"]) == len(an.starts["features"]) == 5
    assert len(an.batches["log_mel"]) == len(an.starts["log_mel"]) == 3
    p = pred.infer(path, an)
    assert p.window_starts.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0] and len(p.window_genres) == 5
    mel = next(m for m in models if m.spec.name == "mel")
    y_dec = audio.load_audio(path).samples
    want = vote.track_probabilities(mel.predict(features.analyze(y_dec, hop=audio.WINDOW_SAMPLES).log_mel[:, None]))
    assert np.allclose(p.models["mel"], vote.align(want, mel.spec.labels, p.labels), atol=1e-6)
    same = Predictor(models, hop_seconds=1.5)
    assert dict(same.config.hops) == {"features": 33075, "log_mel": 33075}
    assert same.signature != pred.signature  # the cache tells the two apart


def test_models_picked_with_model_vote_equally(tmp_path, tiny_models, tone):
    """`--model a,b` votes a and b equally even when the manifest gives one of them weight 0 (its
    weights describe the default ensemble); without --model the manifest weights apply."""
    manifest = tiny_models / "manifest.json"
    data = json.loads(manifest.read_text())
    data["models"][0]["weight"] = 0.0  # feat
    data["models"][1]["weight"] = 1.0  # mel
    manifest.write_text(json.dumps(data))
    path = write_wav(tmp_path / "a.wav", tone)
    runner = CliRunner()

    def probs(*args):
        r = runner.invoke(main, ["predict", "--json", "--models", str(tiny_models), *args, str(path)])
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)[0]
        return (np.array(list(d["probabilities"].values())),
                {n: np.array(list(v["probabilities"].values())) for n, v in d["models"].items()})

    default, per_model = probs()
    assert set(per_model) == {"mel"} and np.allclose(default, per_model["mel"], atol=1e-5)
    picked, per_model = probs("--model", "feat,mel")
    mean = (per_model["feat"] + per_model["mel"]) / 2
    assert np.allclose(picked, mean / mean.sum(), atol=1e-5)
    assert not np.allclose(picked, per_model["mel"], atol=1e-3)


def test_worker_processes_vote_with_the_parents_weights(tmp_path, tiny_models, tone):
    """`gtag tag --jobs 2`: the pool workers rebuild the predictor with the same weights."""
    from gtag.predict.pipeline import predict_in_worker

    path = write_wav(tmp_path / "a.wav", tone)
    models = load_models(tiny_models, device="cpu")
    pred = Predictor(models, weights={"feat": 1.0, "mel": 3.0})
    here = pred.predict_file(path)
    there = predict_in_worker(path, pred.source)
    assert dict(pred.source.weights) == {"feat": 1.0, "mel": 3.0}
    assert np.allclose(here.probabilities, there.probabilities, atol=1e-6)
    assert not np.allclose(here.probabilities, Predictor(models).predict_file(path).probabilities, atol=1e-4)
