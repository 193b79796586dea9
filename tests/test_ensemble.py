"""Choosing the ensemble weights on validation (training/ensemble.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

from training.ensemble import leave_one_out, mix, select_weights  # noqa: E402
from training.export import set_manifest_fields  # noqa: E402


def _onehot(pred: np.ndarray, n: int, conf: float) -> np.ndarray:
    p = np.full((len(pred), n), (1 - conf) / (n - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(1) == y))


def test_strong_model_is_not_outvoted_by_weak_ones():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    strong = np.where(rng.random(200) < 0.8, y, (y + 1) % 4)
    # two weak models that agree with each other on the same wrong answers
    wrong = np.where(rng.random(200) < 0.4, y, (y + 2) % 4)
    probs = {"strong": _onehot(strong, 4, 0.7), "weak1": _onehot(wrong, 4, 0.9), "weak2": _onehot(wrong, 4, 0.9)}
    equal = _acc(mix(probs, dict.fromkeys(probs, 1.0)), y)
    weights, trace = select_weights(probs, y)
    chosen = _acc(mix(probs, weights), y)
    assert trace[0]["add"] == "strong"
    assert chosen >= _acc(probs["strong"], y) > equal
    assert sum(weights.values()) == pytest.approx(1.0)


def test_complementary_models_are_combined():
    # each model is right and confident on its own half, unsure (but not wrong) elsewhere
    y = np.arange(100) % 3
    a = np.full((100, 3), 1 / 3)
    b = np.full((100, 3), 1 / 3)
    a[:50] = _onehot(y[:50], 3, 0.9)
    b[50:] = _onehot(y[50:], 3, 0.9)
    a[50:, (y[50:] + 1) % 3] += 0.01  # slightly wrong where unsure
    b[:50, (y[:50] + 1) % 3] += 0.01
    weights, _ = select_weights({"a": a, "b": b}, y)
    assert weights["a"] > 0 and weights["b"] > 0
    assert _acc(mix({"a": a, "b": b}, weights), y) == 1.0


def test_selection_never_below_best_single_on_random_models():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 5, 60)
        probs = {f"m{i}": rng.dirichlet(np.ones(5), 60) for i in range(4)}
        weights, _ = select_weights(probs, y)
        assert _acc(mix(probs, weights), y) >= max(_acc(p, y) for p in probs.values())


def test_leave_one_out_shows_what_each_model_earns():
    """Without the one good model the selection falls back to the weak ones and scores lower; without
    a useless model nothing changes."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 120)
    good = _onehot(np.where(rng.random(120) < 0.9, y, (y + 1) % 4), 4, 0.8)
    weak = _onehot(np.where(rng.random(120) < 0.5, y, (y + 2) % 4), 4, 0.8)
    useless = np.full((120, 4), 0.25)
    probs = {"good": good, "weak": weak, "useless": useless}
    full = np.ones(120, dtype=bool)
    weights, _ = select_weights(probs, y)
    out = leave_one_out(probs, y, full, ("a", "b", "c", "d"))
    assert set(out) == set(probs)
    chosen = _acc(mix(probs, weights), y)
    assert "good" not in out["good"]["weights"] and out["good"]["track_accuracy"] < chosen - 0.2
    assert out["useless"]["track_accuracy"] == pytest.approx(chosen, abs=1e-3)  # metrics: 4 decimals
    assert sum(out["weak"]["weights"].values()) == pytest.approx(1.0)


def test_set_manifest_fields_keeps_the_rest(tmp_path):
    entries = [{"name": "a", "weight": 1.0, "exported": "then"}, {"name": "b", "weight": 1.0}]
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "models": entries}))
    set_manifest_fields(tmp_path, {"a": {"weight": 0.25}})
    got = json.loads((tmp_path / "manifest.json").read_text())["models"]
    assert got == [{"name": "a", "weight": 0.25, "exported": "then"}, {"name": "b", "weight": 1.0}]
    with pytest.raises(KeyError):
        set_manifest_fields(tmp_path, {"zzz": {"weight": 1}})


def test_training_record_names_the_dataset_actually_used(tmp_path):
    from types import SimpleNamespace

    from training.export import training_record

    root = tmp_path / "my_collection"
    root.mkdir()
    tracks = [SimpleNamespace(variant="original"), SimpleNamespace(variant="excerpt")]
    rec = training_record(SimpleNamespace(root=root), tracks, 12, "train", 3, "gtag-train x", params={"k": 3})
    assert rec["data"] == "my_collection" and "gtzan" not in rec["data"].lower()
    assert rec["variants"] == ["excerpt", "original"] and rec["tracks"] == 2 and rec["windows"] == 12
    assert rec["params"] == {"k": 3} and rec["seed"] == 3 and rec["command"] == "gtag-train x"


def test_every_model_is_scored_even_those_the_current_weights_leave_out(tmp_path, tiny_models, tone):
    """`gtag-train ensemble` must re-score all models: a weight of 0 from an earlier choice must
    not hide a model from the next one (load_models' default skips weight-0 models)."""
    from training.ensemble import valid_probabilities

    from .conftest import GENRES, write_wav

    data = tmp_path / "data"
    splits: dict[str, list[str]] = {"train": [], "valid": []}
    for i, genre in enumerate(GENRES):
        (data / "audio" / genre).mkdir(parents=True)
        for j, split in enumerate(("train", "valid")):
            tid = f"{genre}.{j:05d}"
            write_wav(data / "audio" / genre / f"{tid}.wav", np.roll(tone, 1000 * i + j)[: 4 * 22050])
            splits[split].append(tid)
    (data / "splits").mkdir()
    for name, ids in splits.items():
        (data / "splits" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    manifest = tiny_models / "manifest.json"
    entry = json.loads(manifest.read_text())
    entry["models"][0]["weight"] = 0.0
    manifest.write_text(json.dumps(entry))
    probs, y, full, labels = valid_probabilities(tiny_models, data)
    assert set(probs) == {"feat", "mel"}
    assert probs["feat"].shape == (len(GENRES), len(GENRES)) and len(y) == len(GENRES)


@pytest.mark.slow
def test_ensemble_command_scores_train_only_copies_of_every_model(tmp_path):
    """`gtag-train classic`, `transfer` and `ensemble` on a toy dataset: the ensemble refits rf/knn on
    the train split, takes musicnn's train-only export from the transfer run, scores all three on
    valid, writes weights into the manifest and reports the selection without each model."""
    pytest.importorskip("torch")
    from gtag.models.runtime import read_manifest
    from training.classic import ClassicOptions, train_classic
    from training.ensemble import choose_ensemble
    from training.musicnn import save_weights
    from training.musicnn_convert import convert_variables
    from training.transfer import TransferOptions, train_transfer

    from .test_musicnn import _fake_checkpoint
    from .test_nets import _write_dataset

    data, out = tmp_path / "data", tmp_path / "models"
    _write_dataset(data)
    train_classic(data, out, tmp_path / "classic", ClassicOptions(
        jobs=1, folds=2, rf_trees=(10,), rf_depth=(4,), rf_min_leaf=(1,), knn_k=(1,), knn_weights=("uniform",)))
    weights = save_weights(convert_variables(_fake_checkpoint()), tmp_path / "w.npz", source="test")
    train_transfer(data, out, tmp_path / "transfer", weights, TransferOptions(folds=2, logreg_c=(0.1,)))
    report = choose_ensemble(data, out, tmp_path / "ensemble", tmp_path / "transfer", tmp_path / "classic" / "cache")
    names = {"rf", "knn", "musicnn"}
    assert set(report["weights"]) == names and sum(report["weights"].values()) == pytest.approx(1.0)
    assert set(report["without"]) == names
    assert all(n not in report["without"][n]["weights"] for n in names)
    notes = report["train_only_models"]
    assert notes["rf"].startswith("refitted on the train split") and "transfer" in notes["musicnn"]
    shipped = {s.name: s for s in read_manifest(out)}
    copies = {s.name: s for s in read_manifest(tmp_path / "ensemble" / "train_only")}
    assert set(copies) == names
    assert all(copies[n].extra["training"] == {"fitted_on": "train"} for n in names)
    assert shipped["rf"].extra["training"]["fitted_on"] == "train+valid"  # so the copy had to be refitted
    assert {n: s.weight for n, s in shipped.items()} == pytest.approx(
        {n: round(w, 4) for n, w in report["weights"].items()})


@pytest.mark.parametrize("library, allowed", [
    ({"classical": {"called_by_folder_genre": 0.96}, "rock": {"called_by_folder_genre": 0.04}}, False),
    ({"classical": {"called_by_folder_genre": 0.96}, "rock": {"called_by_folder_genre": 0.60}}, True),
    ({}, True),  # no real-library figures: nothing says it is wrong there
])
def test_a_model_wrong_on_real_music_gets_no_vote(library, allowed):
    from training.ensemble import real_music_gate

    gate = real_music_gate({"m": {"library": library}})
    assert (gate["m"] is None) == allowed
    if not allowed:
        assert "rock 0.04" in gate["m"]
