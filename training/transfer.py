"""Transfer from musicnn (pretrained on the Million Song Dataset) to GTZAN: a genre head on its embeddings.

Our GTZAN share is small (about 200 full clips), so a model trained from scratch learns the clips
rather than the genres. musicnn's MSD weights (converted by ``training.musicnn``) give every 3 s
window a representation learned from a million songs; only a small head is fitted here.

Protocol (the same rules as every other gtag model):

1. Embeddings of every window of every track (``gtag.features.musicnn_patches``, the exact input gtag
   computes at tag time, windows starting where gtag's windows start), cached under ``runs/``:
   the back end's pooled features (1506: max and mean over time of the front and mid end), the
   penultimate layer (200) and the MSD tag logits.
2. Candidate heads, each fitted on the *train* split with class- and track-balanced weights (every
   track counts once whatever its number of windows; every genre counts equally), its one
   hyper-parameter chosen by 5-fold cross-validation grouped by track on the train split:
   - ``logreg-penultimate``: standardised logistic regression on the 200-d penultimate layer;
   - ``logreg-pooled``: the same on the 1506-d pooled features;
   - ``finetune-top``: the pretrained back end (BN, dense 1506->200, BN; its BN statistics frozen)
     fine-tuned together with a new linear genre layer, on the cached pooled features (the
     convolutional front and mid end stay frozen).
3. The head is *chosen on validation*: best track-level accuracy (windows voted as gtag votes), ties
   broken by balanced accuracy, then by simplicity. Every candidate's figures are reported.
4. The chosen head is refitted on ``final_fit`` (default train+valid, as the classical models) and
   exported with the backbone as one ONNX graph: input ``musicnn_mel`` ``(batch, 187, 96)``, outputs
   ``probabilities`` ``(batch, 10)`` (softmax over GTZAN genres) and ``msd_tags`` ``(batch, 50)``
   (musicnn's own MSD tag sigmoids, untouched by the head). Its CPU variant (``CPU_VARIANT_FILE``:
   the timbral convolutions in int8, calibrated on training patches) is written beside it, with its
   agreement with the float model in the manifest (``cpu_variant``). Valid and CV figures count the
   windows gtag votes with at tag time (every ``TAG_HOP_SECONDS``).
5. Ensemble check on validation, through gtag's own ``Predictor``: train-only versions of every model
   (RF/k-NN refitted on the train split with their shipped hyper-parameters, CNN/WaveNet when their
   shipped file was fitted on train only, and the transfer model), track accuracy with and without
   the transfer model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from gtag import audio, features
from gtag.models import KIND_MUSICNN

from .data import Track, train_valid
from .evaluate import evaluate_windows, save_confusion_png
from .musicnn import MSD_LABELS, N_FRAMES, N_MELS, load_pretrained

EMBEDDING_CACHE_VERSION = "musicnn-emb-v1"  # bump when musicnn_patches or the embedding changes
MODEL_NAME = "musicnn"
INPUT_NAME = "musicnn_mel"
# Hop between musicnn's windows at tag time (manifest "hop_seconds"): non-overlapping 3 s patches,
# musicnn's own default (its extractor's input_overlap=False). Embeddings for training are taken
# every 1.5 s (twice the examples); on the valid split, voting every 3 s scored as every 1.5 s
# (0.756 vs 0.748 track accuracy) for half the cost. Valid and CV figures use the tag-time hop.
TAG_HOP_SECONDS = 3.0
EMBED_HOP = audio.HOP_SAMPLES  # 1.5 s: training windows
TAG_EVERY = int(round(TAG_HOP_SECONDS * audio.SAMPLE_RATE)) // EMBED_HOP  # every 2nd training window
assert TAG_EVERY * EMBED_HOP == int(round(TAG_HOP_SECONDS * audio.SAMPLE_RATE))
# The CPU variant (manifest "cpu_variant"): the two timbral convolutions, about half of musicnn's time
# on a CPU (its dead filters skipped), in int8 (static QDQ quantisation, per-channel weights, ranges
# calibrated on training patches). Weights use 7 bits (reduce_range) so CPUs without VNNI cannot
# saturate int16 sums.
CPU_VARIANT_FILE = "musicnn_cpu.onnx"
QUANTIZED_SCOPES = ("/live/timbral_",)  # ONNX node-name prefix of the timbral branches' layers (live filters)
# Windows per ONNX Runtime call at tag time (manifest "max_batch"): musicnn's activations take ~30 MB
# per window; batches of 8 run as fast per window as one big batch (measured: 119 windows of a 3-min
# track in one call: 8 GB peak RSS and 6x slower; in chunks of 8: 0.8 GB; speed per window as in
# the manifest's "speed" block).
MAX_BATCH = 8
EXCERPT = "excerpt_2to3s_gainnorm"


@dataclass(frozen=True)
class TransferOptions:
    """Knobs of `gtag-train transfer`."""

    heads: tuple[str, ...] = ("logreg-penultimate", "logreg-pooled", "finetune-top")
    folds: int = 5  # grouped CV folds on the train split (hyper-parameters) and train+valid (weight)
    seed: int = 0
    threads: int = 1  # torch threads for the embedding pass (the machine is shared)
    batch: int = 32  # windows per forward pass when embedding
    logreg_c: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    # Standardising divides by each feature's spread, floored at this fraction of the median spread:
    # a few pooled channels are dead (constant up to float noise, spread ~1e-14) and unfloored their
    # float32 noise would be blown up to dominate the logits (and differ between torch and ONNX).
    scale_floor: float = 0.01
    finetune_epochs: tuple[int, ...] = (5, 10, 20, 40)  # checkpoints compared by grouped CV
    finetune_lr: float = 1e-3  # new genre layer; the pretrained dense layer gets a tenth of it
    finetune_weight_decay: float = 1e-2
    final_fit: str = "train+valid"  # data of the shipped head: "train" or "train+valid"
    ensemble_check: bool = True  # run the train-only ensemble through gtag's Predictor on valid
    speed_check: bool = True  # time the musicnn path against the CNN path (one core)


@dataclass(frozen=True)
class Embeddings:
    """musicnn representations of every window of some tracks."""

    pooled: np.ndarray  # (n_windows, 1506) float32
    penultimate: np.ndarray  # (n_windows, 200) float32
    logits: np.ndarray  # (n_windows, 50) MSD tag logits
    y: np.ndarray  # (n_windows,) label index
    groups: np.ndarray  # (n_windows,) index into ``tracks``
    tracks: tuple[Track, ...]
    labels: tuple[str, ...]

    def take(self, mask: np.ndarray) -> "Embeddings":
        """The windows of ``mask`` (groups still index ``tracks``)."""
        return Embeddings(self.pooled[mask], self.penultimate[mask], self.logits[mask], self.y[mask],
                          self.groups[mask], self.tracks, self.labels)

    def every(self, k: int) -> np.ndarray:
        """Mask of every ``k``-th window of each track: exactly the windows a ``k`` times coarser
        hop gives (``gtag.audio.window_starts`` is an arange from 0)."""
        index = np.zeros(len(self.groups), dtype=np.int64)
        for g in np.unique(self.groups):
            at = np.flatnonzero(self.groups == g)
            index[at] = np.arange(at.size)
        return index % k == 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embed_tracks(tracks: list[Track] | tuple[Track, ...], labels: tuple[str, ...], weights: Path,
                 cache_dir: Path | None, hop: int = audio.HOP_SAMPLES, threads: int = 1, batch: int = 32,
                 desc: str = "musicnn embeddings") -> Embeddings:
    """Embeddings of every window of ``tracks``, exactly as gtag would window them at tag time
    (decode at 22,050 Hz, ``gtag.features.musicnn_patches``); cached per file under ``cache_dir``
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
                parts.append({k: z[k] for k in z.files})
            continue
        if model is None:
            model = load_pretrained(weights)
            model.drop_dead_filters()  # the same embeddings (float32 rounding aside), 2.6x faster
        x = features.musicnn_patches(audio.load_audio(t.path).samples, audio.SAMPLE_RATE, hop)
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                e = model.embed(torch.from_numpy(x[i:i + batch]))
                outs.append({k: v.numpy() for k, v in e.items()})
        d = {k: np.concatenate([o[k] for o in outs]).astype(np.float32) for k in outs[0]}
        if cached:
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **d)
            os.replace(tmp, cached)
        parts.append(d)
    index = {g: i for i, g in enumerate(labels)}
    return Embeddings(
        pooled=np.concatenate([p["pooled"] for p in parts]),
        penultimate=np.concatenate([p["penultimate"] for p in parts]),
        logits=np.concatenate([p["logits"] for p in parts]),
        y=np.concatenate([np.full(len(p["pooled"]), index[t.genre]) for p, t in zip(parts, tracks)]),
        groups=np.concatenate([np.full(len(p["pooled"]), i) for i, p in enumerate(parts)]),
        tracks=tuple(tracks),
        labels=labels,
    )


def _concat(a: Embeddings, b: Embeddings) -> Embeddings:
    return Embeddings(np.concatenate([a.pooled, b.pooled]), np.concatenate([a.penultimate, b.penultimate]),
                      np.concatenate([a.logits, b.logits]), np.concatenate([a.y, b.y]),
                      np.concatenate([a.groups, b.groups + len(a.tracks)]), a.tracks + b.tracks, a.labels)


def balanced_weights(y: np.ndarray, groups: np.ndarray, n_labels: int) -> np.ndarray:
    """Window weights: each track weighs the same whatever its window count, each genre the same
    whatever its track count (mean weight 1)."""
    per_track = 1.0 / np.bincount(groups)[groups]
    track_genre = {g: y[groups == g][0] for g in np.unique(groups)}
    tracks_per_genre = np.bincount(list(track_genre.values()), minlength=n_labels).astype(float)
    genre_w = len(track_genre) / (n_labels * np.maximum(tracks_per_genre, 1))
    w = per_track * genre_w[y]
    return w / w.mean()


# --------------------------------------------------------------------------------------------------
# Heads: each is a small torch module from (pooled, penultimate) to genre logits, so it exports
# with the backbone as one graph.
# --------------------------------------------------------------------------------------------------


class LogRegHead:
    """StandardScaler (spread floored, see ``TransferOptions.scale_floor``) + multinomial logistic
    regression on one representation."""

    def __init__(self, source: str, C: float, seed: int, scale_floor: float = 0.01):
        self.source, self.C, self.seed, self.scale_floor = source, C, seed, scale_floor

    def fit(self, e: Embeddings) -> "LogRegHead":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        X = getattr(e, self.source)
        self.scaler = StandardScaler().fit(X)
        self.scaler.scale_ = np.maximum(self.scaler.scale_, self.scale_floor * np.median(self.scaler.scale_))
        self.clf = LogisticRegression(C=self.C, max_iter=3000, random_state=self.seed)
        self.clf.fit(self.scaler.transform(X), e.y, sample_weight=balanced_weights(e.y, e.groups, len(e.labels)))
        self.n_labels = len(e.labels)
        return self

    def predict_proba(self, e: Embeddings) -> np.ndarray:
        p = self.clf.predict_proba(self.scaler.transform(getattr(e, self.source)))
        out = np.zeros((len(p), self.n_labels))
        out[:, self.clf.classes_] = p
        return out

    def torch_module(self):
        """``(pooled, penultimate) -> logits``: ``linear((x - mean) / scale)``. The scaler is kept
        as its own subtract-and-multiply rather than folded into the linear layer: folded, the large
        means of the pooled features cancel in float32 and cost ~1e-4 in the logits."""
        import torch
        from torch import nn

        assert len(self.clf.classes_) == self.n_labels, "every genre must be in the training data"
        lin = nn.Linear(self.clf.coef_.shape[1], self.clf.coef_.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(self.clf.coef_.astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(self.clf.intercept_.astype(np.float32)))
        mean = torch.from_numpy(self.scaler.mean_.astype(np.float32))
        inv_scale = torch.from_numpy((1.0 / self.scaler.scale_).astype(np.float32))
        use_pooled = self.source == "pooled"

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("mean", mean)
                self.register_buffer("inv_scale", inv_scale)
                self.linear = lin

            def forward(self, pooled, penultimate):
                x = pooled if use_pooled else penultimate
                return self.linear((x - self.mean) * self.inv_scale)

        return Head().eval()

    def describe(self) -> dict[str, Any]:
        return {"head": f"logreg-{self.source}", "C": self.C, "scale_floor": self.scale_floor}


class FineTuneHead:
    """The pretrained back end (BN 1506, dense 1506->200 + ReLU, BN 200), fine-tuned with a new
    dropout + linear genre layer on the cached pooled features. BN statistics stay the pretrained
    ones (eval mode); the dense layer learns at a tenth of the new layer's rate."""

    def __init__(self, weights: Path, epochs: int, opts: TransferOptions, checkpoints: tuple[int, ...] = ()):
        self.weights, self.epochs, self.opts = weights, epochs, opts
        self.checkpoints = checkpoints or (epochs,)

    def _build(self, n_labels: int):
        import torch
        from torch import nn

        backbone = load_pretrained(self.weights)

        class Top(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn_pool = copy.deepcopy(backbone.bn_pool)
                self.dense = copy.deepcopy(backbone.dense)
                self.bn_dense = copy.deepcopy(backbone.bn_dense)
                self.dropout = nn.Dropout(0.5)
                self.genre = nn.Linear(self.dense.out_features, n_labels)

            def forward(self, pooled, penultimate=None):
                h = self.dropout(self.bn_pool(pooled))
                h = self.bn_dense(torch.relu(self.dense(h)))
                return self.genre(self.dropout(h))

            def train(self, mode: bool = True):
                super().train(mode)
                self.bn_pool.eval()  # frozen statistics: GTZAN batches are too small to re-estimate them
                self.bn_dense.eval()
                return self

        return Top()

    def fit(self, e: Embeddings, eval_sets: list[Embeddings] = ()) -> "FineTuneHead":
        """Train; with ``eval_sets``, record their window probabilities at each checkpoint epoch."""
        import torch

        torch.manual_seed(self.opts.seed)
        self.n_labels = len(e.labels)
        self.model = self._build(self.n_labels)
        X = torch.from_numpy(e.pooled)
        y = torch.from_numpy(e.y.astype(np.int64))
        w = torch.from_numpy(balanced_weights(e.y, e.groups, self.n_labels).astype(np.float32))
        pretrained = [p for n, p in self.model.named_parameters() if not n.startswith("genre")]
        opt = torch.optim.AdamW([{"params": pretrained, "lr": self.opts.finetune_lr / 10},
                                 {"params": self.model.genre.parameters(), "lr": self.opts.finetune_lr}],
                                weight_decay=self.opts.finetune_weight_decay)
        gen = torch.Generator().manual_seed(self.opts.seed)
        self.recorded: dict[int, list[np.ndarray]] = {}
        for epoch in range(1, max(self.checkpoints) + 1):
            self.model.train()
            for idx in torch.randperm(len(y), generator=gen).split(64):
                loss = (torch.nn.functional.cross_entropy(self.model(X[idx]), y[idx], reduction="none") * w[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            if epoch in self.checkpoints and eval_sets:
                self.recorded[epoch] = [self.predict_proba(s) for s in eval_sets]
        return self

    def predict_proba(self, e: Embeddings) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(e.pooled)), dim=1).numpy().astype(np.float64)

    def torch_module(self):
        return self.model.eval()

    def describe(self) -> dict[str, Any]:
        return {"head": "finetune-top", "epochs": self.epochs, "lr": self.opts.finetune_lr,
                "weight_decay": self.opts.finetune_weight_decay}


def _folds(e: Embeddings, folds: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in cv.split(e.pooled, e.y, e.groups):
        assert not set(e.groups[tr]) & set(e.groups[te])  # a track is never on both sides
        yield tr, te


def grouped_cv(make: Callable[[], Any], e: Embeddings, folds: int, seed: int, every: int = 1) -> dict[str, Any]:
    """Out-of-fold window probabilities, folds grouped by track; track- and window-level metrics
    on every ``every``-th window of each track (the tag-time hop; fitting uses all windows)."""
    oof = np.zeros((len(e.y), len(e.labels)))
    for tr, te in _folds(e, folds, seed):
        oof[te] = make().fit(e.take(tr)).predict_proba(e.take(te))
    m = e.every(every)
    return evaluate_windows(oof[m], e.y[m], e.groups[m], e.labels)


def _choose_logreg(source: str, tr: Embeddings, opts: TransferOptions) -> tuple[LogRegHead, list[dict]]:
    search = []
    for C in opts.logreg_c:
        m = grouped_cv(lambda: LogRegHead(source, C, opts.seed, opts.scale_floor), tr, opts.folds, opts.seed)
        search.append({"C": C, "cv_track_balanced_accuracy": m["track"]["balanced_accuracy"],
                       "cv_track_accuracy": m["track"]["accuracy"]})
        print(f"  logreg-{source} C={C}: CV track bal.acc {m['track']['balanced_accuracy']:.3f}", flush=True)
    best = max(search, key=lambda s: (s["cv_track_balanced_accuracy"], -s["C"]))
    return LogRegHead(source, best["C"], opts.seed, opts.scale_floor), search


def _choose_finetune(weights: Path, tr: Embeddings, opts: TransferOptions) -> tuple[FineTuneHead, list[dict]]:
    """Epochs by grouped CV on train: every fold trains once and is scored at each checkpoint."""
    oof = {ep: np.zeros((len(tr.y), len(tr.labels))) for ep in opts.finetune_epochs}
    for f_tr, f_te in _folds(tr, opts.folds, opts.seed):
        h = FineTuneHead(weights, max(opts.finetune_epochs), opts, opts.finetune_epochs)
        h.fit(tr.take(f_tr), [tr.take(f_te)])
        for ep in opts.finetune_epochs:
            oof[ep][f_te] = h.recorded[ep][0]
    search = []
    for ep in opts.finetune_epochs:
        m = evaluate_windows(oof[ep], tr.y, tr.groups, tr.labels)
        search.append({"epochs": ep, "cv_track_balanced_accuracy": m["track"]["balanced_accuracy"],
                       "cv_track_accuracy": m["track"]["accuracy"]})
        print(f"  finetune-top {ep} epochs: CV track bal.acc {m['track']['balanced_accuracy']:.3f}", flush=True)
    best = max(search, key=lambda s: (s["cv_track_balanced_accuracy"], -s["epochs"]))
    return FineTuneHead(weights, best["epochs"], opts), search


def _make_like(head, weights: Path, opts: TransferOptions):
    if isinstance(head, LogRegHead):
        return lambda: LogRegHead(head.source, head.C, opts.seed, opts.scale_floor)
    return lambda: FineTuneHead(weights, head.epochs, opts)


# --------------------------------------------------------------------------------------------------
# Export: backbone + head as one ONNX graph
# --------------------------------------------------------------------------------------------------


def export_module(weights: Path, head_module, drop_dead: bool = True):
    """``x (B, 187, 96) -> (probabilities (B, n_genres), msd_tags (B, 50))``. With ``drop_dead`` the
    backbone skips the front-end filters proven never to fire on gtag's inputs (``MusiCNN.drop_dead_filters``;
    what it skipped is in the module's ``front_end`` attribute)."""
    import torch
    from torch import nn

    backbone = load_pretrained(weights)
    front_end = backbone.drop_dead_filters() if drop_dead else {}

    class MusicnnGenre(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.head = head_module

        def forward(self, x):
            pooled = self.backbone.pooled(x)
            pen = self.backbone.penultimate(pooled)
            msd = torch.sigmoid(self.backbone.logits_from_penultimate(pen))
            return torch.softmax(self.head(pooled, pen), dim=1), msd

    module = MusicnnGenre().eval()
    module.front_end = front_end
    return module


def dead_filter_check(module, full_module, x: np.ndarray) -> dict[str, Any]:
    """What ``export_module`` skipped, and how far the result is from the whole network (torch, same
    patches): float32 summation order only, since the skipped filters' outputs are proven constant."""
    import torch

    with torch.no_grad():
        (p0, t0), (p1, t1) = full_module(torch.from_numpy(x)), module(torch.from_numpy(x))
    return module.front_end | {"windows": int(len(x)),
                               "max_abs_prob_diff_vs_all_filters": float((p0 - p1).abs().max()),
                               "max_abs_msd_tag_diff_vs_all_filters": float((t0 - t1).abs().max())}


def export_onnx(module, path: Path, meta: dict[str, Any]) -> str:
    """torch.onnx.export (TorchScript exporter, opset 17, dynamic batch) + metadata; returns sha256."""
    import tempfile

    import onnx
    import torch

    from .export import save_onnx

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(module, (torch.zeros(2, N_FRAMES, N_MELS),), str(raw), dynamo=False, opset_version=17,
                          input_names=[INPUT_NAME], output_names=["probabilities", "msd_tags"],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "probabilities": {0: "batch"},
                                        "msd_tags": {0: "batch"}})
        model = onnx.load(str(raw))
    return save_onnx(model, path, meta)


def onnx_agreement(path: Path, module, x: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime (CPU) against torch on the same patches."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    p_onnx, t_onnx = sess.run(["probabilities", "msd_tags"], {INPUT_NAME: x.astype(np.float32)})
    with torch.no_grad():
        p_t, t_t = (v.numpy() for v in module(torch.from_numpy(x)))
    return {"windows": int(len(x)), "label_agreement": round(float(np.mean(p_onnx.argmax(1) == p_t.argmax(1))), 5),
            "max_abs_prob_diff": float(np.abs(p_onnx - p_t).max()),
            "max_abs_msd_tag_diff": float(np.abs(t_onnx - t_t).max())}


def fixture_agreement(path: Path, fixture: Path) -> dict[str, Any]:
    """The exported ONNX model's ``msd_tags`` against TensorFlow's reference outputs."""
    import onnxruntime as ort

    with np.load(fixture, allow_pickle=False) as z:
        x, tags = z["patches"], z["tags"]
        corner = z["range_corner"] if "range_corner" in z.files else np.zeros(len(x), dtype=bool)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = np.abs(sess.run(["msd_tags"], {INPUT_NAME: x.astype(np.float32)})[0] - tags).max(axis=1)
    # Music and synthetic music-like patches apart from the corners of the input range (silence,
    # every band at full scale...): those check the float model's dead-filter proof; an int8 model,
    # calibrated on music, is not expected to follow there.
    out = {"patches": int((~corner).sum()), "max_abs_msd_tag_diff_vs_tensorflow": float(diff[~corner].max())}
    if corner.any():
        out |= {"range_corner_patches": int(corner.sum()),
                "range_corners_max_abs_msd_tag_diff_vs_tensorflow": float(diff[corner].max())}
    return out


def calibration_patches(train: list[Track], seed: int, tracks: int = 64, per_track: int = 2) -> np.ndarray:
    """A few musicnn patches from random *training* tracks: the activation ranges of the CPU variant."""
    rng = np.random.default_rng(seed)
    out = []
    for i in sorted(rng.choice(len(train), min(tracks, len(train)), replace=False)):
        x = features.musicnn_patches(audio.load_audio(train[i].path).samples, audio.SAMPLE_RATE, EMBED_HOP)
        out.append(x[np.sort(rng.choice(len(x), min(per_track, len(x)), replace=False))])
    return np.concatenate(out)


def variant_agreement(reference: Path, variant: Path, x: np.ndarray) -> dict[str, Any]:
    """How closely ``variant`` follows ``reference`` (ONNX Runtime, CPU) on the patches ``x``."""
    import onnxruntime as ort

    outs = []
    for path in (reference, variant):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs = [sess.run(["probabilities", "msd_tags"], {INPUT_NAME: x[i:i + MAX_BATCH].astype(np.float32)})
                for i in range(0, len(x), MAX_BATCH)]
        outs.append([np.concatenate([r[k] for r in runs]) for k in (0, 1)])
    (p0, t0), (p1, t1) = outs
    return {"windows": int(len(x)), "window_label_agreement": round(float(np.mean(p0.argmax(1) == p1.argmax(1))), 4),
            "max_abs_prob_diff": float(np.abs(p0 - p1).max()), "mean_abs_prob_diff": float(np.abs(p0 - p1).mean()),
            "max_abs_msd_tag_diff": float(np.abs(t0 - t1).max()), "mean_abs_msd_tag_diff": float(np.abs(t0 - t1).mean())}


def make_cpu_variant(fp32: Path, dst: Path, meta: dict[str, Any], calibration: np.ndarray, probe: np.ndarray,
                     fixture: str | Path | None) -> dict[str, Any]:
    """Write the CPU variant of ``fp32`` (the convolutions of ``QUANTIZED_SCOPES`` in int8) and return its manifest
    ``cpu_variant`` block: file, sha256, what was changed, agreement with the float model."""
    from .export import quantize_nodes

    sha = quantize_nodes(fp32, dst, calibration, INPUT_NAME, QUANTIZED_SCOPES,
                         meta | {"variant": "cpu: timbral convolutions int8"})
    block = {"file": dst.name, "sha256": sha,
             "what": "the two timbral convolutions in int8 (ONNX Runtime static QDQ, per-channel 7-bit "
                     f"weights, uint8 activations calibrated on {len(calibration)} training patches); "
                     "the rest float32",
             "agreement_with_float": variant_agreement(fp32, dst, probe)}
    if fixture and Path(fixture).is_file():
        block["max_abs_msd_tag_diff_vs_tensorflow"] = fixture_agreement(dst, Path(fixture))[
            "max_abs_msd_tag_diff_vs_tensorflow"]
    return block


# --------------------------------------------------------------------------------------------------
# The ensemble on validation, through gtag's own Predictor
# --------------------------------------------------------------------------------------------------


def _train_only_models(models_dir: Path, shipped_dir: Path, data_root: Path, train: list[Track],
                       labels: tuple[str, ...], classic_cache: Path, jobs: int) -> dict[str, str]:
    """Write train-only versions of the shipped models into ``models_dir`` (the transfer model must
    already be there); returns a note per model."""
    from gtag.models import read_manifest

    from .classic import _fit, export_pipeline, make_estimator
    from .export import update_manifest
    from .extract import extract

    notes = {}
    shipped = [s for s in read_manifest(shipped_dir) if s.name != MODEL_NAME]
    tr_feat = None
    for s in shipped:
        training = s.extra.get("training", {})
        base = {"name": s.name, "file": s.file, "kind": s.kind, "labels": list(s.labels),
                "sample_rate": s.sample_rate, "window_seconds": s.window_seconds, "hop_seconds": s.hop_seconds,
                "weight": s.weight, "input_name": s.input_name, "feature_names": list(s.feature_names),
                "msd_labels": s.extra.get("msd_labels"), "training": {"fitted_on": "train"}}
        base = {k: v for k, v in base.items() if v is not None}
        if s.name in ("rf", "knn") and training.get("params"):
            if tr_feat is None:
                tr_feat = extract(train, labels, classic_cache, jobs=jobs, desc="train features (cached)")
            est = _fit(make_estimator(s.name, training["params"], training.get("seed", 0), jobs), s.name,
                       tr_feat.X, tr_feat.y, tr_feat.groups)
            sha = export_pipeline(est, s.name, models_dir / s.file, {"labels": list(labels)})
            update_manifest(models_dir, {**base, "sha256": sha})
            notes[s.name] = f"refitted on the train split with the shipped params {training['params']}"
        elif training.get("fitted_on") == "train":
            shutil.copy2(shipped_dir / s.file, models_dir / s.file)
            update_manifest(models_dir, {**base, "sha256": s.sha256})
            notes[s.name] = "shipped file (fitted on train only)"
        else:
            notes[s.name] = f"left out: shipped file fitted on {training.get('fitted_on')!r}, which includes valid"
    return notes


def ensemble_on_valid(models_dir: Path, valid: list[Track], labels: tuple[str, ...],
                      with_name: str = MODEL_NAME) -> dict[str, Any]:
    """Predict every valid track with gtag's Predictor on the (train-only) models of ``models_dir``;
    the vote of all models, and of all but ``with_name``, both with the manifest weights (the same
    ``gtag.vote.combine`` gtag uses; the per-model track probabilities come from the one run)."""
    from gtag import vote
    from gtag.models import load_models, read_manifest
    from gtag.pipeline import Predictor

    from .evaluate import classification_metrics

    # Every model, not only those the current weights let vote (load_models' default).
    models = load_models(models_dir, [s.name for s in read_manifest(models_dir)], device="cpu", threads=1)
    pred = Predictor(models)
    names = [m.spec.name for m in models]
    per_track: list[dict[str, np.ndarray]] = []
    y = []
    t0 = time.time()
    for t in tqdm(valid, desc="valid ensemble", unit="track"):
        p = pred.predict_file(t.path)
        per_track.append({n: vote.align(p.models[n], p.labels, labels) for n in names})
        y.append(labels.index(t.genre))
    y = np.array(y)
    seconds = time.time() - t0
    spec_labels = {m.spec.name: labels for m in models}
    weights = {m.spec.name: m.spec.weight for m in models}
    full = np.array([t.variant != EXCERPT for t in valid])

    def score(subset: list[str]) -> dict[str, Any]:
        probs = np.stack([vote.combine({n: d[n] for n in subset}, spec_labels, weights)[1] for d in per_track])
        m = classification_metrics(y, probs.argmax(1), labels)
        mf = classification_metrics(y[full], probs[full].argmax(1), labels)
        return {"models": subset, "weights": {n: weights[n] for n in subset}, "track_accuracy": m["accuracy"],
                "track_balanced_accuracy": m["balanced_accuracy"], "track_macro_f1": m["macro_f1"],
                "full_clips_track_accuracy": mf["accuracy"], "per_genre_recall":
                    {g: v["recall"] for g, v in m["per_genre"].items()}}

    others = [n for n in names if n != with_name]
    out = {"tracks": int(len(y)), "seconds": round(seconds, 1),
           "with": score(names), "without": score(others) if others else None,
           "single": {n: score([n]) for n in names}}
    return out


# --------------------------------------------------------------------------------------------------
# Speed, one core: the musicnn path against the CNN path
# --------------------------------------------------------------------------------------------------


def speed_report(onnx_path: Path, clips: list[Path], cnn_onnx: Path | None = None, cpu_variant: Path | None = None,
                 repeats: int = 2) -> dict[str, Any]:
    """x-realtime on one core (ORT intra-op threads 1, torch/BLAS untouched) of the musicnn path as
    gtag runs it (``musicnn_patches`` at the tag-time hop + ORT calls of ``MAX_BATCH`` windows; the
    float model and, when given, its CPU variant) and of the CNN path (``log_mel_spectrogram`` at
    1.5 s + one ORT call on the shipped CNN, or a default-size ``GenreCNN`` exported here when none
    is shipped), on the concatenated ``clips`` (decoding excluded: identical for both)."""
    import tempfile

    import onnxruntime as ort
    import torch

    from .nets import GenreCNN

    y = np.concatenate([audio.load_audio(c).samples for c in clips])
    seconds = y.size / audio.SAMPLE_RATE
    hop = int(round(TAG_HOP_SECONDS * audio.SAMPLE_RATE))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        cnn_note = "shipped cnn.onnx"
        if cnn_onnx is None or not Path(cnn_onnx).is_file():
            cnn_onnx = Path(tmp) / "cnn.onnx"
            net = GenreCNN().eval()
            torch.onnx.export(torch.nn.Sequential(net, torch.nn.Softmax(dim=1)),
                              (torch.zeros(2, *GenreCNN.input_shape),),
                              str(cnn_onnx), dynamo=False, opset_version=17, input_names=["log_mel"],
                              output_names=["probabilities"], dynamic_axes={"log_mel": {0: "batch"}})
            cnn_note = "GenreCNN() defaults, random weights (no cnn shipped yet): same cost as a trained one"
        s_cnn = ort.InferenceSession(str(cnn_onnx), opts, providers=["CPUExecutionProvider"])

        def musicnn_path(sess):
            x = features.musicnn_patches(y, audio.SAMPLE_RATE, hop)
            return [sess.run(["probabilities", "msd_tags"], {INPUT_NAME: x[i:i + MAX_BATCH]})
                    for i in range(0, len(x), MAX_BATCH)]

        def cnn_path():
            x = features.log_mel_spectrogram(y)[:, None]
            return s_cnn.run(None, {s_cnn.get_inputs()[0].name: x})

        def best(f):
            f()
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
            return min(ts)

        sessions = {"float": onnx_path} | ({"cpu_variant": cpu_variant} if cpu_variant else {})
        out: dict[str, Any] = {"audio_seconds": round(seconds, 1), "musicnn_hop_seconds": TAG_HOP_SECONDS,
                               "musicnn_windows": len(audio.window_starts(y.size, audio.WINDOW_SAMPLES, hop)),
                               "cnn": cnn_note}
        for name, path in sessions.items():
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            t = best(lambda: musicnn_path(sess))
            out[f"musicnn_{name}_x_realtime"] = round(seconds / t, 1)
            out[f"musicnn_{name}_ms_per_window"] = round(1000 * t / out["musicnn_windows"], 1)
        t_pat = best(lambda: features.musicnn_patches(y, audio.SAMPLE_RATE, hop))
        t_cnn = best(cnn_path)
    out["musicnn_patches_x_realtime"] = round(seconds / t_pat, 1)
    out["cnn_x_realtime"] = round(seconds / t_cnn, 1)
    out["cnn_windows"] = len(audio.window_starts(y.size))
    out["cnn_ms_per_window"] = round(1000 * t_cnn / out["cnn_windows"], 1)
    return out


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")}


def train_transfer(data_root: str | Path, out_dir: str | Path, run_dir: str | Path = "runs/transfer",
                   weights: str | Path = "runs/musicnn/musicnn_msd.npz", opts: TransferOptions = TransferOptions(),
                   command: str = "", fixture: str | Path | None = None,
                   classic_cache: str | Path = "runs/classic/cache") -> dict[str, Any]:
    """`gtag-train transfer`: embeddings, head search, validation, export of musicnn + head to
    ``out_dir/musicnn.onnx`` with its manifest entry, ensemble check; returns the report (also in
    ``run_dir/transfer_metrics.json``)."""
    import torch

    t0 = time.time()
    torch.manual_seed(opts.seed)
    out_dir, run_dir, weights = Path(out_dir), Path(run_dir), Path(weights)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: convert musicnn first (gtag-train musicnn-convert)")
    ds, train, valid = train_valid(data_root)
    labels = ds.labels
    cache = run_dir / "cache"
    tr = embed_tracks(train, labels, weights, cache, threads=opts.threads, batch=opts.batch, desc="train embeddings")
    va = embed_tracks(valid, labels, weights, cache, threads=opts.threads, batch=opts.batch, desc="valid embeddings")
    torch.set_num_threads(opts.threads)
    report: dict[str, Any] = {"data": ds.summary(), "options": asdict(opts), "candidates": {}}

    # 1-2. candidates: hyper-parameter by grouped CV on train, then scored on valid (at the tag-time hop)
    tag_va = va.every(TAG_EVERY)
    full_va = np.array([va.tracks[g].variant != EXCERPT for g in va.groups]) & tag_va
    fitted = {}
    for name in opts.heads:
        print(f"[{name}] grouped {opts.folds}-fold search on the training split…", flush=True)
        if name.startswith("logreg-"):
            head, search = _choose_logreg(name.split("-", 1)[1], tr, opts)
        elif name == "finetune-top":
            head, search = _choose_finetune(weights, tr, opts)
        else:
            raise ValueError(f"unknown head {name!r}")
        head.fit(tr)
        p = head.predict_proba(va)
        m = evaluate_windows(p[tag_va], va.y[tag_va], va.groups[tag_va], labels)
        mf = evaluate_windows(p[full_va], va.y[full_va], va.groups[full_va], labels)
        fitted[name] = (head, p, m, mf)
        report["candidates"][name] = {"search": search, "chosen": head.describe(),
                                      "valid_track": _summary(m["track"]), "valid_window": _summary(m["window"]),
                                      "valid_track_full_clips": _summary(mf["track"])}
        print(f"[{name}] {head.describe()}: valid track acc {m['track']['accuracy']:.3f} "
              f"(bal. {m['track']['balanced_accuracy']:.3f}), window acc {m['window']['accuracy']:.3f}", flush=True)

    # 3. choose on validation (simplest first on ties)
    order = {n: i for i, n in enumerate(opts.heads)}
    best_name = max(fitted, key=lambda n: (fitted[n][2]["track"]["accuracy"],
                                           fitted[n][2]["track"]["balanced_accuracy"], -order[n]))
    head, p_valid, valid_m, valid_full = fitted[best_name]
    print(f"chosen on validation: {best_name} {head.describe()}", flush=True)
    save_confusion_png(valid_m["track"]["confusion"], labels, run_dir / "musicnn_valid_track_confusion.png",
                       f"musicnn transfer ({best_name}) track level (valid)")
    both = _concat(tr, va)
    cv_all = grouped_cv(_make_like(head, weights, opts), both, opts.folds, opts.seed, every=TAG_EVERY)
    save_confusion_png(cv_all["track"]["confusion"], labels, run_dir / "musicnn_cv_track_confusion.png",
                       f"musicnn transfer ({best_name}) track level (CV train+valid)")
    weight = cv_all["track"]["balanced_accuracy"]

    # 4. export: the train-only head (for the ensemble check) and the final head (shipped)
    meta = {"labels": list(labels), "kind": KIND_MUSICNN, "msd_labels": list(MSD_LABELS),
            "sample_rate": audio.SAMPLE_RATE, "window_seconds": audio.WINDOW_SECONDS,
            "musicnn_sample_rate": features.MUSICNN_SAMPLE_RATE, "head": head.describe(),
            "licence": "musicnn weights (c) Music Technology Group, Universitat Pompeu Fabra 2019, ISC; "
                       "see MUSICNN_LICENSE.md"}
    valid_models = run_dir / "valid_models"
    if valid_models.exists():
        shutil.rmtree(valid_models)
    valid_models.mkdir(parents=True)
    train_module = export_module(weights, head.torch_module())
    train_sha = export_onnx(train_module, valid_models / "musicnn.onnx", meta)
    probe = np.concatenate([features.musicnn_patches(audio.load_audio(t.path).samples) for t in valid[:12]])
    train_check = onnx_agreement(valid_models / "musicnn.onnx", train_module, probe)
    calibration = calibration_patches(train, opts.seed)
    train_variant = make_cpu_variant(valid_models / "musicnn.onnx", valid_models / CPU_VARIANT_FILE, meta,
                                     calibration, probe, fixture)
    # the torch export of the head reproduces the head itself (scaler folding, softmax)
    with torch.no_grad():
        p_mod = torch.softmax(head.torch_module()(torch.from_numpy(va.pooled), torch.from_numpy(va.penultimate)),
                              dim=1).numpy()
    head_check = float(np.abs(p_mod - p_valid).max())

    final = both if opts.final_fit == "train+valid" else tr
    final_head = _make_like(head, weights, opts)().fit(final)
    final_module = export_module(weights, final_head.torch_module())
    path = out_dir / "musicnn.onnx"
    sha = export_onnx(final_module, path, meta)
    onnx_check = onnx_agreement(path, final_module, probe)
    onnx_check["head_module_vs_head_max_abs_prob_diff"] = head_check
    onnx_check["dead_filters"] = dead_filter_check(
        final_module, export_module(weights, final_head.torch_module(), drop_dead=False), probe)
    if fixture and Path(fixture).is_file():
        onnx_check.update(fixture_agreement(path, Path(fixture)))
    cpu_variant = make_cpu_variant(path, out_dir / CPU_VARIANT_FILE, meta, calibration, probe, fixture)
    licence_src = weights.parent / "MUSICNN_LICENSE.md"
    report.update({"chosen": best_name, "head": head.describe(), "valid": valid_m, "valid_full_clips": valid_full,
                   "cv_train_valid": cv_all, "onnx_check": onnx_check, "onnx_check_train_only": train_check,
                   "cpu_variant": cpu_variant, "cpu_variant_train_only": train_variant,
                   "onnx_bytes": path.stat().st_size})

    # CNN comparison, per genre (from-scratch CNN's figures from the shipped manifest, when there)
    from gtag.models import read_manifest

    shipped = {s.name: s for s in read_manifest(out_dir)} if (out_dir / "manifest.json").is_file() else {}
    compare = {}
    for n in ("cnn", "wavenet", "rf", "knn"):
        if n in shipped and "valid_track" in shipped[n].metrics:
            vt = shipped[n].metrics["valid_track"]
            compare[n] = {"accuracy": vt.get("accuracy"), "balanced_accuracy": vt.get("balanced_accuracy"),
                          "per_genre_recall": {g: v.get("recall") for g, v in vt.get("per_genre", {}).items()}}
    compare[MODEL_NAME] = {"accuracy": valid_m["track"]["accuracy"],
                           "balanced_accuracy": valid_m["track"]["balanced_accuracy"],
                           "per_genre_recall": {g: v["recall"] for g, v in valid_m["track"]["per_genre"].items()}}
    report["valid_track_comparison"] = compare

    # 5. ensemble on validation with train-only models, through gtag's Predictor
    if opts.ensemble_check:
        from .export import update_manifest

        update_manifest(valid_models, {"name": MODEL_NAME, "file": "musicnn.onnx", "sha256": train_sha,
                                       "kind": KIND_MUSICNN, "labels": list(labels), "input_name": INPUT_NAME,
                                       "sample_rate": audio.SAMPLE_RATE, "window_seconds": audio.WINDOW_SECONDS,
                                       "hop_seconds": TAG_HOP_SECONDS, "weight": weight, "max_batch": MAX_BATCH,
                                       "msd_labels": list(MSD_LABELS), "training": {"fitted_on": "train"},
                                       "cpu_variant": train_variant})
        notes = _train_only_models(valid_models, out_dir, Path(data_root), train, labels, Path(classic_cache), jobs=1)
        ens = ensemble_on_valid(valid_models, valid, labels)
        ens["notes"] = notes
        report["ensemble_valid"] = ens
        print(f"ensemble on valid (train-only models): with {MODEL_NAME} "
              f"{ens['with']['track_accuracy']:.3f}, without "
              f"{ens['without']['track_accuracy'] if ens['without'] else float('nan'):.3f}", flush=True)

    if opts.speed_check:
        clips = [t.path for t in valid if t.variant == "original"][:6]
        cnn = out_dir / shipped["cnn"].file if "cnn" in shipped else None
        report["speed"] = speed_report(path, clips, cnn, out_dir / CPU_VARIANT_FILE)
        print(f"speed (one core): {report['speed']}", flush=True)

    if licence_src.is_file():
        _write_licence(out_dir / "MUSICNN_LICENSE.md", licence_src.read_text())
    _manifest_entry(out_dir, path, sha, labels, report, weight, ds, opts, command, final, head)
    report["seconds"] = round(time.time() - t0, 1)
    (run_dir / "transfer_metrics.json").write_text(json.dumps(report, indent=2, default=_json_default))
    return report


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


LICENCE_HEADER = """# musicnn: licence and attribution

`musicnn.onnx` contains the pretrained weights of **musicnn** (`MSD_musicnn`, trained on the Million
Song Dataset), converted from the TensorFlow checkpoint in the PyPI wheel `musicnn-0.1.0` by
`training/musicnn.py`, with a GTZAN genre head fitted by `training/transfer.py` on top.

- Jordi Pons and Xavier Serra, "musicnn: Pre-trained convolutional neural networks for music audio
  tagging", Late-breaking/demo session, ISMIR 2019. <https://github.com/jordipons/musicnn>
- Jordi Pons, Oriol Nieto, Matthew Prockup, Erik M. Schmidt, Andreas F. Ehmann and Xavier Serra,
  "End-to-end learning for music audio tagging at scale", ISMIR 2018.

The musicnn code and weights are distributed under the ISC licence, reproduced below as shipped in
the wheel (`musicnn-0.1.0.dist-info/LICENSE.md`). The rest of gtag is under its own licence.

---

"""


def _write_licence(path: Path, text: str) -> None:
    path.write_text(LICENCE_HEADER + text.strip() + "\n")


def _ensemble_summary(ens: dict[str, Any] | None) -> dict[str, Any]:
    if not ens:
        return {}
    out = {f"{k}_{MODEL_NAME}": {m: ens[k][m] for m in ("models", "track_accuracy", "track_balanced_accuracy")}
           for k in ("with", "without") if ens.get(k)}
    return out | {"tracks": ens["tracks"], "note": "train-only versions of the models, voted by gtag's "
                  "Predictor with the manifest weights, on the valid tracks"}


def _manifest_entry(out_dir, path, sha, labels, report, weight, ds, opts, command, final, head) -> None:
    from .export import training_record, update_manifest

    v, cv = report["valid"], report["cv_train_valid"]
    entry = {
        "name": MODEL_NAME,
        "file": path.name,
        "sha256": sha,
        "kind": KIND_MUSICNN,
        "description": "musicnn (pretrained on the Million Song Dataset, Pons & Serra 2019) + GTZAN head "
                       f"({head.describe()['head']})",
        "input_name": INPUT_NAME,
        "input": {"shape": [None, N_FRAMES, N_MELS], "dtype": "float32",
                  "build": "gtag.features.musicnn_patches(samples, 22050, hop)",
                  "note": "gtag feeds 22,050 Hz audio; musicnn_patches resamples it to 16 kHz internally "
                          "(soxr HQ) and computes log10(1 + 10000 mel) with n_fft 512, hop 256, 96 mels, "
                          "187 frames (3 s) per window, windows starting where gtag's windows start",
                  "internal_sample_rate": features.MUSICNN_SAMPLE_RATE},
        "output": "probabilities",
        "outputs": {"probabilities": "(batch, 10) softmax over the GTZAN genres",
                    "msd_tags": "(batch, 50) musicnn's MSD tag sigmoids, in msd_labels order"},
        "labels": list(labels),
        "msd_labels": list(MSD_LABELS),
        "sample_rate": audio.SAMPLE_RATE,
        "window_seconds": audio.WINDOW_SECONDS,
        "hop_seconds": TAG_HOP_SECONDS,  # see training.transfer.TAG_HOP_SECONDS
        "max_batch": MAX_BATCH,  # windows per ONNX Runtime call (bounded activation memory)
        # Vote weight: grouped-CV track balanced accuracy over train+valid, as for rf and knn.
        "weight": weight,
        "metrics": {
            "valid_track": _summary(v["track"]) | {"per_genre": v["track"]["per_genre"]},
            "valid_track_full_clips": _summary(report["valid_full_clips"]["track"]),
            "valid_window": _summary(v["window"]),
            "cv_track": _summary(cv["track"]),
            "head_candidates": {n: {"chosen": c["chosen"], "valid_track_accuracy": c["valid_track"]["accuracy"],
                                    "valid_track_balanced_accuracy": c["valid_track"]["balanced_accuracy"]}
                                for n, c in report["candidates"].items()},
            "ensemble_valid": _ensemble_summary(report.get("ensemble_valid")),
            "note": "valid_*: head fitted on the train split only, measured on the held-out valid tracks "
                    "with the float model, windows every 3 s as at tag time "
                    "(valid_track_full_clips: without the 2-3 s excerpts); the head type was chosen on "
                    "valid (see head_candidates), so valid_* is slightly optimistic; cv_track: 5-fold CV "
                    "grouped by track over train+valid.",
        },
        "training": training_record(
            ds, final.tracks, len(final.y), opts.final_fit, opts.seed, command, head=head.describe(),
            backbone="musicnn MSD_musicnn (musicnn-0.1.0 wheel), frozen"
                     + (" except the back end's dense layer" if isinstance(head, FineTuneHead) else "")),
        "licence": "musicnn weights: ISC, (c) Music Technology Group, Universitat Pompeu Fabra 2019; "
                   "see MUSICNN_LICENSE.md",
        "onnx_check": report["onnx_check"],
        "cpu_variant": report["cpu_variant"],
    }
    if "speed" in report:
        entry["speed"] = report["speed"]
    update_manifest(out_dir, entry)
