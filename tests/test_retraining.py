"""Retraining as a user does it: no trainer changes the vote, `gtag-train all` runs the chain in a
run folder (resumable, compared, promoted only when asked), and without the train extra
`gtag-train` says what to install in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from .conftest import FIXTURES, need

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "exported_models"
TINY = {  # a few seconds each on the tests' ten-clip dataset
    "classic": dict(jobs=1, folds=2, rf_trees=(10,), rf_depth=(4,), rf_min_leaf=(1,), knn_k=(1,),
                    knn_weights=("uniform",)),
    "cnn": dict(epochs=1, epoch_windows=16, batch_size=8, patience=1, search=(), short_views=2),
    "wavenet": dict(epochs=1, epoch_windows=16, batch_size=8, patience=1, front_channels=(8, 8),
                    front_strides=(8, 8), pool=4, channels=8, skip_channels=8, layers=2, stacks=1),
}


def _weights(models: Path) -> dict[str, float]:
    return {m["name"]: m["weight"] for m in json.loads((models / "manifest.json").read_text())["models"]}


def _sha(models: Path, name: str) -> str:
    return next(m["sha256"] for m in json.loads((models / "manifest.json").read_text())["models"] if m["name"] == name)


def _default_vote(models: Path, clip: Path) -> np.ndarray:
    """What the default run hears: the models the manifest's weights select, voting by them."""
    from gtag.models.runtime import load_models
    from gtag.predict.pipeline import Predictor

    return Predictor(load_models(models, device="cpu")).predict_file(clip).probabilities


@pytest.fixture
def shipped(tmp_path) -> Path:
    """A writable copy of the shipped models (the real manifest: musicnn alone votes)."""
    from training.runfolder import copy_models

    copy_models(SHIPPED, tmp_path / "shipped")
    return tmp_path / "shipped"


@pytest.fixture
def clip(tmp_path) -> Path:
    src = need(FIXTURES / "formats" / "metal.ogg")
    shutil.copyfile(src, tmp_path / "metal.ogg")
    return tmp_path / "metal.ogg"


@pytest.fixture
def data(tmp_path) -> Path:
    from .test_nets import _write_dataset

    _write_dataset(tmp_path / "data")
    return tmp_path / "data"


def test_a_trainer_keeps_the_weight_and_a_new_model_enters_at_zero(tmp_path):
    from training.export import update_manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "models": [{"name": "rf", "weight": 0.0},
                                                                                {"name": "musicnn", "weight": 1.0}]}))
    update_manifest(tmp_path, {"name": "rf", "weight": 0.65, "file": "rf.onnx"})  # as classic.py once did
    update_manifest(tmp_path, {"name": "musicnn", "file": "musicnn.onnx"})
    update_manifest(tmp_path, {"name": "brand_new", "weight": 0.9, "file": "x.onnx"})
    assert _weights(tmp_path) == {"rf": 0.0, "musicnn": 1.0, "brand_new": 0.0}


def test_a_head_retrain_keeps_the_taxonomys_node_scorers(tmp_path):
    """`gtag-train musicnn-head` rewrites musicnn's entry; the Electronic/Rock scorers that
    `gtag-train taxonomy` set there (on MSD tags the head does not change) must survive it."""
    from training.export import update_manifest

    nodes = {"nodes": {"Electronic": {"min_probability": 0.48, "default": True}}}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "models": [
        {"name": "musicnn", "weight": 1.0, "taxonomy": nodes}]}))
    update_manifest(tmp_path, {"name": "musicnn", "file": "musicnn.onnx", "taxonomy": {"nodes": {}}})
    [entry] = json.loads((tmp_path / "manifest.json").read_text())["models"]
    assert entry["taxonomy"] == nodes and entry["weight"] == 1.0 and entry["file"] == "musicnn.onnx"


@pytest.mark.parametrize("trainer", ["classic"])  # cnn and wavenet (training.loop): in the chain test
def test_retraining_one_model_leaves_every_weight_and_the_default_vote(trainer, shipped, data, clip, tmp_path,
                                                                        monkeypatch):
    """`gtag-train classic` once rewrote rf's and knn's weights from their CV accuracy, and the default
    run wrote 25 genres instead of 67. Retrained without matplotlib too: figures are optional."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    before_weights, before_vote = _weights(shipped), _default_vote(shipped, clip)
    name = "rf" if trainer == "classic" else "cnn"
    before_sha = _sha(shipped, name)
    if trainer == "classic":
        from training.classic import ClassicOptions, train_classic

        train_classic(data, shipped, tmp_path / "run", ClassicOptions(**TINY["classic"]))
    else:
        pytest.importorskip("torch")
        from training.cnn import CnnOptions, train_cnn

        train_cnn(data, shipped, tmp_path / "run", CnnOptions(**TINY["cnn"]))
    assert _sha(shipped, name) != before_sha  # the model was retrained and exported ...
    assert not list((tmp_path / "run").glob("*.png"))  # ... with no figures, for want of matplotlib
    assert _weights(shipped) == before_weights
    np.testing.assert_array_equal(_default_vote(shipped, clip), before_vote)


@pytest.mark.parametrize("current, scored, blind", [
    ({"musicnn": 1.0, "rf": 0.0}, {"rf", "knn"}, ["musicnn"]),
    ({"musicnn": 1.0, "rf": 0.0}, {"rf", "musicnn"}, []),
    ({"musicnn": 0.0, "rf": 0.0}, {"rf"}, []),  # a skipped model without a vote changes nothing
])
def test_a_voter_the_ensemble_cannot_score_keeps_the_weights(current, scored, blind):
    from training.ensemble import blind_voters

    assert blind_voters(current, scored) == blind


def test_ensemble_with_nothing_to_score_says_so_in_one_line(shipped, data, tmp_path):
    """Before `transfer` ran, the ensemble died with a traceback; now it names what it skipped."""
    from click.testing import CliRunner

    from training.cli import main

    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] == "musicnn"]
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "ens"
    result = CliRunner().invoke(main, ["ensemble", "--data", str(data), "--out", str(shipped), "--run-dir", str(run),
                                       "--transfer-dir", str(tmp_path / "no-transfer"),
                                       "--classic-cache", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "skipped musicnn: no train-only copy" in result.output and "gtag-train transfer" in result.output
    assert "Error: no model of" in result.output
    assert _weights(shipped) == {"musicnn": 1.0}


def test_all_runs_the_chain_resumes_and_replaces_only_when_promoted(shipped, data, clip, tmp_path, monkeypatch):
    """The chain on tiny data: every trainer it can run (no converted musicnn weights, no library:
    those steps say why they did not run), then the ensemble, whose weights stay as shipped since
    musicnn votes and cannot be scored; a rerun skips what is done and resumes where inputs
    changed; the shipped folder changes only on promote, and then the default vote is unchanged."""
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # figures are optional for the nets too
    from training.chain import ChainOptions, run_chain
    from training.runfolder import listing

    shipped_files, vote = listing(shipped), _default_vote(shipped, clip)
    run = tmp_path / "runs" / "all"
    opts = ChainOptions(data=data, shipped=shipped, run_dir=run, weights=tmp_path / "none.npz", skip=("cnn",),
                        overrides={k: TINY[k] for k in ("classic", "wavenet")})
    lines: list[str] = []
    first = run_chain(opts, promote=False, say=lambda line: (lines.append(line), print(line)))
    assert first["steps"] == {
        "classic": "ran", "cnn": "skipped", "wavenet": "ran",
        "transfer": first["steps"]["transfer"], "reference": "ran", "musicnn-head": "not run: needs --library (a real library with "
        "MANIFEST.tsv)", "taxonomy": "not run: needs --library (a real library with MANIFEST.tsv)",
        "wavenet-distil": first["steps"]["wavenet-distil"],
        "library-check": first["steps"]["library-check"], "ensemble": "ran"}
    assert first["steps"]["transfer"].startswith("not run: no converted musicnn weights")
    assert [ln for ln in lines if ln.startswith("[1/10] classic")] == [
        "[1/10] classic: rf and k-NN on the 57 features (about 3 min on a 2-core CPU) ...", lines[1]]
    assert listing(shipped) == shipped_files  # nothing replaced without promote
    models = run / "models"
    assert _sha(models, "rf") != _sha(shipped, "rf") and _sha(models, "wavenet") != _sha(shipped, "wavenet")
    assert _sha(models, "cnn") == _sha(shipped, "cnn")  # skipped: the shipped one stays
    assert not list(run.rglob("*.png"))
    assert _weights(models) == _weights(shipped)
    report = json.loads((run / "ensemble" / "ensemble_metrics.json").read_text())
    assert "musicnn" in report["skipped"] and report["kept_current_weights"].startswith("musicnn vote")
    rows = {r["model"]: r for r in first["comparison"]["models"]}
    assert rows["rf"]["status"] == "retrained" and rows["musicnn"]["status"] == "unchanged"
    table = next(ln for ln in lines if ln.startswith("shipped ("))
    assert "retrained" in table and "default vote: musicnn -> musicnn" in table

    (run / "steps" / "wavenet.json").unlink()  # as if interrupted during wavenet
    second = run_chain(opts, promote=False, say=lambda _: None)
    assert second["steps"]["classic"] == "up to date"
    assert second["steps"]["wavenet"] == "ran" and second["steps"]["ensemble"] == "ran"

    third = run_chain(opts, promote=None, confirm=lambda q: "Replace the models" in q, say=lambda _: None)
    assert {third["steps"][s] for s in ("classic", "wavenet", "ensemble")} == {"up to date"}
    assert "rf.onnx" in third["promoted"] and third["promoted"][-1] == "manifest.json"
    assert _sha(shipped, "rf") == _sha(models, "rf") and (shipped / "rf.onnx").is_file()
    assert (next((run / "replaced").iterdir()) / "rf.onnx").is_file()  # the shipped rf, kept
    assert _weights(shipped) == _weights(models)
    np.testing.assert_array_equal(_default_vote(shipped, clip), vote)


BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTrainExtra(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "sklearn", "skl2onnx", "matplotlib"}:
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, _NoTrainExtra())
    from training.cli import main
    main(sys.argv[1:], prog_name="gtag-train")
""")


@pytest.mark.parametrize("command", [["classic"], ["cnn"], ["ensemble"], ["all"]])
def test_without_the_train_extra_one_line_says_what_to_install(command, tmp_path):
    args = [*command, "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert 'pip install "gtag[train]"' in proc.stderr and "torch==2.13.0" in proc.stderr
    assert f"gtag-train {command[0]}: needs the train extra" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
