"""`gtag-train cnn`: the log-mel CNN (``training.nets.GenreCNN``), fitted by ``training.loop``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from gtag.models.runtime import KIND_LOG_MEL

from .loop import CnnConfig, CnnOptions, _finish, _prepare, fit, seed_everything
from .windows import MelWindows, mel_eval_set


def train_cnn(data_root: str | Path, out_dir: str | Path, run_dir: str | Path,
              opts: CnnOptions = CnnOptions(), command: str = "") -> dict[str, Any]:
    """Search CNN configs briefly, fit the best, export ``cnn.onnx`` and its manifest entry.

    Writes ``run_dir/cnn_{metrics.json,curves.png,valid_track_confusion.png,best.pt}``; returns the
    metrics written to JSON."""
    from .nets import GenreCNN

    t0 = time.time()
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print("[cnn] options " + json.dumps(asdict(opts)), flush=True)
    prep = _prepare(data_root, opts.threads)
    # The draws of the precomputed short-clip rotations are seeded too (before any fit reseeds).
    source = MelWindows(prep.train_signals, opts, np.random.default_rng(opts.seed + 1))
    valid = mel_eval_set(prep.valid_signals, prep.valid_y)

    def make(c: CnnConfig):
        seed_everything(opts.seed)  # same initialisation stream for every config
        return GenreCNN(len(prep.labels), c.depth, c.width, c.dropout)

    search = []
    config = opts.config
    if opts.search:
        for i, c in enumerate(opts.search):
            r = fit(make(c), source, prep.train_y, valid, prep.labels, c.lr, opts.search_epochs,
                    replace(opts, patience=opts.search_epochs), desc=f"search {i + 1}/{len(opts.search)} {c}")
            search.append({"config": asdict(c), "valid_track_accuracy": r.valid["track"]["accuracy"],
                           "valid_loss": r.history[r.best_epoch - 1]["valid_loss"], "best_epoch": r.best_epoch,
                           "seconds": r.seconds, "history": r.history})
        best = max(range(len(search)), key=lambda i: (search[i]["valid_track_accuracy"], -search[i]["valid_loss"]))
        config = opts.search[best]
        print(f"[cnn] best config {config}", flush=True)
    net = make(config)
    result = fit(net, source, prep.train_y, valid, prep.labels, config.lr, opts.epochs, opts,
                 checkpoint=run_dir / "cnn_best.pt", desc="cnn")
    return _finish(
        "cnn", KIND_LOG_MEL, net, result, prep, valid, opts, asdict(config), out_dir, run_dir, command,
        f"CNN on 128-band log-mel patches ({config.depth} conv blocks, width {config.width})",
        "gtag.audio.features.analyze(samples, 22050, hop).log_mel[:, None]  (gtag.audio.features.log_mel_patches)",
        t0, {"search": search} if search else {},
    )
