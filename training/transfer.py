"""Transfer from musicnn (pretrained on the Million Song Dataset) to GTZAN: `gtag-train transfer`.

Our GTZAN share is small (about 200 full clips), so a model trained from scratch learns the clips
rather than the genres. musicnn's MSD weights (converted by ``training.musicnn``) give every 3 s
window a representation learned from a million songs; only a small head is fitted here. This is
the command that makes ``musicnn.onnx`` from the converted weights (backbone export, dead-filter
pruning, CPU variant, checks against TensorFlow: ``training.musicnn_onnx``); `gtag-train
musicnn-head` then refits the shipped head on GTZAN + a real library on top of that backbone.

Protocol (the same rules as every other gtag model):

1. Embeddings of every window of every track (``gtag.audio.musicnn_input.musicnn_patches``, the exact input gtag
   computes at tag time, windows starting where gtag's windows start): the back end's pooled
   features (1506: max and mean over time of the front and mid end), computed by the torch port and
   cached under ``runs/``.
2. The head is ``gtag.models.head``'s (standardisation + L2 logistic regression, class- and track-balanced
   window weights: every track counts once whatever its number of windows, every genre equally),
   the very code `gtag learn` and `gtag-train musicnn-head` fit; its C is chosen by grouped CV (by
   track) on the *train* split, then it is scored on *valid*. Earlier releases also compared a head
   on the 200-d penultimate layer (0.732 valid track accuracy) and fine-tuning the back end's dense
   layers (0.748) against this one (0.756); neither was ever chosen, so both are gone.
3. The head is refitted on ``final_fit`` (default train+valid, as the classical models) and exported
   with the backbone as one ONNX graph: input ``musicnn_mel`` ``(batch, 187, 96)``, outputs
   ``probabilities`` ``(batch, 10)``, ``ood_distance``, ``msd_tags`` ``(batch, 50)`` (musicnn's own
   MSD tag sigmoids, untouched by the head) and ``embedding`` ``(batch, 1506)``. Its CPU variant
   (``CPU_VARIANT_FILE``: the timbral convolutions in int8, calibrated on training patches) is
   written beside it. Valid and CV figures count the windows gtag votes with at tag time (every
   ``TAG_HOP_SECONDS``).
4. The train-only export goes to ``run_dir/valid_models``: `gtag-train ensemble` scores it there
   (``training.ensemble``, the one place that combines models). The speed of the musicnn path
   against the CNN path is measured by ``benchmarks/bench_musicnn.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtag.audio import decode as audio
from gtag.audio import musicnn_input
from gtag.models import head as heads
from gtag.models.runtime import KIND_MUSICNN

from .data import Track, train_valid
from .evaluate import evaluate_windows, save_confusion_png
from .export import training_record, update_manifest, write_musicnn_licence
from .musicnn import MSD_LABELS, N_FRAMES, N_MELS, load_pretrained
from .musicnn_onnx import INPUT_NAME, MAX_BATCH, calibration_patches, export

EMBEDDING_CACHE_VERSION = "musicnn-emb-v1"  # bump when musicnn_patches or the embedding changes
MODEL_NAME = "musicnn"
# Hop between musicnn's windows at tag time (manifest "hop_seconds"): non-overlapping 3 s patches,
# musicnn's own default (its extractor's input_overlap=False). Embeddings for training are taken
# every 1.5 s (twice the examples); on the valid split, voting every 3 s scored as every 1.5 s
# (0.756 vs 0.748 track accuracy) for half the cost. Valid and CV figures use the tag-time hop.
TAG_HOP_SECONDS = 3.0
EMBED_HOP = audio.HOP_SAMPLES  # 1.5 s: training windows
TAG_EVERY = int(round(TAG_HOP_SECONDS * audio.SAMPLE_RATE)) // EMBED_HOP  # every 2nd training window
assert TAG_EVERY * EMBED_HOP == int(round(TAG_HOP_SECONDS * audio.SAMPLE_RATE))
EXCERPT = "excerpt_2to3s_gainnorm"
HEAD = "logreg-pooled (gtag.models.head)"


@dataclass(frozen=True)
class TransferOptions:
    """Knobs of `gtag-train transfer`."""

    folds: int = 5  # grouped CV folds on the train split (C) and on train+valid (the CV estimate)
    seed: int = 0
    threads: int = 1  # torch threads for the embedding pass (the machine is shared)
    batch: int = 32  # windows per forward pass when embedding
    logreg_c: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    final_fit: str = "train+valid"  # data of the shipped head: "train" or "train+valid"


@dataclass(frozen=True)
class Embeddings:
    """musicnn's pooled features of every window of some tracks."""

    pooled: np.ndarray  # (n_windows, 1706) float32: ``embedding``, what the exported backbone outputs
    y: np.ndarray  # (n_windows,) label index
    groups: np.ndarray  # (n_windows,) index into ``tracks``
    tracks: tuple[Track, ...]
    labels: tuple[str, ...]

    def take(self, mask: np.ndarray) -> "Embeddings":
        """The windows of ``mask`` (groups still index ``tracks``)."""
        return Embeddings(self.pooled[mask], self.y[mask], self.groups[mask], self.tracks, self.labels)

    def every(self, k: int) -> np.ndarray:
        """Mask of every ``k``-th window of each track: exactly the windows a ``k`` times coarser
        hop gives (``gtag.audio.decode.window_starts`` is an arange from 0)."""
        index = np.zeros(len(self.groups), dtype=np.int64)
        for g in np.unique(self.groups):
            at = np.flatnonzero(self.groups == g)
            index[at] = np.arange(at.size)
        return index % k == 0

    def __add__(self, other: "Embeddings") -> "Embeddings":
        return Embeddings(np.concatenate([self.pooled, other.pooled]), np.concatenate([self.y, other.y]),
                          np.concatenate([self.groups, other.groups + len(self.tracks)]),
                          self.tracks + other.tracks, self.labels)


def embedding(reps) -> np.ndarray:
    """The head's input from musicnn's cached representations: pooled features (1506) then the
    penultimate layer (200), as ``musicnn_onnx.backbone_module`` outputs ``embedding``."""
    return np.hstack([np.asarray(reps["pooled"], np.float32), np.asarray(reps["penultimate"], np.float32)])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embed_tracks(tracks: list[Track] | tuple[Track, ...], labels: tuple[str, ...], weights: Path,
                 cache_dir: Path | None, hop: int = EMBED_HOP, threads: int = 1, batch: int = 32,
                 desc: str = "musicnn embeddings") -> Embeddings:
    """Embeddings of every window of ``tracks``, exactly as gtag would window them at tag time
    (decode at 22,050 Hz, ``gtag.audio.musicnn_input.musicnn_patches``); cached per file under ``cache_dir``
    (key: the audio's sha256, the weights' sha256, the hop and ``EMBEDDING_CACHE_VERSION``)."""
    import torch

    torch.set_num_threads(threads)
    model = None
    wkey = _sha256(Path(weights))[:16]
    if cache_dir:
        cache_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for t in tqdm(tracks, desc=desc, unit="track"):
        cached = cache_dir / f"{EMBEDDING_CACHE_VERSION}-{hop}-{wkey}-{_sha256(t.path)[:32]}.npz" if cache_dir else None
        if cached and cached.is_file():
            with np.load(cached, allow_pickle=False) as z:
                parts.append(embedding(z))
            continue
        if model is None:
            model = load_pretrained(weights)
            model.drop_dead_filters()  # the same embeddings (float32 rounding aside), 2.6x faster
        x = musicnn_input.musicnn_patches(audio.load_audio(t.path).samples, audio.SAMPLE_RATE, hop)
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                e = model.embed(torch.from_numpy(x[i:i + batch]))
                outs.append({k: v.numpy() for k, v in e.items()})
        # every representation is cached (the file format of earlier releases), pooled + penultimate used
        d = {k: np.concatenate([o[k] for o in outs]).astype(np.float32) for k in outs[0]}
        if cached:
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **d)
            os.replace(tmp, cached)
        parts.append(embedding(d))
    index = {g: i for i, g in enumerate(labels)}
    return Embeddings(
        pooled=np.concatenate(parts),
        y=np.concatenate([np.full(len(p), index[t.genre]) for p, t in zip(parts, tracks)]),
        groups=np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]),
        tracks=tuple(tracks),
        labels=labels,
    )


# --------------------------------------------------------------------------------------------------
# The head (gtag.models.head) and its one hyper-parameter
# --------------------------------------------------------------------------------------------------


def fit(e: Embeddings, C: float) -> heads.LinearHead:
    """``gtag.models.head.fit_head`` on the pooled features, windows grouped by track."""
    return heads.fit_head(e.pooled, e.y, e.groups, e.labels, C=C)


def grouped_cv(e: Embeddings, C: float, folds: int, seed: int, every: int = 1) -> dict[str, Any]:
    """Out-of-fold window probabilities, folds grouped by track (stratified); track- and window-level
    metrics on every ``every``-th window of each track (the tag-time hop; fitting uses all windows)."""
    from sklearn.model_selection import StratifiedGroupKFold

    oof = np.zeros((len(e.y), len(e.labels)))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in cv.split(e.pooled, e.y, e.groups):
        assert not set(e.groups[tr]) & set(e.groups[te])  # a track is never on both sides
        oof[te] = fit(e.take(tr), C).predict_proba(e.pooled[te])
    m = e.every(every)
    return evaluate_windows(oof[m], e.y[m], e.groups[m], e.labels)


def choose_c(tr: Embeddings, opts: TransferOptions) -> tuple[float, list[dict[str, Any]]]:
    """C by grouped CV on the train split: best track balanced accuracy, the smaller C on ties."""
    search = []
    for C in opts.logreg_c:
        m = grouped_cv(tr, C, opts.folds, opts.seed)
        search.append({"C": C, "cv_track_balanced_accuracy": m["track"]["balanced_accuracy"],
                       "cv_track_accuracy": m["track"]["accuracy"]})
        print(f"  C={C}: CV track bal.acc {m['track']['balanced_accuracy']:.3f}", flush=True)
    return max(search, key=lambda s: (s["cv_track_balanced_accuracy"], -s["C"]))["C"], search


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")}


def train_transfer(data_root: str | Path, out_dir: str | Path, run_dir: str | Path = "runs/transfer",
                   weights: str | Path = "runs/musicnn/musicnn_msd.npz", opts: TransferOptions = TransferOptions(),
                   command: str = "", fixture: str | Path | None = None) -> dict[str, Any]:
    """`gtag-train transfer`: embeddings, C search, validation, export of musicnn + head to
    ``out_dir/musicnn.onnx`` (and its CPU variant) with its manifest entry, and of the train-only
    model to ``run_dir/valid_models``; returns the report (also in ``run_dir/transfer_metrics.json``)."""
    import torch

    t0 = time.time()
    torch.manual_seed(opts.seed)
    out_dir, run_dir, weights = Path(out_dir), Path(run_dir), Path(weights)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: convert musicnn first (gtag-train musicnn-convert)")
    fixture = Path(fixture) if fixture and Path(fixture).is_file() else None
    ds, train, valid = train_valid(data_root)
    labels = ds.labels
    cache = run_dir / "cache"
    tr = embed_tracks(train, labels, weights, cache, threads=opts.threads, batch=opts.batch, desc="train embeddings")
    va = embed_tracks(valid, labels, weights, cache, threads=opts.threads, batch=opts.batch, desc="valid embeddings")
    torch.set_num_threads(opts.threads)

    # 2. C by grouped CV on train, then the train-only head scored on valid (at the tag-time hop)
    print(f"grouped {opts.folds}-fold search of C on the training split…", flush=True)
    C, search = choose_c(tr, opts)
    head = fit(tr, C)
    p_valid = head.predict_proba(va.pooled)
    tag_va = va.every(TAG_EVERY)
    full_va = np.array([va.tracks[g].variant != EXCERPT for g in va.groups]) & tag_va
    valid_m = evaluate_windows(p_valid[tag_va], va.y[tag_va], va.groups[tag_va], labels)
    valid_full = evaluate_windows(p_valid[full_va], va.y[full_va], va.groups[full_va], labels)
    print(f"C={C}: valid track acc {valid_m['track']['accuracy']:.3f} (bal. "
          f"{valid_m['track']['balanced_accuracy']:.3f}), window acc {valid_m['window']['accuracy']:.3f}", flush=True)
    save_confusion_png(valid_m["track"]["confusion"], labels, run_dir / "musicnn_valid_track_confusion.png",
                       "musicnn transfer track level (valid)")
    both = tr + va
    cv_all = grouped_cv(both, C, opts.folds, opts.seed, every=TAG_EVERY)
    save_confusion_png(cv_all["track"]["confusion"], labels, run_dir / "musicnn_cv_track_confusion.png",
                       "musicnn transfer track level (CV train+valid)")

    # 3. export: the train-only model (scored by gtag-train ensemble) and the final one (shipped)
    meta = {"labels": list(labels), "kind": KIND_MUSICNN, "msd_labels": list(MSD_LABELS),
            "sample_rate": audio.SAMPLE_RATE, "window_seconds": audio.WINDOW_SECONDS,
            "musicnn_sample_rate": musicnn_input.MUSICNN_SAMPLE_RATE, "head": {"head": HEAD, "C": C},
            "licence": "musicnn weights (c) Music Technology Group, Universitat Pompeu Fabra 2019, ISC; "
                       "see MUSICNN_LICENSE.md"}
    probe = np.concatenate([musicnn_input.musicnn_patches(audio.load_audio(t.path).samples) for t in valid[:12]])
    calibration = calibration_patches(train, opts.seed, EMBED_HOP)
    valid_models = run_dir / "valid_models"
    if valid_models.exists():
        shutil.rmtree(valid_models)
    valid_models.mkdir(parents=True)
    train_sha, train_check, train_variant = export(weights, head, valid_models / "musicnn.onnx", meta,
                                                   calibration, probe, fixture)
    final = both if opts.final_fit == "train+valid" else tr
    final_head = fit(final, C)
    path = out_dir / "musicnn.onnx"
    sha, onnx_check, cpu_variant = export(weights, final_head, path, meta, calibration, probe, fixture)
    report: dict[str, Any] = {
        "data": ds.summary(), "options": asdict(opts), "head": {"head": HEAD, "C": C}, "search": search,
        "valid": valid_m, "valid_full_clips": valid_full, "cv_train_valid": cv_all, "onnx_check": onnx_check,
        "onnx_check_train_only": train_check, "cpu_variant": cpu_variant, "cpu_variant_train_only": train_variant,
        "onnx_bytes": path.stat().st_size}

    # 4. the train-only model's entry, for gtag-train ensemble
    update_manifest(valid_models, _entry("musicnn.onnx", train_sha, labels) | {
        "training": {"fitted_on": "train"}, "cpu_variant": train_variant})
    write_musicnn_licence(out_dir, weights.parent / "MUSICNN_LICENSE.md")
    _manifest_entry(out_dir, path, sha, labels, report, ds, opts, command, final, C)
    report["seconds"] = round(time.time() - t0, 1)
    (run_dir / "transfer_metrics.json").write_text(json.dumps(report, indent=2, default=_json_default))
    return report


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _entry(file: str, sha: str, labels: tuple[str, ...]) -> dict[str, Any]:
    """What gtag needs to run the model (both the shipped and the train-only entry)."""
    return {
        "name": MODEL_NAME,
        "file": file,
        "sha256": sha,
        "kind": KIND_MUSICNN,
        "description": f"musicnn (pretrained on the Million Song Dataset, Pons & Serra 2019) + GTZAN head ({HEAD})",
        "input_name": INPUT_NAME,
        "input": {"shape": [None, N_FRAMES, N_MELS], "dtype": "float32",
                  "build": "gtag.audio.musicnn_input.musicnn_patches(samples, 22050, hop)",
                  "note": "gtag feeds 22,050 Hz audio; musicnn_patches resamples it to 16 kHz internally "
                          "(soxr HQ) and computes log10(1 + 10000 mel) with n_fft 512, hop 256, 96 mels, "
                          "187 frames (3 s) per window, windows starting where gtag's windows start",
                  "internal_sample_rate": musicnn_input.MUSICNN_SAMPLE_RATE},
        "output": "probabilities",
        "outputs": {"probabilities": f"(batch, {len(labels)}) softmax over the GTZAN genres",
                    "ood_distance": "(batch,) distance to the nearest genre's mean in a whitened projection",
                    "msd_tags": "(batch, 50) musicnn's MSD tag sigmoids, in msd_labels order",
                    "embedding": "(batch, 1706) the backbone's pooled features and penultimate layer (what heads read)"},
        "labels": list(labels),
        "msd_labels": list(MSD_LABELS),
        "sample_rate": audio.SAMPLE_RATE,
        "window_seconds": audio.WINDOW_SECONDS,
        "hop_seconds": TAG_HOP_SECONDS,  # see training.transfer.TAG_HOP_SECONDS
        "max_batch": MAX_BATCH,  # windows per ONNX Runtime call (bounded activation memory)
        # no "weight": only `gtag-train ensemble` sets vote weights (training.export.update_manifest)
    }


def _manifest_entry(out_dir, path, sha, labels, report, ds, opts, command, final, C) -> None:
    v, cv = report["valid"], report["cv_train_valid"]
    entry = _entry(path.name, sha, labels) | {
        "metrics": {
            "valid_track": _summary(v["track"]) | {"per_genre": v["track"]["per_genre"]},
            "valid_track_full_clips": _summary(report["valid_full_clips"]["track"]),
            "valid_window": _summary(v["window"]),
            "cv_track": _summary(cv["track"]),
            "head_search": report["search"],
            "note": "valid_*: head fitted on the train split only, measured on the held-out valid tracks "
                    "with the float model, windows every 3 s as at tag time "
                    "(valid_track_full_clips: without the 2-3 s excerpts); C was chosen by grouped CV on "
                    "train; cv_track: 5-fold CV grouped by track over train+valid.",
        },
        "training": training_record(ds, final.tracks, len(final.y), opts.final_fit, opts.seed, command,
                                    head={"head": HEAD, "C": C},
                                    backbone="musicnn MSD_musicnn (musicnn-0.1.0 wheel), frozen"),
        "licence": "musicnn weights: ISC, (c) Music Technology Group, Universitat Pompeu Fabra 2019; "
                   "see MUSICNN_LICENSE.md",
        "onnx_check": report["onnx_check"],
        "cpu_variant": report["cpu_variant"],
    }
    update_manifest(out_dir, entry)
