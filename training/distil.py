"""`gtag-train wavenet-distil`: the raw-audio WaveNet distilled from the shipped musicnn.

The teacher (the best model: musicnn, through gtag's own ONNX session and ``musicnn_patches``) gives
calibrated genre probabilities for every 3 s window (hop 1.5 s) of every training audio file,
labelled GTZAN train tracks and, optionally, folders of unlabelled audio. They are cached under the
run dir (keyed by the teacher's sha256 and the file list). The student is the same WaveNet-style net
as `gtag-train wavenet`, trained on augmented windows against the teacher's clean-window
probabilities (KL at a temperature) plus cross-entropy on the GTZAN label where there is one: the
teacher says what a window sounds like, the augmentation teaches the student to say so whatever the
codec, EQ or mastering did to it.

Never used: the valid split's audio or teacher labels (valid chooses the epoch and reports), and by
default the real library (``--library`` only measures it, it is never trained on).
"""

from __future__ import annotations

import copy
import json
import math
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
from gtag.audio.decode import AUDIO_EXTENSIONS
from gtag.models.runtime import KIND_WAVEFORM, load_models, read_manifest

from .data import Track
from .evaluate import evaluate_windows
from .export import update_manifest
from .loop import FitResult, WaveNetOptions, _finish, _prepare, evaluate, seed_everything
from .realworld import library_files, summarise
from .windows import EqOptions, band_limit, decode, draw_eq, eq_gain, wave_eval_set


@dataclass(frozen=True)
class DistilOptions(WaveNetOptions, EqOptions):
    """The WaveNet's options plus the teacher, the loss mix and the extra augmentations."""

    teacher: str = "musicnn"  # manifest name of the teacher in the models dir
    temperature: float = 2.0  # softens teacher and student logits in the KL term
    alpha: float = 0.7  # share of the KL term; 1 - alpha goes to CE on labelled windows
    # The budget measured in the README (30 min on the shared 2-core machine); the student was still
    # improving at its end, so a longer schedule is the first thing to try where CPU time allows.
    epochs: int = 10
    max_minutes: float = 45.0
    eval_from: int = 0  # first epoch validated (0: the second half of the schedule, as patience counts)
    unlabelled_share: float = 0.3  # share of windows drawn from unlabelled files (when there are any)
    tilt_p: float = 0.5  # EqOptions, on by default here: half the windows tilted ...
    lowpass_p: float = 0.25  # ... a quarter low-passed (on the audio, 22,050 Hz)
    master_p: float = 0.3  # loud modern mastering: loudness up, peaks soft-clipped ...
    master_drive: tuple[float, float] = (1.5, 4.0)  # ... by tanh at this drive


# ---------------------------------------------------------------------------------------------
# Teacher


def _teacher_probs(teacher, y: np.ndarray) -> np.ndarray:
    """Teacher genre probabilities of every window (hop 1.5 s) of one track."""
    p, _, _ = teacher.predict_all(musicnn_input.musicnn_patches(y), tags=False, signals=False)
    return p


def teacher_labels(teacher, ids: list[str], signals: list[np.ndarray], cache: Path) -> list[np.ndarray]:
    """Per track, the teacher's ``(n_windows, n_labels)`` probabilities; cached in ``cache`` (npz,
    no pickle) and reused only for the same teacher file and the same track ids."""
    key = np.array([teacher.sha256, *ids])
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if z["key"].shape == key.shape and bool(np.all(z["key"] == key)):
                return np.split(z["probs"], np.cumsum(z["counts"])[:-1])
    probs = [_teacher_probs(teacher, y) for y in tqdm(signals, desc="teacher labels", unit="track")]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, key=key, counts=np.array([len(p) for p in probs]), probs=np.concatenate(probs))
    tmp.replace(cache)
    return probs


def window_target(probs: np.ndarray, start: int, n_samples: int) -> np.ndarray:
    """The teacher's probabilities for a window starting at ``start``: linear between the two
    clean teacher windows (hop 1.5 s) around it (on a teacher window: exactly its label)."""
    if len(probs) == 1 or n_samples < audio.WINDOW_SAMPLES:
        return probs[0]
    starts = audio.window_starts(n_samples)[: len(probs)]
    w = np.maximum(0.0, 1.0 - np.abs(starts - start) / audio.HOP_SAMPLES)
    if w.sum() <= 0:  # past the last teacher window (a tail shorter than a hop)
        return probs[int(np.argmin(np.abs(starts - start)))]
    return (w @ probs / w.sum()).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Augmented windows


def eq_and_lowpass(x: np.ndarray, tilt_db_per_octave: float, cutoff_hz: float | None) -> np.ndarray:
    """One FFT: a spectral tilt of ``tilt_db_per_octave`` around 1 kHz (a brighter or darker
    master) and, if ``cutoff_hz``, a codec-like low-pass with a 500 Hz raised-cosine edge."""
    gain = eq_gain(np.fft.rfftfreq(x.size, 1.0 / audio.SAMPLE_RATE), tilt_db_per_octave, cutoff_hz)
    return np.fft.irfft(np.fft.rfft(x) * gain, n=x.size).astype(np.float32)


def master(x: np.ndarray, drive: float) -> np.ndarray:
    """Loud modern mastering: peaks pushed into a tanh soft clip, the level kept near the input's peak."""
    peak = float(np.max(np.abs(x))) or 1.0
    return (np.tanh(drive * x / peak) / np.tanh(drive) * peak).astype(np.float32)


class DistilWindows:
    """Random augmented raw windows with their teacher target and label (-1: unlabelled).

    Tracks are drawn with genre balance for labelled ones (as ``loop.fit`` samples), and
    ``unlabelled_share`` of the time uniformly from the unlabelled ones. Augmentations: time shift
    (any start; short clips rotated and tiled as gtag tiles them), band limit to 8 kHz, EQ tilt,
    codec-like low-pass, soft-clip mastering, random gain.
    """

    def __init__(self, signals: list[np.ndarray], probs: list[np.ndarray], y: np.ndarray, opts: DistilOptions):
        self.opts, self.signals, self.probs, self.y = opts, signals, probs, y
        self.limited = [band_limit(s) for s in tqdm(signals, desc="band-limited copies", unit="track")]
        self.by_genre = [np.flatnonzero(y == g) for g in np.unique(y[y >= 0])]
        self.unlabelled = np.flatnonzero(y < 0)

    def pick(self, rng: np.random.Generator) -> int:
        if len(self.unlabelled) and rng.random() < self.opts.unlabelled_share:
            return int(rng.choice(self.unlabelled))
        return int(rng.choice(self.by_genre[int(rng.integers(len(self.by_genre)))]))

    def draw(self, track: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        o, n = self.opts, audio.WINDOW_SAMPLES
        y = (self.limited if rng.random() < o.band_limit_p else self.signals)[track]
        if y.size >= n:
            start = int(rng.integers(y.size - n + 1))
            x = y[start : start + n]
        else:
            start = 0
            x = audio.fit_to_window(np.roll(y, int(rng.integers(y.size))), n)
        target = window_target(self.probs[track], start, y.size)
        tilt, cutoff = draw_eq(o, rng)
        if tilt or cutoff is not None:
            x = eq_and_lowpass(x, tilt, cutoff)
        if rng.random() < o.master_p:
            x = master(x, rng.uniform(*o.master_drive))
        gain = 10.0 ** (rng.uniform(-o.gain_db, o.gain_db) / 20.0)
        return (x * gain).astype(np.float32)[None], target, int(self.y[track])


def distil_loss(logits, teacher_p, y, temperature: float, alpha: float, label_smoothing: float):
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(label)``; the CE term averages
    over labelled windows only (y >= 0) and is 0 when there are none. Returns (loss, kl, ce)."""
    import torch
    from torch.nn import functional as F

    t = temperature
    soft = torch.softmax(torch.log(teacher_p.clamp_min(1e-8)) / t, 1)
    kl = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction="batchmean") * t * t
    has = y >= 0
    ce = (F.cross_entropy(logits[has], y[has], label_smoothing=label_smoothing) if bool(has.any())
          else logits.sum() * 0.0)
    return alpha * kl + (1.0 - alpha) * ce, kl, ce


def fit_distil(net, source: DistilWindows, valid, labels: tuple[str, ...], opts: DistilOptions,
               checkpoint: Path | None = None) -> FitResult:
    """AdamW, one-cycle schedule (as ``loop.fit``), distillation loss; keep the epoch with the best
    valid track accuracy (ties: lower valid loss), validated from ``eval_from``."""
    import torch

    seed_everything(opts.seed)
    rng = np.random.default_rng(opts.seed)
    steps = math.ceil(opts.epoch_windows / opts.batch_size)
    optim = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts.lr, total_steps=opts.epochs * steps,
                                                pct_start=0.1, anneal_strategy="cos")
    eval_from = opts.eval_from or opts.epochs // 2 + 1
    t0, best, best_key, history = time.time(), None, (-1.0, 0.0), []
    stopped = f"ran all {opts.epochs} epochs"
    for epoch in range(1, opts.epochs + 1):
        net.train()
        sums = {"loss": 0.0, "kl": 0.0, "ce": 0.0}
        seen = agree = 0
        for _ in tqdm(range(steps), desc=f"distil epoch {epoch}/{opts.epochs}", unit="batch", leave=False,
                      mininterval=5):
            drawn = [source.draw(source.pick(rng), rng) for _ in range(opts.batch_size)]
            x = torch.from_numpy(np.stack([d[0] for d in drawn]))
            tp = torch.from_numpy(np.stack([d[1] for d in drawn]))
            y = torch.tensor([d[2] for d in drawn], dtype=torch.long)
            logits = net(x)
            loss, kl, ce = distil_loss(logits, tp, y, opts.temperature, opts.alpha, opts.label_smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            seen += len(drawn)
            for k, v in (("loss", loss), ("kl", kl), ("ce", ce)):
                sums[k] += v.item() * len(drawn)
            agree += int((logits.argmax(1) == tp.argmax(1)).sum())
        row = {"epoch": epoch, "lr": optim.param_groups[0]["lr"], "train_loss": sums["loss"] / seen,
               "train_kl": sums["kl"] / seen, "train_ce": sums["ce"] / seen,
               "train_window_accuracy": agree / seen}  # agreement with the teacher's top genre
        if epoch >= eval_from or epoch == opts.epochs:
            metrics, valid_loss = evaluate(net, valid, labels, opts.eval_batch)
            row |= {"valid_loss": valid_loss, "valid_window_accuracy": metrics["window"]["accuracy"],
                    "valid_track_accuracy": metrics["track"]["accuracy"],
                    "valid_track_macro_f1": metrics["track"]["macro_f1"]}
            key = (metrics["track"]["accuracy"], -valid_loss)
            if key > best_key:
                best_key = key
                best = FitResult(copy.deepcopy(net.state_dict()), epoch, metrics)
                if checkpoint:
                    checkpoint.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({"state_dict": best.state, "epoch": epoch, "labels": list(labels)}, checkpoint)
        row["seconds"] = round(time.time() - t0, 1)
        history.append(row)
        print(f"distil epoch {epoch}: loss {row['train_loss']:.3f} (kl {row['train_kl']:.3f} ce {row['train_ce']:.3f}) "
              f"teacher agreement {row['train_window_accuracy']:.3f}"
              + (f" | valid track acc {row['valid_track_accuracy']:.3f}" if "valid_loss" in row else "")
              + f" ({row['seconds']:.0f} s)", flush=True)
        if best and epoch - best.best_epoch >= opts.patience:
            stopped = f"early stop: no better valid track accuracy for {opts.patience} epochs"
            break
        if time.time() - t0 > opts.max_minutes * 60 and epoch < opts.epochs:
            stopped = f"time cap: {opts.max_minutes} min"
            if best is None:  # never validated yet: validate what there is
                metrics, _ = evaluate(net, valid, labels, opts.eval_batch)
                best = FitResult(copy.deepcopy(net.state_dict()), epoch, metrics)
            break
    assert best is not None
    for row in history:  # loop's curves plot valid columns on every row: NaN where not validated
        row |= {k: row.get(k, float("nan")) for k in ("valid_loss", "valid_window_accuracy", "valid_track_accuracy")}
    best.history, best.seconds, best.stopped = history, round(time.time() - t0, 1), stopped
    return best


# ---------------------------------------------------------------------------------------------
# Measuring on a real library


def library_report(models: list, library_root: Path) -> dict[str, dict[str, Any]]:
    """Each model alone on every track of the library, through gtag's own analysis (decode once);
    per folder as ``gtag-train library-check`` reports it."""
    from gtag.predict.pipeline import AnalysisConfig, analyse_file

    config = AnalysisConfig(hops=((KIND_WAVEFORM, audio.HOP_SAMPLES),))
    rows: dict[str, list[tuple[str, str, bool]]] = {i: [] for i in range(len(models))}
    for path, folder in tqdm(library_files(library_root), desc="library", unit="track"):
        an = analyse_file(path, config)
        for i, m in enumerate(models):
            p, _, _ = m.predict_all(an.batches[KIND_WAVEFORM], tags=False, signals=False)
            rows[i].append((folder, m.spec.labels[int(p.mean(0).argmax())], True))
    return {i: summarise(r) for i, r in rows.items()}


def _headline(valid_track: dict[str, Any], library: dict[str, Any] | None) -> dict[str, Any]:
    out = {"valid_track_accuracy": valid_track["accuracy"], "valid_track_macro_f1": valid_track["macro_f1"]}
    if library:
        out |= {f"library_{g}_recall": library[g]["called_by_folder_genre"] for g in ("rock", "classical")
                if g in library}
    return out


def beats(after: dict[str, Any], before: dict[str, Any] | None) -> bool:
    """Better on both sets: higher valid track accuracy, and on the library higher rock recall with
    classical recall not lower (no library figures: no claim). Nothing shipped before: True."""
    if not before:
        return True
    keys = ("library_rock_recall", "library_classical_recall")
    if not all(k in after and k in before for k in keys):
        return False
    return (after["valid_track_accuracy"] > before["valid_track_accuracy"]
            and after["library_rock_recall"] > before["library_rock_recall"]
            and after["library_classical_recall"] >= before["library_classical_recall"])


def train_distil(data_root: str | Path, models_dir: str | Path, run_dir: str | Path,
                 opts: DistilOptions = DistilOptions(), library_root: str | Path | None = None,
                 unlabelled: tuple[str, ...] = (), command: str = "", ship: bool = True) -> dict[str, Any]:
    """Distil the WaveNet from the teacher, compare it with the shipped (from-scratch) wavenet on
    GTZAN valid and on the library, and export it to ``models_dir`` only if it beats it on both
    (valid track accuracy, and library rock and classical recall). Writes ``run_dir/report.json``."""
    from .nets import WaveNetClassifier

    t0 = time.time()
    models_dir, run_dir = Path(models_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print("[wavenet-distil] options " + json.dumps(asdict(opts)), flush=True)
    names = {s.name for s in read_manifest(models_dir)}
    (teacher,) = load_models(models_dir, [opts.teacher], device="cpu")
    baseline = load_models(models_dir, ["wavenet"], device="cpu")[0] if "wavenet" in names else None
    prep = _prepare(data_root, opts.threads)
    missing = set(prep.labels) - set(teacher.spec.labels)
    if missing:
        raise ValueError(f"teacher {teacher.spec.name} has no output for {sorted(missing)}")
    columns = [list(teacher.spec.labels).index(g) for g in prep.labels]
    extra = sorted(p for d in unlabelled for p in Path(d).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    extra_signals = decode([Track(p.stem, p, "", "") for p in extra], "decode unlabelled") if extra else []
    ids = [t.track_id for t in prep.train] + [str(p) for p in extra]
    signals = prep.train_signals + extra_signals
    # the teacher's columns of the dataset's genres, renormalised (all of them for GTZAN)
    probs = [p[:, columns] / np.maximum(p[:, columns].sum(1, keepdims=True), 1e-12)
             for p in teacher_labels(teacher, ids, signals, run_dir / "teacher_train.npz")]
    y = np.concatenate([prep.train_y, np.full(len(extra), -1)]).astype(np.int64)
    teacher_top = np.array([p.mean(0).argmax() for p in probs[: len(prep.train)]])
    source = DistilWindows(signals, probs, y, opts)
    valid = wave_eval_set(prep.valid_signals, prep.valid_y)

    arch = ("front_channels", "front_strides", "pool", "channels", "skip_channels", "kernel_size", "layers",
            "stacks", "dropout")
    hyper = {k: getattr(opts, k) for k in (*arch, "lr", "temperature", "alpha")}
    seed_everything(opts.seed)
    net = WaveNetClassifier(len(prep.labels), **{k: hyper[k] for k in arch})
    result = fit_distil(net, source, valid, prep.labels, opts, checkpoint=run_dir / "wavenet_distil_best.pt")
    cand_dir = run_dir / "candidate"
    distillation = {
        "teacher": {"name": teacher.spec.name, "sha256": teacher.sha256,
                    "fitted_on": teacher.spec.extra.get("training", {}).get("fitted_on"),
                    "data": teacher.spec.extra.get("training", {}).get("data"),
                    "train_track_accuracy": float(np.mean(teacher_top == prep.train_y))},
        "student_audio": {"gtzan_train_tracks": len(prep.train), "unlabelled_files": len(extra),
                          "teacher_windows": int(sum(len(p) for p in probs))},
        "held_out": "GTZAN valid (audio and teacher labels never trained on)"
                    + ("; the whole real library (measured only)" if library_root else ""),
        "augmentations": ["time shift", f"band limit 8 kHz (p {opts.band_limit_p})",
                          f"EQ tilt +-{opts.tilt_db} dB/oct (p {opts.tilt_p})",
                          f"low-pass {opts.lowpass_hz[0]:.0f}-{opts.lowpass_hz[1]:.0f} Hz (p {opts.lowpass_p})",
                          f"tanh mastering drive {opts.master_drive} (p {opts.master_p})", f"gain +-{opts.gain_db} dB"],
    }
    rf = opts.stacks * (opts.kernel_size - 1) * (2**opts.layers - 1) + 1
    rate = audio.SAMPLE_RATE / (math.prod(opts.front_strides) * opts.pool)
    report = _finish(
        "wavenet", KIND_WAVEFORM, net, result, prep, valid, opts, hyper, cand_dir, run_dir, command,
        f"WaveNet-style net on raw 3 s windows ({opts.stacks}x{opts.layers} gated dilated blocks, "
        f"receptive field {rf / rate:.1f} s), distilled from {teacher.spec.name}",
        "gtag.audio.decode.frame_signal(samples, 66150, hop)[:, None]  (raw samples, short clips tiled)",
        t0, {"receptive_field_seconds": round(rf / rate, 2), "distillation": distillation},
    )
    # The from-scratch wavenet on the same valid windows, scored by the same code.
    before: dict[str, Any] = {}
    if baseline is not None:
        p = [baseline.predict_all(x, tags=False, signals=False)[0] for x in valid.inputs]
        groups = np.concatenate([np.full(len(q), i) for i, q in enumerate(p)])
        wy = np.concatenate([np.full(len(q), t) for q, t in zip(p, valid.y)])
        before["valid"] = evaluate_windows(np.concatenate(p), wy, groups, prep.labels)
    (student,) = load_models(cand_dir, ["wavenet"], device="cpu")
    lib: dict[int, Any] = {}
    if library_root:
        lib = library_report([m for m in (student, baseline) if m is not None], Path(library_root))
    after = {"valid": result.valid, "library": lib.get(0)}
    before |= {"library": lib.get(1)} if baseline is not None else {}
    b = _headline(before["valid"]["track"], before.get("library")) if before else None
    a = _headline(after["valid"]["track"], after["library"])
    summary = {"before (from scratch, shipped wavenet)": b, "after (distilled)": a}
    better, shipped = beats(a, b), False
    if ship and better:
        entry = next(m for m in json.loads((cand_dir / "manifest.json").read_text())["models"]
                     if m["name"] == "wavenet")
        if after["library"]:
            entry.setdefault("metrics", {})["library"] = after["library"]
        entry["training"]["distillation"] = distillation
        tmp = models_dir / ".wavenet.onnx.tmp"  # whole file or nothing: copy beside, then rename
        shutil.copyfile(cand_dir / "wavenet.onnx", tmp)
        os.replace(tmp, models_dir / "wavenet.onnx")
        update_manifest(models_dir, entry)
        shipped = True
    out = {"summary": summary, "distilled_beats_from_scratch": better, "exported": shipped,
           "distillation": distillation, "options": asdict(opts), "command": command,
           "before": before, "after": after, "best_epoch": result.best_epoch,
           "stopped": result.stopped, "history": result.history, "seconds": round(time.time() - t0, 1),
           "student_metrics": str(run_dir / "wavenet_metrics.json"), "onnx_check": report["onnx_check"]}
    (run_dir / "report.json").write_text(json.dumps(out, indent=2, default=float))
    print("[wavenet-distil] " + json.dumps({"summary": summary, "better": better, "exported": shipped}, default=float),
          flush=True)
    return out
