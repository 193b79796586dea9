"""Feature-extraction speed: gtag's whole-track pipeline against the study-style computation.

The baseline is measured in the same run on the same audio: librosa called once per 3-second
window (gtag.audio.features.reference_features), as the study and the Kaggle 3-second table did.
Figures are x-realtime on one core (BLAS/FFT threads pinned to 1) and the ratio between them.

    python benchmarks/bench_features.py [--clips N] [--data ../shared/gtzan] [--json out.json]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # per-core figures: no hidden thread pools

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

from timing import best  # benchmarks/timing.py (the script's own folder is on sys.path)

from gtag.audio import decode as audio
from gtag.audio import features


def _clips(data: Path, n: int) -> list[Path]:
    rows = [line.split("\t") for line in (data / "MANIFEST.tsv").read_text().splitlines()[1:]]
    full = [data / r[4] for r in rows if r[3] == "original"]
    return full[:: max(1, len(full) // n)][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "gtzan")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    paths = _clips(args.data, args.clips)
    decode_t = 0.0
    signals = []
    for p in paths:
        t = time.perf_counter()
        signals.append(audio.load_audio(p).samples)
        decode_t += time.perf_counter() - t
    seconds = sum(len(y) for y in signals) / audio.SAMPLE_RATE
    features.analyze(signals[0])  # warm up numba and FFT plans outside the timings

    W = audio.WINDOW_SAMPLES
    rows = {}

    def study():
        for y in signals:  # non-overlapping 3 s windows, one librosa pass each
            for s in audio.window_starts(len(y), W, W):
                features.reference_features(y[s : s + W])

    rows["study-style: librosa per 3 s window (hop 3 s)"] = best(study, 1)
    rows["gtag: whole track, 57 features (hop 3 s)"] = best(
        lambda: [features.analyze(y, hop=W, want_mel=False) for y in signals], args.repeat)
    rows["gtag: whole track, 57 features (hop 1.5 s, tag default)"] = best(
        lambda: [features.analyze(y, want_mel=False) for y in signals], args.repeat)
    rows["gtag: whole track, 57 features + log-mel (hop 1.5 s)"] = best(
        lambda: [features.analyze(y) for y in signals], args.repeat)
    rows["gtag: log-mel only (CNN input, hop 1.5 s)"] = best(
        lambda: [features.analyze(y, want_features=False) for y in signals], args.repeat)
    rows["decode + resample (floor)"] = decode_t

    base = rows["study-style: librosa per 3 s window (hop 3 s)"]
    print(f"{len(paths)} GTZAN clips, {seconds:.0f} s of audio, {platform.processor() or platform.machine()}, "
          f"{date.today()}, 1 thread")
    print(f"{'pipeline':58s} {'x realtime':>11s} {'speed-up vs study':>18s}")
    result = []
    for name, t in rows.items():
        print(f"{name:58s} {seconds / t:11.0f} {base / t:17.1f}x")
        result.append({"pipeline": name, "seconds": round(t, 3), "x_realtime": round(seconds / t, 1),
                       "speedup_vs_study": round(base / t, 2)})
    if args.json:
        args.json.write_text(json.dumps({"date": str(date.today()), "audio_seconds": seconds,
                                         "machine": platform.platform(), "rows": result}, indent=2))


if __name__ == "__main__":
    main()
