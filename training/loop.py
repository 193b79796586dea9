"""One training loop for the neural models (log-mel CNN and raw-waveform WaveNet), with export.

The commands live in ``training.cnn`` and ``training.wavenet``; this module is what they share
(options, ``fit``, ONNX export, ``_prepare`` / ``_finish``), below them; the windows they train and
are scored on come from ``training.windows``.

Protocol: fit on the ``train`` split, stop early and choose on the ``valid`` split; a track is on one
side only. Every track is decoded once and kept in memory; each epoch draws random 3-second windows
from tracks sampled in genre balance (the share is very uneven). Validation scores every window of
a held-out track with the tag-time hop (1.5 s) and averages the softmax over the track, exactly as
``gtag.models.vote.track_probabilities`` does, so the track accuracy is the one gtag users get.

Inputs are built with gtag's own code: the CNN's log-mel patches are slices of the same mel
spectrogram ``gtag.audio.features.analyze`` computes (``track_mel_power``, checked against it in the
tests) scaled by ``gtag.audio.features.log_mel_patches``; the WaveNet sees raw samples, tiled with
``gtag.audio.decode.fit_to_window`` when a clip is short, as ``gtag.audio.decode.frame_signal`` does.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtag.audio import decode as audio

from .data import Track, train_valid
from .evaluate import evaluate_windows, save_confusion_png, save_curves
from .export import save_onnx, update_manifest
from .windows import EqOptions, EvalSet, WindowSource, decode

MAX_BATCH = 64  # windows per ONNX Runtime call at tag time (manifest "max_batch")
OPSET = 17  # ONNX opset of the exported graphs; ONNX Runtime >= 1.13 runs it
EXPORTER = "torch.onnx.export(dynamo=False) (TorchScript exporter)"


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class FitOptions:
    """Knobs shared by both models' training."""

    seed: int = 0  # seeds torch, numpy and random; every draw below derives from it
    # Maximum epochs of the final fit; the one-cycle learning-rate schedule spans them. Short
    # schedules generalise best on this small share: at a high learning rate the validation score
    # swings (batch-norm statistics lag the weights) and a long high-rate phase only memorises the
    # few tracks of the small genres (a 30-epoch fit peaked at 0.54 while 4-epoch searches reached 0.64).
    epochs: int = 12
    # Stop after this many epochs without a better validation track accuracy, counted only in the
    # second half of the schedule: early swings at a high learning rate say little.
    patience: int = 4
    max_minutes: float = 30.0  # wall-clock cap on the final fit (reproducible only if not hit)
    epoch_windows: int = 1536  # training windows drawn per epoch (tracks sampled in genre balance)
    batch_size: int = 32  # windows per optimiser step
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    label_smoothing: float = 0.1  # softer targets give softer probabilities to vote with
    band_limit_p: float = 0.2  # probability that a training window is band-limited to 8 kHz
    threads: int = 2  # torch CPU threads (the training machine has 2 cores)
    eval_batch: int = 128  # windows per forward pass at validation
    tolerance: float = 1e-4  # max |ONNX Runtime - torch| probability allowed at export


@dataclass(frozen=True)
class CnnConfig:
    """One point of the CNN hyperparameter search."""

    depth: int = 4  # conv blocks (each halves both axes)
    width: int = 16  # channels of the first block (doubling per block, up to 8x)
    dropout: float = 0.3  # before the linear head
    lr: float = 1e-3  # peak AdamW learning rate


@dataclass(frozen=True)
class CnnOptions(FitOptions, EqOptions):
    """`gtag-train cnn`: search a handful of configs briefly, then fit the best one fully."""

    # Searched in this order with ``search_epochs`` each; the best validation track accuracy wins
    # (ties: lower validation loss). An empty search fits ``config`` directly.
    search: tuple[CnnConfig, ...] = (
        CnnConfig(4, 16, 0.3, 1e-3),
        CnnConfig(4, 16, 0.3, 3e-3),
        CnnConfig(4, 32, 0.5, 1e-3),
        CnnConfig(5, 16, 0.3, 1e-3),
        CnnConfig(3, 24, 0.3, 2e-3),
    )
    search_epochs: int = 4  # short budget of each searched config
    config: CnnConfig = CnnConfig()  # used when ``search`` is empty
    short_views: int = 8  # rotations precomputed per short clip (time-shift augmentation)
    mask_bands: int = 12  # SpecAugment: one mask of up to this many mel bands (0: off)
    mask_frames: int = 16  # SpecAugment: one mask of up to this many frames (0: off)
    # Mastering and codec EQ (EqOptions; issue 15: the CNN read real rock's brighter masters as
    # "classical"): off in the shipped recipe until a run shows it helps on both validation sets.


@dataclass(frozen=True)
class WaveNetOptions(FitOptions):
    """`gtag-train wavenet`: the WaveNet-style classifier on raw windows (no search: one config)."""

    lr: float = 1e-3  # peak AdamW learning rate
    # The raw-audio net learns slowly and does not overfit: at 12 epochs it still underfits (train
    # window accuracy 0.51, valid still rising), so it gets a 3x longer schedule (~1 min per epoch).
    epochs: int = 36
    max_minutes: float = 60.0  # the schedule must finish for the learning rate to anneal
    front_channels: tuple[int, ...] = (32, 48, 64)  # strided front-end conv widths
    front_strides: tuple[int, ...] = (4, 4, 4)  # their strides (overall rate /64)
    pool: int = 2  # max-pool after the front end (overall rate /128: 172 frames/s)
    channels: int = 64  # residual channels of the dilated stacks
    skip_channels: int = 64  # skip-path channels
    kernel_size: int = 2  # dilated conv kernel, as in WaveNet
    layers: int = 7  # blocks per stack, dilations 1..2**(layers-1)
    stacks: int = 2  # stacks of dilated blocks
    dropout: float = 0.3  # before the linear head
    gain_db: float = 6.0  # random gain in +-gain_db dB per training window


# ---------------------------------------------------------------------------------------------
# Data


def seed_everything(seed: int) -> None:
    """Seed every generator a run touches (python, numpy's global state, torch)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Fitting


@dataclass
class FitResult:
    """What one fit produced: the best state (by validation track accuracy) and its history."""

    state: dict[str, Any]  # state_dict of the best epoch
    best_epoch: int  # 1-based
    valid: dict[str, Any]  # evaluate_windows() of the best epoch: window and track metrics
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    seconds: float = 0.0
    stopped: str = ""  # why the fit ended


def predict_windows(net, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Softmax probabilities of every window, per track (eval mode, no gradients)."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for x in inputs:
            chunks = [torch.softmax(net(torch.from_numpy(np.array(x[i : i + batch], dtype=np.float32))), 1).numpy()
                      for i in range(0, len(x), batch)]
            out.append(np.concatenate(chunks))
    return out


def evaluate(net, data: EvalSet, labels: tuple[str, ...], batch: int) -> tuple[dict[str, Any], float]:
    """Window- and track-level metrics (gtag's soft vote) and the mean window cross-entropy."""
    probs = predict_windows(net, data.inputs, batch)
    p = np.concatenate(probs)
    y = np.concatenate([np.full(len(q), t) for q, t in zip(probs, data.y)])
    groups = np.concatenate([np.full(len(q), i) for i, q in enumerate(probs)])
    loss = float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))
    return evaluate_windows(p, y, groups, labels), loss


def fit(
    net,
    source: WindowSource,
    train_y: np.ndarray,
    valid: EvalSet,
    labels: tuple[str, ...],
    lr: float,
    epochs: int,
    opts: FitOptions,
    checkpoint: Path | None = None,
    desc: str = "fit",
) -> FitResult:
    """Train ``net`` with AdamW (one-cycle schedule: 10 % warm-up, cosine decay); keep the epoch with the best validation track
    accuracy (ties: lower validation loss); stop on ``patience`` or ``max_minutes``."""
    import torch
    from torch.nn import functional as F
    from torch.utils.data import WeightedRandomSampler

    seed_everything(opts.seed)
    rng = np.random.default_rng(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    # Genre balance: every genre is drawn equally often, every track of a genre equally often.
    counts = np.bincount(train_y, minlength=len(labels))
    sampler = WeightedRandomSampler(torch.as_tensor(1.0 / counts[train_y], dtype=torch.double),
                                    opts.epoch_windows, replacement=True, generator=gen)
    steps = math.ceil(opts.epoch_windows / opts.batch_size)
    optim = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=epochs * steps, pct_start=0.1,
                                                anneal_strategy="cos")
    t0 = time.time()
    best: FitResult | None = None
    best_key = (-1.0, 0.0)
    history: list[dict[str, float]] = []
    stopped = f"ran all {epochs} epochs"
    for epoch in range(1, epochs + 1):
        net.train()
        order = list(sampler)
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(range(steps), desc=f"{desc} epoch {epoch}/{epochs}", unit="batch", leave=False, mininterval=2)
        for s in bar:
            idx = order[s * opts.batch_size : (s + 1) * opts.batch_size]
            x = torch.from_numpy(np.stack([source.draw(i, rng) for i in idx]))
            y = torch.from_numpy(train_y[idx]).long()
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=opts.label_smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        metrics, valid_loss = evaluate(net, valid, labels, opts.eval_batch)
        row = {
            "epoch": epoch, "lr": optim.param_groups[0]["lr"], "train_loss": loss_sum / seen,
            "train_window_accuracy": correct / seen, "valid_loss": valid_loss,
            "valid_window_accuracy": metrics["window"]["accuracy"],
            "valid_track_accuracy": metrics["track"]["accuracy"],
            "valid_track_macro_f1": metrics["track"]["macro_f1"], "seconds": round(time.time() - t0, 1),
        }
        history.append(row)
        key = (metrics["track"]["accuracy"], -valid_loss)
        improved = key > best_key
        if improved:
            best_key = key
            best = FitResult(copy.deepcopy(net.state_dict()), epoch, metrics)
            if checkpoint:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"state_dict": best.state, "epoch": epoch, "labels": list(labels)}, checkpoint)
        print(f"{desc} epoch {epoch}: train loss {row['train_loss']:.3f} acc {row['train_window_accuracy']:.3f} | "
              f"valid loss {valid_loss:.3f} window acc {row['valid_window_accuracy']:.3f} "
              f"track acc {row['valid_track_accuracy']:.3f}{' *' if improved else ''} ({row['seconds']:.0f} s)",
              flush=True)
        if epoch > epochs // 2 and epoch - best.best_epoch >= opts.patience:
            stopped = f"early stop: no better valid track accuracy for {opts.patience} epochs"
            break
        if time.time() - t0 > opts.max_minutes * 60 and epoch < epochs:
            stopped = f"time cap: {opts.max_minutes} min"
            break
    assert best is not None
    best.history, best.seconds, best.stopped = history, round(time.time() - t0, 1), stopped
    return best


# ---------------------------------------------------------------------------------------------
# Export


def export_onnx(net, input_name: str, path: Path, meta: dict[str, Any], probe: np.ndarray,
                tolerance: float) -> tuple[str, dict[str, Any]]:
    """Export ``softmax(net)`` with the TorchScript exporter (opset ``OPSET``, dynamic batch axis),
    save it with its metadata, and check ONNX Runtime against torch on ``probe`` windows.

    Returns (sha256, check). Raises if the largest probability difference exceeds ``tolerance``."""
    import onnx
    import onnxruntime as ort
    import torch

    from .nets import Probabilities

    wrapped = Probabilities(net).eval()
    example = torch.from_numpy(np.ascontiguousarray(probe[:2]))
    buf = io.BytesIO()
    torch.onnx.export(
        wrapped, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[input_name],
        output_names=["probabilities"], dynamic_axes={input_name: {0: "batch"}, "probabilities": {0: "batch"}},
    )
    sha = save_onnx(onnx.load_from_string(buf.getvalue()), path, meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    p_onnx = np.concatenate([sess.run(["probabilities"], {input_name: np.ascontiguousarray(probe[i : i + 64])})[0]
                             for i in range(0, len(probe), 64)])
    with torch.no_grad():
        p_torch = wrapped(torch.from_numpy(np.ascontiguousarray(probe))).numpy()
    diff = float(np.abs(p_onnx - p_torch).max())
    check = {
        "windows": int(len(probe)), "max_abs_prob_diff": diff, "tolerance": tolerance,
        "label_agreement": float(np.mean(p_onnx.argmax(1) == p_torch.argmax(1))),
        "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__, "torch": torch.__version__,
    }
    if diff > tolerance:
        raise RuntimeError(f"{path.name}: ONNX Runtime differs from torch by {diff:.2e} > {tolerance:.0e}")
    return sha, check


# ---------------------------------------------------------------------------------------------
# Reports


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")}


# ---------------------------------------------------------------------------------------------
# What every command built on this loop does before and after its fit (training.cnn,
# training.wavenet): decode the splits, then export, report and write the manifest entry


@dataclass
class _Prepared:
    data_name: str  # basename of the dataset root, for the manifest
    labels: tuple[str, ...]
    train: list[Track]
    valid: list[Track]
    train_signals: list[np.ndarray]
    valid_signals: list[np.ndarray]
    train_y: np.ndarray
    valid_y: np.ndarray


def _prepare(data_root: str | Path, threads: int) -> _Prepared:
    import torch

    torch.set_num_threads(threads)
    ds, train, valid = train_valid(data_root)
    labels = ds.labels
    index = {g: i for i, g in enumerate(labels)}
    return _Prepared(
        Path(data_root).resolve().name, labels, train, valid, decode(train, "decode train"), decode(valid, "decode valid"),
        np.array([index[t.genre] for t in train]), np.array([index[t.genre] for t in valid]),
    )


def _probe(data: EvalSet, n: int = 256) -> np.ndarray:
    """Up to ``n`` held-out windows spread over all validation tracks, for the ONNX check."""
    x = np.concatenate(data.inputs)
    return x[np.linspace(0, len(x) - 1, min(n, len(x))).astype(int)]


def _finish(
    name: str, kind: str, net, result: FitResult, prep: _Prepared, valid: EvalSet, opts: FitOptions,
    hyper: dict[str, Any], out_dir: Path, run_dir: Path, command: str, description: str, input_build: str,
    t0: float, extra: dict[str, Any],
) -> dict[str, Any]:
    """Curves, confusion matrix, ONNX export and check, metrics JSON and manifest entry."""
    net.load_state_dict(result.state)
    labels = prep.labels
    save_curves(result.history, run_dir / f"{name}_curves.png", f"{name}: {hyper}")
    save_confusion_png(result.valid["track"]["confusion"], labels, run_dir / f"{name}_valid_track_confusion.png",
                       f"{name.upper()} track level (valid, epoch {result.best_epoch})")
    path = out_dir / f"{name}.onnx"
    input_shape = [None, *net.input_shape]
    meta = {"labels": list(labels), "kind": kind, "sample_rate": audio.SAMPLE_RATE,
            "window_seconds": audio.WINDOW_SECONDS,
            "input": {"name": kind, "shape": input_shape, "build": input_build}}
    sha, check = export_onnx(net, kind, path, meta, _probe(valid), opts.tolerance)
    seconds = round(time.time() - t0, 1)
    v = result.valid
    report = {
        "model": name, "hyperparameters": hyper, "options": asdict(opts), "labels": list(labels),
        "best_epoch": result.best_epoch, "stopped": result.stopped, "history": result.history,
        "valid": v, "onnx_check": check, "onnx_bytes": path.stat().st_size,
        "fit_seconds": result.seconds, "seconds": seconds, "command": command, **extra,
    }
    (run_dir / f"{name}_metrics.json").write_text(json.dumps(report, indent=2))
    update_manifest(out_dir, {
        "name": name,
        "file": path.name,
        "sha256": sha,
        "kind": kind,
        "description": description,
        "input_name": kind,
        "input": {"shape": input_shape, "dtype": "float32", "build": input_build},
        "output": "probabilities",
        # Windows per ONNX Runtime call: a 10-minute track in one call would hold ~1 GB of
        # first-layer activations; chunks of 64 keep a run's memory bounded at the same speed.
        "max_batch": MAX_BATCH,
        "labels": list(labels),
        "sample_rate": audio.SAMPLE_RATE,
        "window_seconds": audio.WINDOW_SECONDS,
        "hop_seconds": audio.HOP_SECONDS,
        "metrics": {
            "valid_track": _summary(v["track"]) | {"per_genre": v["track"]["per_genre"]},
            "valid_window": _summary(v["window"]) | {"per_genre": v["window"]["per_genre"]},
            "note": "fitted on the train split only; valid_*: every 3 s window (hop 1.5 s) of the held-out "
                    "valid tracks, track = mean softmax over its windows (gtag's vote). The valid split "
                    "also chose the epoch" + (" and the config" if "search" in extra else "") + ".",
        },
        "training": {
            "data": prep.data_name,
            "fitted_on": "train",  # valid chose the epoch (and config) only: the ensemble may score it there
            "split": {"fit": "train", "early_stopping": "valid"},
            "variants": sorted({t.variant for t in prep.train}),
            "tracks": {"train": len(prep.train), "valid": len(prep.valid)},
            "valid_windows": valid.windows,
            "windows_drawn": opts.epoch_windows * len(result.history),
            "epochs": len(result.history), "best_epoch": result.best_epoch, "stopped": result.stopped,
            "hyperparameters": hyper, "seed": opts.seed, "command": command, "seconds": seconds,
        },
        "export": {"opset": OPSET, "exporter": EXPORTER, **check},
    })
    print(f"[{name}] valid track acc {v['track']['accuracy']:.3f} (window {v['window']['accuracy']:.3f}, "
          f"track macro F1 {v['track']['macro_f1']:.3f}); ONNX {path.stat().st_size / 1e6:.2f} MB, "
          f"max |onnx - torch| {check['max_abs_prob_diff']:.1e}; {seconds / 60:.1f} min", flush=True)
    return report
