"""A genre head on a pretrained backbone's embeddings, in numpy: fit, calibrate, abstain, export.

Used by `gtag learn` (a library's own genres, base install: no torch, no scikit-learn) and by
`gtag-train transfer` (the shipped musicnn head), so both heads are the same code.

The head is standardisation + multinomial logistic regression (L2), fitted with L-BFGS on
class- and track-balanced window weights. Its probabilities are calibrated by one temperature
(Guo et al. 2017) fitted on out-of-fold track probabilities, and folded into the weights, so the
exported model's ``probabilities`` are the calibrated ones. For abstaining it also keeps the class
means of the training tracks in a whitened low-dimensional projection of the embedding: a track
whose mean embedding is far from every class mean is "not like anything I was taught".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Spread floor of the standardisation, as a share of the median spread: a feature that is nearly
# constant in training (a pooled filter that rarely fires) must not explode when it moves at tag time.
SCALE_FLOOR = 0.01
# Dimensions of the whitened projection the out-of-distribution distance is measured in: enough to
# separate genres, few enough that ~100 tracks per class estimate it (and the ONNX graph stays small).
OOD_DIMS = 32


def balanced_weights(y: np.ndarray, groups: np.ndarray, n_labels: int) -> np.ndarray:
    """Window weights: each track weighs the same whatever its window count, each genre the same
    whatever its track count (mean weight 1)."""
    y, groups = np.asarray(y), np.asarray(groups)
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    per_track = 1.0 / counts[inv]
    first = {g: y[groups == g][0] for g in np.unique(groups)}
    tracks_per_genre = np.bincount(np.array(list(first.values()), dtype=int), minlength=n_labels).astype(float)
    genre_w = len(first) / (n_labels * np.maximum(tracks_per_genre, 1))
    w = per_track * genre_w[y]
    return w / w.mean()


def source_boost(y: np.ndarray, groups: np.ndarray, boost: np.ndarray, n_labels: int,
                 prior_exponent: float = 1.0) -> np.ndarray:
    """Window multipliers for ``fit_head(boost=...)`` that weigh some tracks (``boost`` per window,
    e.g. real library tracks against GTZAN clips) more *within their genre*, and move the genres'
    total weights only as far as ``prior_exponent`` says: a genre's total becomes its balanced
    total times (boosted total / balanced total) ** prior_exponent. 1 is the plain boost (a genre
    with many boosted tracks gains prior: the library's rock pulled old blues recordings to rock);
    0 keeps every genre's total equal, as ``balanced_weights`` does."""
    y = np.asarray(y, int)
    w0 = balanced_weights(y, groups, n_labels)
    wb = w0 * np.asarray(boost, np.float64)
    factor = np.ones(n_labels)
    for c in np.unique(y):
        m = y == c
        factor[c] = (wb[m].sum() / w0[m].sum()) ** (prior_exponent - 1.0)
    return np.asarray(boost, np.float64) * factor[y]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def stack_tracks(embs: list[np.ndarray], y: np.ndarray, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows of tracks ``idx`` stacked: (windows, their labels, their track index), what
    ``fit_head`` takes."""
    x = np.concatenate([embs[i] for i in idx])
    yy = np.concatenate([np.full(len(embs[i]), y[i]) for i in idx])
    gg = np.concatenate([np.full(len(embs[i]), i) for i in idx])
    return x, yy, gg


def track_mean(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` rows per group (track), groups in sorted order; returns (groups, means)."""
    ids, inv = np.unique(groups, return_inverse=True)
    out = np.zeros((len(ids),) + values.shape[1:])
    np.add.at(out, inv, values)
    return ids, out / np.bincount(inv)[:, None]


@dataclass
class LinearHead:
    """Standardise, then a linear layer and softmax; plus what abstaining needs."""

    labels: tuple[str, ...]
    mean: np.ndarray  # (d,) standardisation
    inv_scale: np.ndarray  # (d,)
    weight: np.ndarray  # (n_labels, d), temperature folded in once calibrated
    bias: np.ndarray  # (n_labels,)
    C: float = 1.0
    temperature: float = 1.0
    # Whitened projection (d -> OOD_DIMS) of the standardised embedding and the class means in it.
    projection: np.ndarray | None = None  # (d, k)
    class_means: np.ndarray | None = None  # (n_labels, k)
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ inference (numpy)
    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) * self.inv_scale) @ self.weight.T + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Window probabilities ``(n, n_labels)`` of embeddings ``x`` ``(n, d)``."""
        return _softmax(self.logits(x))

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Per-window distance ``(n,)`` to the nearest class mean in the whitened projection,
        divided by sqrt(k) so that a typical training window sits near 1."""
        if self.projection is None or self.class_means is None:
            raise ValueError("this head has no out-of-distribution reference")
        z = ((np.asarray(x, np.float64) - self.mean) * self.inv_scale) @ self.projection
        d2 = ((z[:, None, :] - self.class_means[None]) ** 2).sum(-1)
        return np.sqrt(d2.min(axis=1) / self.projection.shape[1])


def fit_head(x: np.ndarray, y: np.ndarray, groups: np.ndarray, labels: tuple[str, ...], C: float = 0.01,
             max_iter: int = 500, boost: np.ndarray | None = None) -> LinearHead:
    """Fit standardisation + L2 multinomial logistic regression on window embeddings.

    Objective (scikit-learn's convention): ``0.5 * |W|^2 + C * sum_i w_i * CE_i`` with the balanced
    window weights ``w`` (times ``boost`` per window when given: more weight for one source of
    tracks, e.g. real library tracks beside GTZAN clips); the bias is not penalised. L-BFGS.
    """
    from scipy.optimize import minimize

    # float32 throughout the data (a large library's windows would not fit twice in float64); the
    # statistics are accumulated in float64, and the optimiser keeps float64 parameters.
    x = np.asarray(x, np.float32)
    y = np.asarray(y, int)
    n_labels = len(labels)
    mean = x.mean(axis=0, dtype=np.float64)
    z = x - mean.astype(np.float32)  # centred first: the spread of large-valued features stays exact
    scale = np.sqrt(np.square(z).mean(axis=0, dtype=np.float64))
    scale = np.maximum(scale, SCALE_FLOOR * float(np.median(scale[scale > 0])) if np.any(scale > 0) else 1.0)
    z *= (1.0 / scale).astype(np.float32)
    w = balanced_weights(y, groups, n_labels)
    if boost is not None:
        w = w * np.asarray(boost, np.float64)
        w = w / w.mean()
    onehot = np.eye(n_labels)[y]
    d = z.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: n_labels * d].reshape(n_labels, d)
        b = theta[n_labels * d:]
        logit = (z @ W.T.astype(np.float32)).astype(np.float64) + b
        logit -= logit.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logit).sum(axis=1))
        ce = lse - (logit * onehot).sum(axis=1)
        p = np.exp(logit - lse[:, None])
        g = (p - onehot) * (C * w)[:, None]
        gW = (g.astype(np.float32).T @ z).astype(np.float64) + W
        gb = g.sum(axis=0)
        return float(C * (w * ce).sum() + 0.5 * (W * W).sum()), np.concatenate([gW.ravel(), gb])

    res = minimize(loss, np.zeros(n_labels * (d + 1)), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter})
    W = res.x[: n_labels * d].reshape(n_labels, d)
    b = res.x[n_labels * d:]
    head = LinearHead(tuple(labels), mean, 1.0 / scale, W, b, C=C)
    head.projection, head.class_means = _ood_reference(z.astype(np.float64), y, groups, n_labels)
    return head


def _ood_reference(z: np.ndarray, y: np.ndarray, groups: np.ndarray, n_labels: int,
                   k: int = OOD_DIMS) -> tuple[np.ndarray, np.ndarray]:
    """Whitened PCA of the standardised training windows (k components) and each class's mean in it,
    from track means so every track counts once."""
    _, tz = track_mean(z, groups)
    _, ty = track_mean(y[:, None].astype(float), groups)
    ty = ty[:, 0].round().astype(int)
    centred = tz - tz.mean(axis=0)
    k = max(1, min(k, len(tz) - 1, z.shape[1]))
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    # Within-class spread sets the unit, so "far" means far compared with how tracks of one genre vary.
    proj = vt[:k].T
    within = np.concatenate([tz[ty == c] @ proj - (tz[ty == c] @ proj).mean(axis=0)
                             for c in range(n_labels) if np.any(ty == c)])
    sd = np.maximum(within.std(axis=0), 1e-6)
    proj = proj / sd
    means = np.stack([(tz[ty == c] @ proj).mean(axis=0) if np.any(ty == c) else np.full(k, np.inf)
                      for c in range(n_labels)])
    return proj, means


def fit_temperature(track_logit_probs: list[np.ndarray], y: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of track probabilities, each the mean
    of its windows' softmax(logits / T). ``track_logit_probs``: per track, its windows' logits."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        t = np.exp(log_t)
        p = np.stack([_softmax(lg / t).mean(axis=0) for lg in track_logit_probs])
        return float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def calibrate(head: LinearHead, temperature: float) -> LinearHead:
    """Fold ``temperature`` into the head: softmax(logits / T) becomes its probabilities."""
    head.weight = head.weight / temperature
    head.bias = head.bias / temperature
    head.temperature = head.temperature * temperature
    return head


# ------------------------------------------------------------------ folds, thresholds


def group_folds(y: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Assign each group (artist, track) to one of ``k`` folds, so no group is on both sides; groups
    are dealt largest first to the fold that has least of their label (stratified, deterministic).
    Returns, per fold, the indices of the rows it tests on."""
    y, groups = np.asarray(y), np.asarray(groups)
    ids = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    label_of = {g: int(np.bincount(y[groups == g]).argmax()) for g in ids}
    size_of = {g: int(np.sum(groups == g)) for g in ids}
    n_labels = int(y.max()) + 1 if y.size else 1
    load = np.zeros((k, n_labels))
    total = np.zeros(k)
    fold_of: dict = {}
    for g in sorted(ids, key=lambda g: -size_of[g]):
        f = int(np.lexsort((total, load[:, label_of[g]]))[0])
        fold_of[g] = f
        load[f, label_of[g]] += size_of[g]
        total[f] += size_of[g]
    fold = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(fold == f) for f in range(k) if np.any(fold == f)]


def coverage_precision(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float]:
    """Share of tracks that get a tag at ``threshold`` and the share of those tags that are right."""
    written = np.asarray(confidence) >= threshold
    cov = float(written.mean()) if written.size else 0.0
    prec = float(np.asarray(correct)[written].mean()) if written.any() else 1.0
    return cov, prec


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float = 0.9) -> float:
    """The lowest confidence threshold whose written tags reach ``target_precision`` on held-out
    tracks (most coverage for that precision); 1.0 when no threshold does."""
    return choose_threshold_each(confidence, correct, np.zeros(len(confidence)), target_precision)


def choose_threshold_each(confidence: np.ndarray, correct: np.ndarray, sets: np.ndarray,
                          target_precision: float = 0.9) -> float:
    """The lowest confidence threshold at which the written tags reach ``target_precision`` in every
    set of held-out tracks (``sets``: each track's set, e.g. GTZAN clips and real library tracks), each
    on its own, so one easy set cannot buy coverage with wrong tags on another; a set with no track
    at or above a threshold asks nothing of it. 1.0 when no threshold does."""
    confidence, correct, sets = np.asarray(confidence, float), np.asarray(correct, bool), np.asarray(sets)
    for t in np.unique(np.round(confidence, 3)):
        if all(coverage_precision(confidence[sets == s], correct[sets == s], float(t))[1] >= target_precision
               for s in np.unique(sets)):
            return float(t)
    return 1.0


def tradeoff(confidence: np.ndarray, correct: np.ndarray,
             thresholds=(0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) -> list[dict[str, float]]:
    """Coverage and precision of written tags at a few thresholds (for the manifest and README)."""
    out = []
    for t in thresholds:
        cov, prec = coverage_precision(confidence, correct, t)
        out.append({"min_probability": t, "coverage": round(cov, 3), "precision": round(prec, 3)})
    return out


# ------------------------------------------------------------------ ONNX


EMBEDDING_OUTPUT = "embedding"  # the backbone's output a head reads
PROBABILITY_OUTPUT = "probabilities"
UNKNOWN_OUTPUT = "unknown"  # P(music outside the head's genres), from a reject class when trained with one
DISTANCE_OUTPUT = "ood_distance"  # per-window distance to the nearest class mean (LinearHead.distances)


def backbone(model, keep: tuple[str, ...] = ("msd_tags",)):
    """The part of a backbone+head ONNX model up to ``embedding`` (and ``keep`` outputs): what a new
    head is attached to. The graph must have an ``embedding`` output."""
    import onnx

    names = [o.name for o in model.graph.output]
    if EMBEDDING_OUTPUT not in names:
        raise ValueError(f"backbone has no '{EMBEDDING_OUTPUT}' output (outputs: {names})")
    inputs = [i.name for i in model.graph.input]
    wanted = [EMBEDDING_OUTPUT] + [k for k in keep if k in names]
    sub = onnx.utils.Extractor(model).extract_model(inputs, wanted)
    del sub.opset_import[:]
    sub.opset_import.extend(model.opset_import)
    del sub.metadata_props[:]
    # extract_model names the graph "Extracted from {<old name>}": the name grew with every head
    # refit and changed the backbone's hash (the embedding cache's key) though no weight changed.
    sub.graph.name = "backbone"
    return sub


def attach(base, head: LinearHead, n_known: int | None = None):
    """``base`` (a backbone, see ``backbone``) with ``head`` appended: outputs ``probabilities``
    (softmax over the first ``n_known`` classes), ``unknown`` (when the head has more classes: the
    softmax share of the extra "not one of these" class), ``ood_distance`` (when the head has an
    out-of-distribution reference) and the backbone's outputs."""
    import onnx
    from onnx import helper, numpy_helper

    n_known = n_known or len(head.labels)
    g = onnx.GraphProto()
    g.CopyFrom(base.graph)
    f32 = np.float32

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value, f32), name))
        return name

    def i64(name: str, value) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
        return name

    emb = EMBEDDING_OUTPUT
    nodes = [
        helper.make_node("Sub", [emb, const("head.mean", head.mean)], ["head.centred"]),
        helper.make_node("Mul", ["head.centred", const("head.inv_scale", head.inv_scale)], ["head.z"]),
        helper.make_node("Gemm", ["head.z", const("head.weight", head.weight), const("head.bias", head.bias)],
                         ["head.logits"], transB=1),
    ]
    outputs = []
    n_out = head.weight.shape[0]
    if n_out > n_known:
        nodes += [
            helper.make_node("Slice", ["head.logits", i64("head.k0", [0]), i64("head.k1", [n_known]),
                                       i64("head.ax", [1])], ["head.known"]),
            helper.make_node("Softmax", ["head.known"], [PROBABILITY_OUTPUT], axis=-1),
            helper.make_node("Softmax", ["head.logits"], ["head.all"], axis=-1),
            helper.make_node("Slice", ["head.all", "head.k1", i64("head.k2", [n_known + 1]), "head.ax"],
                             ["head.unknown2d"]),
            helper.make_node("Reshape", ["head.unknown2d", i64("head.shape1", [-1])], [UNKNOWN_OUTPUT]),
        ]
        outputs.append(helper.make_tensor_value_info(UNKNOWN_OUTPUT, onnx.TensorProto.FLOAT, ["batch"]))
    else:
        nodes.append(helper.make_node("Softmax", ["head.logits"], [PROBABILITY_OUTPUT], axis=-1))
    outputs.insert(0, helper.make_tensor_value_info(PROBABILITY_OUTPUT, onnx.TensorProto.FLOAT, ["batch", n_known]))
    if head.projection is not None and head.class_means is not None:
        k = head.projection.shape[1]
        means = np.where(np.isfinite(head.class_means), head.class_means, 1e6)[None]  # (1, classes, k)
        nodes += [
            helper.make_node("MatMul", ["head.z", const("head.projection", head.projection)], ["head.zp"]),
            helper.make_node("Unsqueeze", ["head.zp", i64("head.ax1", [1])], ["head.zp3"]),
            helper.make_node("Sub", ["head.zp3", const("head.class_means", means)], ["head.diff"]),
            helper.make_node("Mul", ["head.diff", "head.diff"], ["head.sq"]),
            helper.make_node("ReduceSum", ["head.sq", i64("head.ax2", [2])], ["head.d2"], keepdims=0),
            helper.make_node("ReduceMin", ["head.d2"], ["head.d2min"], axes=[1], keepdims=0),
            helper.make_node("Mul", ["head.d2min", const("head.inv_k", np.float32(1.0 / k))], ["head.d2k"]),
            helper.make_node("Sqrt", ["head.d2k"], [DISTANCE_OUTPUT]),
        ]
        outputs.append(helper.make_tensor_value_info(DISTANCE_OUTPUT, onnx.TensorProto.FLOAT, ["batch"]))
    g.node.extend(nodes)
    kept = [o for o in g.output if o.name != EMBEDDING_OUTPUT]
    del g.output[:]
    g.output.extend(outputs + kept + [o for o in base.graph.output if o.name == EMBEDDING_OUTPUT])
    model = helper.make_model(g, opset_imports=list(base.opset_import))
    model.ir_version = base.ir_version
    onnx.checker.check_model(model)
    return model
