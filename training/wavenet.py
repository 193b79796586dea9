"""`gtag-train wavenet`: the WaveNet-style raw-audio net (``training.nets.WaveNetClassifier``),
fitted by ``training.loop``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gtag.audio import decode as audio
from gtag.models.runtime import KIND_WAVEFORM

from .loop import WaveNetOptions, _finish, _prepare, fit, seed_everything
from .windows import WaveWindows, wave_eval_set


def train_wavenet(data_root: str | Path, out_dir: str | Path, run_dir: str | Path,
                  opts: WaveNetOptions = WaveNetOptions(), command: str = "") -> dict[str, Any]:
    """Fit the WaveNet-style classifier on raw windows, export ``wavenet.onnx`` and its manifest entry.

    Writes ``run_dir/wavenet_{metrics.json,curves.png,valid_track_confusion.png,best.pt}``; returns
    the metrics written to JSON."""
    from .nets import WaveNetClassifier

    t0 = time.time()
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print("[wavenet] options " + json.dumps(asdict(opts)), flush=True)
    prep = _prepare(data_root, opts.threads)
    source = WaveWindows(prep.train_signals, opts)
    valid = wave_eval_set(prep.valid_signals, prep.valid_y)
    hyper = {k: getattr(opts, k) for k in ("front_channels", "front_strides", "pool", "channels", "skip_channels",
                                          "kernel_size", "layers", "stacks", "dropout", "lr")}
    seed_everything(opts.seed)
    net = WaveNetClassifier(len(prep.labels), **{k: v for k, v in hyper.items() if k != "lr"})
    result = fit(net, source, prep.train_y, valid, prep.labels, opts.lr, opts.epochs, opts,
                 checkpoint=run_dir / "wavenet_best.pt", desc="wavenet")
    rf = opts.stacks * (opts.kernel_size - 1) * (2**opts.layers - 1) + 1
    rate = audio.SAMPLE_RATE / (math.prod(opts.front_strides) * opts.pool)
    return _finish(
        "wavenet", KIND_WAVEFORM, net, result, prep, valid, opts, hyper, out_dir, run_dir, command,
        f"WaveNet-style net on raw 3 s windows ({opts.stacks}x{opts.layers} gated dilated blocks, "
        f"receptive field {rf / rate:.1f} s)",
        "gtag.audio.decode.frame_signal(samples, 66150, hop)[:, None]  (raw samples, short clips tiled)",
        t0, {"receptive_field_seconds": round(rf / rate, 2)},
    )
