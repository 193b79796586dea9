import json

import numpy as np
import pytest

from gtag.audio.features import FEATURE_NAMES
from gtag.models.runtime import ModelError, default_models_dir, load_models, providers_for, read_manifest, sha256_file

from .conftest import GENRES

SHIPPED = default_models_dir()


def test_shipped_manifest_describes_every_model_completely():
    specs = read_manifest(SHIPPED)
    assert {"rf", "knn", "cnn", "wavenet", "musicnn"} <= {s.name for s in specs}
    assert sum(s.weight for s in specs) > 0  # someone votes by default
    for s in specs:
        path = SHIPPED / s.file
        assert path.is_file() and sha256_file(path) == s.sha256
        assert path.stat().st_size < 50e6, "must ship in a git repo and a wheel"
        assert s.labels == GENRES and s.sample_rate == 22050 and s.window_seconds == 3.0
        assert s.metrics["valid_track"]["accuracy"] > 0.1  # measured, above chance
        assert s.extra["training"]["fitted_on"] and s.extra["gtag_version"]
        if s.kind == "features":
            assert s.feature_names == FEATURE_NAMES


def test_shipped_models_load_and_answer_with_probabilities():
    for m in load_models(SHIPPED, [s.name for s in read_manifest(SHIPPED)], device="cpu"):
        shape = {"features": (4, 57), "log_mel": (4, 1, 128, 130), "waveform": (4, 1, 66150),
                 "musicnn_mel": (4, 187, 96)}[m.spec.kind]
        p = m.predict(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        assert p.shape == (4, len(m.spec.labels))
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-4) and (p >= 0).all()


def test_tampered_model_is_refused(tmp_path, tiny_models):
    path = tiny_models / "feat.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        load_models(tiny_models, ["feat"], device="cpu")


@pytest.mark.parametrize("weights, default", [
    ({"feat": 1.0, "mel": 0.0}, ["feat"]),  # the ensemble leaves mel out: not run by default
    ({"feat": 0.5, "mel": 0.5}, ["feat", "mel"]),
    ({"feat": 0.0, "mel": 0.0}, ["feat", "mel"]),  # no weights at all: every model
])
def test_default_models_are_those_with_a_vote(tiny_models, weights, default):
    path = tiny_models / "manifest.json"
    data = json.loads(path.read_text())
    for m in data["models"]:
        m["weight"] = weights[m["name"]]
    path.write_text(json.dumps(data))
    assert [m.spec.name for m in load_models(tiny_models, device="cpu")] == default
    # picked by name, a model the ensemble leaves out still runs
    assert [m.spec.name for m in load_models(tiny_models, ["mel"], device="cpu")] == ["mel"]


def test_unknown_model_name_lists_the_available_ones(tiny_models):
    with pytest.raises(ModelError, match="available"):
        load_models(tiny_models, ["nope"])


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(format=99), "format"),
    (lambda d: d["models"][0].pop("labels"), "lacks"),
    (lambda d: d["models"][0].update(kind="spectrogram"), "unknown kind"),
    (lambda d: d.update(models=[]), "no models"),
    (lambda d: d["models"][0].update(labels=["Rock", "Electronic", "Rock and Roll"]), "one genre in gtag's taxonomy"),
])
def test_bad_manifests_give_clear_errors(tiny_models, mutate, match):
    path = tiny_models / "manifest.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=match):
        read_manifest(tiny_models)


def test_missing_manifest(tmp_path):
    with pytest.raises(ModelError, match="no manifest.json"):
        read_manifest(tmp_path)


def test_cpu_device_never_asks_for_cuda():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError):
        providers_for("tpu")


def test_wrapper_reads_names_from_the_file(tiny_models):
    m = load_models(tiny_models, ["mel"], device="cpu")[0]
    assert m.input_name == "log_mel" and m.output_name == "probabilities"
