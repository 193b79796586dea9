"""Metrics at window and track level, per genre, and confusion-matrix figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gtag.models.vote import track_probabilities


def track_level(probs: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vote over each track's windows exactly as gtag does; returns (track ids, true, track probs)."""
    ids = np.unique(groups)
    tp = np.stack([track_probabilities(probs[groups == g]) for g in ids])
    ty = np.array([y[groups == g][0] for g in ids])
    return ids, ty, tp


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-genre precision/recall/F1/support, confusion."""
    import warnings

    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    idx = list(range(len(labels)))
    present = sorted(set(y_true.tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(y_true, y_pred)), 4),
        # macro F1 over the genres present in this split (a genre with no example has no F1)
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 4),
        "per_genre": {
            labels[i]: {"precision": round(float(p[i]), 3), "recall": round(float(r[i]), 3),
                        "f1": round(float(f[i]), 3), "support": int(s[i])}
            for i in idx
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def evaluate_windows(probs: np.ndarray, y: np.ndarray, groups: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    """Window-level and track-level metrics from window probabilities."""
    _, ty, tp = track_level(probs, y, groups)
    return {
        "window": classification_metrics(y, probs.argmax(1), labels),
        "track": classification_metrics(ty, tp.argmax(1), labels),
    }


_NO_PLOTS_SAID = []  # whether the one "figures skipped" line was printed


def _pyplot():
    """matplotlib.pyplot (headless), or None when matplotlib is not installed: figures are a bonus,
    a training run never fails for want of them (one line says they are skipped)."""
    try:
        import matplotlib
    except ImportError:
        if not _NO_PLOTS_SAID:
            _NO_PLOTS_SAID.append(True)
            print("matplotlib is not installed: no figures (PNG) are written (pip install matplotlib)", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_confusion_png(confusion: list[list[int]], labels: tuple[str, ...], path: Path, title: str) -> bool:
    """A confusion matrix figure like the study's (true genre down, predicted across); False, and
    nothing written, without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def save_curves(history: list[dict[str, float]], path: Path, title: str) -> bool:
    """Loss and accuracy per epoch (train windows are augmented; valid is every tag-time window);
    False, and nothing written, without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train (smoothed targets)")
    a.plot(ep, [h["valid_loss"] for h in history], label="valid windows")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(ep, [h["train_window_accuracy"] for h in history], label="train windows")
    b.plot(ep, [h["valid_window_accuracy"] for h in history], label="valid windows")
    b.plot(ep, [h["valid_track_accuracy"] for h in history], label="valid tracks (gtag vote)")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.set_ylim(0, 1)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
