"""Speed of the musicnn path against the CNN path, on one core, measured in the same run.

Times, on the concatenated audio of a few GTZAN clips (decoding excluded: the same for both paths):

- the musicnn path as gtag runs it: ``gtag.audio.musicnn_input.musicnn_patches`` at the manifest's hop, then
  ONNX Runtime calls of ``max_batch`` windows, for the float model and its CPU variant;
- the patches alone;
- the CNN path (the baseline): ``log_mel_spectrogram`` at 1.5 s and one ONNX Runtime call on the
  shipped ``cnn.onnx`` (or, when none is shipped, a default-size ``training.nets.GenreCNN`` with
  random weights, exported here: the same cost as a trained one; needs torch).

    python benchmarks/bench_musicnn.py [--models exported_models] [--clips 6] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # per-core figures: no hidden thread pools

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from timing import best  # benchmarks/timing.py (the script's own folder is on sys.path)

from gtag.audio import decode as audio
from gtag.audio import features, musicnn_input
from gtag.models.runtime import default_models_dir, read_manifest

DATA = Path(__file__).resolve().parents[2] / "shared" / "gtzan"


def _clips(data: Path, n: int) -> list[Path]:
    rows = [line.split("\t") for line in (data / "MANIFEST.tsv").read_text().splitlines()[1:]]
    return [data / r[4] for r in rows if r[3] == "original"][:n]


def _random_cnn(path: Path) -> None:
    import torch

    from training.nets import GenreCNN

    net = GenreCNN().eval()
    torch.onnx.export(torch.nn.Sequential(net, torch.nn.Softmax(dim=1)), (torch.zeros(2, *GenreCNN.input_shape),),
                      str(path), dynamo=False, opset_version=17, input_names=["log_mel"],
                      output_names=["probabilities"], dynamic_axes={"log_mel": {0: "batch"}})


def speed_report(models_dir: Path, clips: list[Path], repeats: int = 2) -> dict[str, Any]:
    """x-realtime and ms per window on one core (ORT intra-op threads 1) of the musicnn path (float
    and CPU variant) and the CNN path, and their ratio."""
    import onnxruntime as ort

    specs = {s.name: s for s in read_manifest(models_dir)}
    mnn = specs["musicnn"]
    y = np.concatenate([audio.load_audio(c).samples for c in clips])
    seconds = y.size / audio.SAMPLE_RATE
    hop = int(round(mnn.hop_seconds * audio.SAMPLE_RATE))
    batch = int(mnn.extra.get("max_batch") or 8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    out: dict[str, Any] = {"audio_seconds": round(seconds, 1), "musicnn_hop_seconds": mnn.hop_seconds,
                           "musicnn_windows": len(audio.window_starts(y.size, audio.WINDOW_SAMPLES, hop))}
    with tempfile.TemporaryDirectory() as tmp:
        cnn_onnx, out["cnn"] = models_dir / specs["cnn"].file if "cnn" in specs else None, "shipped cnn.onnx"
        if cnn_onnx is None or not cnn_onnx.is_file():
            cnn_onnx, out["cnn"] = Path(tmp) / "cnn.onnx", "GenreCNN() defaults, random weights (no cnn shipped)"
            _random_cnn(cnn_onnx)
        s_cnn = ort.InferenceSession(str(cnn_onnx), opts, providers=["CPUExecutionProvider"])
        variant = mnn.extra.get("cpu_variant")
        files = {"float": mnn.file} | ({"cpu_variant": variant["file"]} if isinstance(variant, dict) else {})
        for name, file in files.items():
            sess = ort.InferenceSession(str(models_dir / file), opts, providers=["CPUExecutionProvider"])

            def musicnn_path(sess=sess):
                x = musicnn_input.musicnn_patches(y, audio.SAMPLE_RATE, hop)
                return [sess.run(["probabilities", "msd_tags"], {mnn.input_name: x[i:i + batch]})
                        for i in range(0, len(x), batch)]

            t = best(musicnn_path, repeats, warm_up=True)
            out[f"musicnn_{name}_x_realtime"] = round(seconds / t, 1)
            out[f"musicnn_{name}_ms_per_window"] = round(1000 * t / out["musicnn_windows"], 1)
        t_pat = best(lambda: musicnn_input.musicnn_patches(y, audio.SAMPLE_RATE, hop), repeats, warm_up=True)
        t_cnn = best(lambda: s_cnn.run(None, {s_cnn.get_inputs()[0].name: features.log_mel_spectrogram(y)[:, None]}),
                      repeats, warm_up=True)
    out["musicnn_patches_x_realtime"] = round(seconds / t_pat, 1)
    out["cnn_x_realtime"] = round(seconds / t_cnn, 1)
    out["cnn_windows"] = len(audio.window_starts(y.size))
    out["cnn_ms_per_window"] = round(1000 * t_cnn / out["cnn_windows"], 1)
    for name in files:  # the ratio is the figure: both paths measured in this run, on this machine
        out[f"musicnn_{name}_vs_cnn"] = round(out[f"musicnn_{name}_x_realtime"] / out["cnn_x_realtime"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=None, help="Models folder (default: the shipped models).")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--clips", type=int, default=6, help="30 s GTZAN clips, concatenated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    report = speed_report(args.models or default_models_dir(), _clips(args.data, args.clips), args.repeats)
    report |= {"date": str(date.today()), "machine": platform.platform(), "cores": os.cpu_count()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
