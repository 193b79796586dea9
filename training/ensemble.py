"""Ensemble weights chosen on validation: `gtag-train ensemble`.

gtag votes by a weighted mean of each model's track probabilities (``gtag.models.vote.combine``). Equal or
accuracy-proportional weights let four weak models outvote one strong one (on our validation split
rf + knn + musicnn with CV-accuracy weights scored below musicnn alone), so the weights are chosen
on validation by greedy ensemble selection (Caruana et al., ICML 2004):

1. start from the single model that scores best (by the same keys as in 2.);
2. repeatedly add one more copy of whichever model improves the ensemble most — by track accuracy,
   then balanced accuracy (the split is very uneven: 47 blues tracks, one hip-hop), then log loss —
   and stop when no addition improves it (or after ``rounds`` additions);
3. each model's weight is its share of the copies; models never added get weight 0.

By construction the chosen ensemble is at least as accurate on validation as the best single
model. Every model is scored in its train-only version (the shipped musicnn, rf and knn were
refitted on train+valid afterwards; the neural nets are fitted on train only), so no validation
track was seen in fitting. Weights chosen on 123 tracks are coarse: copies are integers and the
search stops at the first non-improving round, which keeps the choice from chasing noise.

This is the only module that combines models: it builds the train-only copies (``build_train_only``:
rf/knn refitted through ``training.classic``, musicnn's train-only export taken from `gtag-train
transfer`'s run), and reports, beside the chosen weights, what the selection picks without each model
(``leave_one_out``: the check that a model earns its vote).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .data import read_dataset, train_valid

EXCERPT = "excerpt_2to3s_gainnorm"  # the share's short-excerpt variant (reported apart)
# The model `gtag-train transfer` exports, train-only version included (its run's valid_models/):
# copied from there, not refitted here.
TRANSFER_MODEL = "musicnn"


def _score(p: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(track accuracy, balanced accuracy, -log loss): larger is better on each, compared in order."""
    pred = p.argmax(1)
    acc = float(np.mean(pred == y))
    recalls = [float(np.mean(pred[y == c] == c)) for c in np.unique(y)]
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    return acc, float(np.mean(recalls)), -nll


def mix(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of ``(n_tracks, n_labels)`` probabilities, as ``gtag.models.vote.combine`` does per track."""
    names = [n for n in probs if weights.get(n, 0) > 0]
    if not names:  # as gtag.models.vote.model_weights: a selection whose weights are all zero votes equally
        names, weights = list(probs), dict.fromkeys(probs, 1.0)
    w = np.array([weights[n] for n in names], dtype=np.float64)
    out = sum(wi * probs[n] for wi, n in zip(w, names)) / w.sum()
    return out / out.sum(axis=1, keepdims=True)


def select_weights(probs: Mapping[str, np.ndarray], y: np.ndarray,
                   rounds: int = 20) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy ensemble selection with replacement (module docstring). ``probs``: model name ->
    ``(n_tracks, n_labels)`` validation track probabilities in one label order; ``y``: label index
    per track. Returns (weights summing to 1, trace of the accepted steps)."""
    if not probs:
        raise ValueError("no models to weigh")
    names = list(probs)
    singles = {n: _score(probs[n], y) for n in names}
    first = max(names, key=lambda n: singles[n])
    counts: Counter[str] = Counter({first: 1})
    best = singles[first]
    trace = [{"add": first, "counts": dict(counts), "accuracy": best[0], "balanced_accuracy": best[1],
              "log_loss": -best[2]}]
    for _ in range(rounds):
        trials = {n: _score(mix(probs, counts + Counter({n: 1})), y) for n in names}
        cand = max(names, key=lambda n: trials[n])
        if trials[cand] <= best:
            break
        counts[cand] += 1
        best = trials[cand]
        trace.append({"add": cand, "counts": dict(counts), "accuracy": best[0], "balanced_accuracy": best[1],
                      "log_loss": -best[2]})
    total = sum(counts.values())
    return {n: counts[n] / total for n in names}, trace


def _metrics(p: np.ndarray, y: np.ndarray, full: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    from .evaluate import classification_metrics

    m = classification_metrics(y, p.argmax(1), labels)
    return {"track_accuracy": m["accuracy"], "track_balanced_accuracy": m["balanced_accuracy"],
            "track_macro_f1": m["macro_f1"], "log_loss": -_score(p, y)[2],
            "full_clips_track_accuracy": float(np.mean(p[full].argmax(1) == y[full])),
            "per_genre_recall": {g: v["recall"] for g, v in m["per_genre"].items()}}


class EnsembleError(RuntimeError):
    """The ensemble cannot be chosen (no model can be scored): one line for the user."""


def build_train_only(models_dir: Path, shipped_dir: Path, data_root: Path, transfer_dir: Path,
                     classic_cache: Path) -> dict[str, str]:
    """Fill ``models_dir`` with a train-only version of every shipped model it can make: musicnn's
    train-only export from `gtag-train transfer` (``transfer_dir/valid_models``), rf/knn refitted on
    train with the shipped hyper-parameters, cnn/wavenet copied (they are fitted on train only).
    Returns a note per model; a model without a train-only version is left out, its note says why."""
    from gtag.models.runtime import read_manifest

    from .export import update_manifest

    if models_dir.exists():
        shutil.rmtree(models_dir)
    models_dir.mkdir(parents=True)
    ds = read_dataset(data_root)
    notes: dict[str, str] = {}
    shipped = {s.name for s in read_manifest(shipped_dir)}
    if TRANSFER_MODEL in shipped:
        src = transfer_dir / "valid_models"
        spec = next((s for s in read_manifest(src) if s.name == TRANSFER_MODEL), None) \
            if (src / "manifest.json").is_file() else None
        if spec is None:
            notes[TRANSFER_MODEL] = f"left out: no train-only copy in {src} (run `gtag-train transfer` first)"
        else:
            shutil.copy2(src / spec.file, models_dir / spec.file)
            variant = spec.extra.get("cpu_variant")
            if isinstance(variant, dict):  # what gtag runs on a CPU, so what is scored here
                shutil.copy2(src / variant["file"], models_dir / variant["file"])
            entry = json.loads((src / "manifest.json").read_text())
            update_manifest(models_dir, next(m for m in entry["models"] if m["name"] == TRANSFER_MODEL))
            notes[TRANSFER_MODEL] = f"train-only head exported by gtag-train transfer ({src})"
    notes.update(train_only_models(models_dir, shipped_dir, ds.split("train"), ds.labels, classic_cache))
    return notes


def train_only_models(models_dir: Path, shipped_dir: Path, train: list, labels: tuple[str, ...],
                      classic_cache: Path, jobs: int = 1) -> dict[str, str]:
    """Write train-only versions of the shipped models other than ``TRANSFER_MODEL`` into
    ``models_dir``: rf/knn refitted on ``train`` with their shipped hyper-parameters, models whose
    shipped file was fitted on train only copied (when its labels are the dataset's), the rest left
    out; returns a note per model."""
    from gtag.models.runtime import read_manifest

    from .classic import refit_export
    from .export import update_manifest
    from .extract import extract

    notes = {}
    tr_feat = None
    for s in read_manifest(shipped_dir):
        if s.name == TRANSFER_MODEL:
            continue
        training = s.extra.get("training", {})
        base = {"name": s.name, "file": s.file, "kind": s.kind, "labels": list(s.labels),
                "sample_rate": s.sample_rate, "window_seconds": s.window_seconds, "hop_seconds": s.hop_seconds,
                "input_name": s.input_name, "feature_names": list(s.feature_names),
                "msd_labels": s.extra.get("msd_labels"), "training": {"fitted_on": "train"}}
        base = {k: v for k, v in base.items() if v is not None}
        if s.name in ("rf", "knn") and training.get("params"):
            if tr_feat is None:
                tr_feat = extract(train, labels, classic_cache, jobs=jobs, desc="train features (cached)")
            sha = refit_export(s.name, training["params"], training.get("seed", 0), tr_feat, models_dir / s.file,
                               {"labels": list(labels)}, jobs)
            update_manifest(models_dir, {**base, "sha256": sha})
            notes[s.name] = f"refitted on the train split with the shipped params {training['params']}"
        elif sorted(s.labels) != sorted(labels):  # e.g. the shipped cnn beside a retrain on other genres
            notes[s.name] = f"left out: its labels ({', '.join(s.labels)}) are not the dataset's"
        elif training.get("fitted_on") == "train":
            shutil.copy2(shipped_dir / s.file, models_dir / s.file)
            update_manifest(models_dir, {**base, "sha256": s.sha256})
            notes[s.name] = "shipped file (fitted on train only)"
        else:
            notes[s.name] = f"left out: shipped file fitted on {training.get('fitted_on')!r}, which includes valid"
    return notes


def leave_one_out(probs: Mapping[str, np.ndarray], y: np.ndarray, full: np.ndarray, labels: tuple[str, ...],
                  rounds: int = 20) -> dict[str, dict[str, Any]]:
    """What each model adds: for every model, the weights the same selection chooses *without* it
    and how that ensemble scores (a model whose removal costs nothing is not needed in the vote)."""
    out = {}
    for name in probs:
        others = {n: p for n, p in probs.items() if n != name}
        if not others:
            continue
        weights, _ = select_weights(others, y, rounds)
        out[name] = {"weights": weights, **_metrics(mix(others, weights), y, full, labels)}
    return out


def valid_probabilities(models_dir: Path, data_root: Path) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                                     np.ndarray, tuple[str, ...]]:
    """Track probabilities of every model of ``models_dir`` on the valid split, through gtag's own
    Predictor (decode, features, one ONNX call per model, window mean). Returns (model -> (n, labels)
    probabilities, y, full-clip mask, labels)."""
    from gtag.models import vote
    from gtag.models.runtime import load_models, read_manifest
    from gtag.predict.pipeline import Predictor

    ds, _, valid = train_valid(data_root)
    labels = ds.labels
    # Every model, not only those the current weights let vote (load_models' default).
    models = load_models(models_dir, [s.name for s in read_manifest(models_dir)], device="cpu")
    pred = Predictor(models)
    out: dict[str, list[np.ndarray]] = {m.spec.name: [] for m in models}
    for t in tqdm(valid, desc="valid tracks", unit="track"):
        p = pred.predict_file(t.path)
        for n in out:
            out[n].append(vote.align(p.models[n], p.labels, labels))
    y = np.array([labels.index(t.genre) for t in valid])
    full = np.array([t.variant != EXCERPT for t in valid])
    return {n: np.stack(v) for n, v in out.items()}, y, full, labels


# A model votes only if, on real music of GTZAN's genres (a real library's classical and rock
# folders, `gtag-train library-check` / musicnn-head's grouped CV), its top genre is right at least
# this often: a model that calls modern rock "classical" must not get a vote for winning on GTZAN
# valid, whose clips share the training clips' source.
REAL_MIN_RECALL = 0.5
REAL_FOLDERS = ("classical", "rock")


def real_music_gate(metrics: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """Per model (name -> its manifest ``metrics``): None when it may vote, else why not. Models
    without real-library figures may vote (nothing says otherwise)."""
    out: dict[str, str | None] = {}
    for name, m in metrics.items():
        lib = m.get("library_cv") or m.get("library") or {}
        bad = [f"{f} {lib[f]['called_by_folder_genre']:.2f}" for f in REAL_FOLDERS
               if isinstance(lib.get(f), dict) and lib[f].get("called_by_folder_genre", 1.0) < REAL_MIN_RECALL]
        out[name] = f"real-library recall below {REAL_MIN_RECALL}: {', '.join(bad)}" if bad else None
    return out


def blind_voters(current: Mapping[str, float], scored: Iterable[str]) -> list[str]:
    """Models that vote now (weight above 0) but could not be scored: with any of them the weights
    are kept as they are, since a vote chosen without a voter cannot be compared with the vote it
    would replace (dropping musicnn unseen would hand the vote to the GTZAN-only models)."""
    scored = set(scored)
    return sorted(n for n, w in current.items() if w > 0 and n not in scored)


def choose_ensemble(data_root: str | Path, out_dir: str | Path, run_dir: str | Path = "runs/ensemble",
                    transfer_dir: str | Path = "runs/transfer", classic_cache: str | Path = "runs/classic/cache",
                    rounds: int = 20, command: str = "") -> dict[str, Any]:
    """`gtag-train ensemble`: score train-only versions of the models of ``out_dir`` on valid (those
    it can make; the others are skipped, and said so), choose the weights, write them into
    ``out_dir/manifest.json`` (each scored entry's ``weight`` and ``ensemble``) and the report into
    ``run_dir/ensemble_metrics.json``. A model that votes but could not be scored keeps every
    weight as it is (``blind_voters``). Raises EnsembleError when no model can be scored."""
    from gtag.models.runtime import MANIFEST_NAME, read_manifest

    from .export import set_manifest_fields

    t0 = time.time()
    out_dir, run_dir, data_root = Path(out_dir), Path(run_dir), Path(data_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    models_dir = run_dir / "train_only"
    specs = read_manifest(out_dir)
    notes = build_train_only(models_dir, out_dir, data_root, Path(transfer_dir), Path(classic_cache))
    made = {s.name for s in read_manifest(models_dir)} if (models_dir / MANIFEST_NAME).is_file() else set()
    skipped = {s.name: notes.get(s.name, "left out: no train-only version") for s in specs if s.name not in made}
    for name, why in skipped.items():
        print(f"[ensemble] skipped {name}: {why.removeprefix('left out: ')}", flush=True)
    if not made:
        raise EnsembleError(f"no model of {out_dir} can be scored on the valid split"
                            + (f" ({'; '.join(f'{n}: {w}' for n, w in skipped.items())})" if skipped else ""))
    probs, y, full, labels = valid_probabilities(models_dir, data_root)
    previous = {s.name: s.weight for s in specs}
    blind = blind_voters(previous, probs)
    gate = real_music_gate({s.name: s.metrics for s in specs if s.name in probs})
    voters = {n: p for n, p in probs.items() if gate.get(n) is None} or probs
    names = list(probs)
    if blind:
        weights, trace = {n: previous.get(n, 0.0) for n in names}, []
    else:
        chosen, trace = select_weights(voters, y, rounds)
        weights = {n: chosen.get(n, 0.0) for n in names}
    report = {
        "tracks": int(len(y)), "full_clips": int(full.sum()), "rule": "greedy ensemble selection with "
        "replacement on valid track accuracy, then balanced accuracy, then log loss (training/ensemble.py)",
        "weights": weights, "trace": trace, "train_only_models": notes, "skipped": skipped,
        "kept_current_weights": (f"{', '.join(blind)} vote now but could not be scored: every weight kept"
                                 if blind else None),
        "real_music_gate": gate,
        "single": {n: _metrics(probs[n], y, full, labels) for n in names},
        "equal_weights": _metrics(mix(probs, dict.fromkeys(names, 1.0)), y, full, labels),
        # With a blind voter neither the current vote nor a kept one can be scored here.
        "previous_weights": {"weights": previous, **({} if blind else _metrics(
            mix(probs, {n: previous.get(n, 0.0) for n in names}), y, full, labels))},
        "chosen": None if blind else _metrics(mix(probs, weights), y, full, labels),
        "without": leave_one_out(probs, y, full, labels, rounds),
        "command": command, "seconds": round(time.time() - t0, 1),
    }
    np.savez_compressed(run_dir / "valid_track_probabilities.npz", y=y, full=full, labels=np.array(labels),
                        **{f"p_{n}": probs[n] for n in names})
    (run_dir / "ensemble_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    singles = ", ".join(f"{n} {report['single'][n]['track_accuracy']:.3f}" for n in names)
    if blind:
        print(f"[ensemble] valid track accuracy: {singles}; {report['kept_current_weights']} "
              "(make the missing train-only copies, e.g. `gtag-train transfer`, to choose again)", flush=True)
        return report
    summary = {"valid_track_accuracy": report["chosen"]["track_accuracy"],
               "valid_track_balanced_accuracy": report["chosen"]["track_balanced_accuracy"],
               "valid_full_clips_track_accuracy": report["chosen"]["full_clips_track_accuracy"],
               "best_single": max(names, key=lambda n: report["single"][n]["track_accuracy"]),
               "equal_weights_valid_track_accuracy": report["equal_weights"]["track_accuracy"],
               "rule": report["rule"], "tracks": report["tracks"]}
    set_manifest_fields(out_dir, {n: {"weight": round(weights[n], 4), "ensemble": summary} for n in names})
    print(f"[ensemble] valid track accuracy: {singles}; equal weights {report['equal_weights']['track_accuracy']:.3f}; "
          f"chosen {weights} {report['chosen']['track_accuracy']:.3f}", flush=True)
    return report
