"""End-to-end speed of `gtag tag --dry-run`, against baselines measured in the same run.

Makes real-length tracks (3-minute mp3 and flac files assembled from the shared GTZAN clips), then
measures, on one core (BLAS/FFT/ONNX Runtime threads pinned to 1):

- decode + resample alone: the physical floor;
- the study-style pipeline: decode, then librosa once per 3 s window for the 57 features;
- gtag's dry run with each shipped model alone and with the whole ensemble;
- the ensemble with --jobs 1 and --jobs 2 (wall clock, all cores);
- peak memory of `gtag predict` on a one-hour file (a separate process).

    python benchmarks/bench_pipeline.py [--tracks 4] [--minutes 3] [--json benchmarks/results.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # per-core figures: no hidden thread pools

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import soundfile as sf

from gtag.audio import decode as audio
from gtag.audio import features
from gtag.models.runtime import load_models, read_manifest
from gtag.predict.pipeline import Predictor
from gtag.run.records import TagOptions
from gtag.run.tagger import Tagger

DATA = Path(__file__).resolve().parents[2] / "shared" / "gtzan"


def make_tracks(folder: Path, n: int, minutes: float) -> list[Path]:
    """n tracks of ``minutes`` each, alternating mp3 and flac, from consecutive GTZAN clips (starting
    over when the share runs out: the timing does not depend on which music it is)."""
    rows = [r.split("\t") for r in (DATA / "MANIFEST.tsv").read_text().splitlines()[1:]]
    clips = [DATA / r[4] for r in rows if r[3] == "original"]
    per_track = int(np.ceil(minutes * 60 / 30))
    out = []
    for i in range(n):
        y = np.concatenate([audio.load_audio(clips[j % len(clips)]).samples
                            for j in range(i * per_track, (i + 1) * per_track)])
        path = folder / f"track{i:02d}.{'mp3' if i % 2 == 0 else 'flac'}"
        write_blocks(path, y)
        out.append(path)
    return out


def write_blocks(path: Path, y: np.ndarray) -> None:
    """Write in blocks: one huge write can crash libsndfile's encoders."""
    kw = {"format": "MP3", "subtype": "MPEG_LAYER_III"} if path.suffix == ".mp3" else {}
    with sf.SoundFile(str(path), "w", audio.SAMPLE_RATE, 1, **kw) as f:
        for s in range(0, len(y), audio.SAMPLE_RATE * 10):
            f.write(y[s:s + audio.SAMPLE_RATE * 10])


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_tagger(paths: list[Path], names: list[str] | None, jobs: int, cpu_variant: bool = True) -> None:
    models = load_models(names=names, device="cpu", threads=1, cpu_variant=cpu_variant)
    records = list(Tagger(Predictor(models), TagOptions(dry_run=True, force=True, jobs=jobs)).run(paths))
    failed = [r.error for r in records if r.error]
    if failed:
        raise RuntimeError(failed)


def study_style(paths: list[Path]) -> None:
    W = audio.WINDOW_SAMPLES
    for p in paths:
        y = audio.load_audio(p).samples
        for s in audio.window_starts(len(y), W, W):
            features.reference_features(y[s:s + W])


def peak_memory_one_hour(folder: Path) -> float:
    """MiB of peak RSS of `gtag predict` on a one-hour flac (generated in blocks)."""
    path = folder / "mix.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", audio.SAMPLE_RATE, 1) as f:
        base = audio.load_audio(DATA / "audio" / "jazz" / "jazz.00015.ogg").samples
        for _ in range(120):  # 120 x 30 s = 1 hour
            f.write(base * (0.8 + 0.2 * rng.random()))
    code = ("import resource, sys; from gtag.cli import main; "
            "sys.argv=['gtag','predict','--json',sys.argv[1]]; \n"
            "try: main()\nexcept SystemExit: pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024  # ru_maxrss is KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--jobs-tracks", type=int, default=36,
                    help="tracks for the --jobs 1 vs 2 comparison (enough to amortise worker start-up)")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_tracks(folder, args.tracks, args.minutes)
        seconds = sum(sf.info(str(p)).duration for p in paths)
        run_tagger(paths[:1], None, 1)  # warm up numba, ONNX sessions, FFT plans

        rows: dict[str, float] = {}
        rows["decode + resample (floor)"] = timed(lambda: [audio.load_audio(p) for p in paths])
        rows["study-style: decode + librosa per 3 s window"] = timed(lambda: study_style(paths))
        for spec in read_manifest():
            rows[f"gtag tag --dry-run, {spec.name} only"] = timed(lambda n=spec.name: run_tagger(paths, [n], 1))
            if spec.extra.get("cpu_variant"):  # what the CPU variant buys: the float model alone
                rows[f"gtag tag --dry-run, {spec.name} only, float model (no CPU variant)"] = timed(
                    lambda n=spec.name: run_tagger(paths, [n], 1, cpu_variant=False))
        voting = [m.spec.name for m in load_models(device="cpu")]  # the default: weight > 0
        everything = [spec.name for spec in read_manifest()]
        if voting != everything:
            rows["gtag tag --dry-run, all models"] = timed(lambda: run_tagger(paths, everything, 1))
        pair = [n for n in ("cnn", "musicnn") if n in everything]
        if len(pair) == 2 and voting != pair:  # the two strongest models together
            rows["gtag tag --dry-run, cnn + musicnn"] = timed(lambda: run_tagger(paths, pair, 1))
        rows["gtag tag --dry-run, ensemble"] = timed(lambda: run_tagger(paths, None, 1))
        # --jobs 1 vs 2 on a larger set: each worker process starts, imports and loads its models
        # once (~2 s), which a short set would not amortise (at ~400x, 36 minutes take ~5 s).
        (folder / "jobs").mkdir()
        more = make_tracks(folder / "jobs", args.jobs_tracks, args.minutes)
        more_seconds = sum(sf.info(str(p)).duration for p in more)
        jobs1 = timed(lambda: run_tagger(more, None, 1))
        jobs2 = timed(lambda: run_tagger(more, None, 2))
        memory = None if args.skip_memory else peak_memory_one_hour(folder)

    base = rows["study-style: decode + librosa per 3 s window"]
    print(f"{len(paths)} tracks, {seconds / 60:.0f} min of mp3/flac; {platform.machine()}, {os.cpu_count()} cores, "
          f"{date.today()}; one thread unless stated")
    print("| pipeline | x realtime per core | vs study-style |\n| --- | --- | --- |")
    result = []
    for name, t in rows.items():
        print(f"| {name} | {seconds / t:.0f} | {base / t:.1f}x |")
        result.append({"pipeline": name, "seconds": round(t, 2), "x_realtime": round(seconds / t, 1),
                       "vs_study": round(base / t, 2)})
    ens = rows["gtag tag --dry-run, ensemble"]
    print(f"\nensemble = the models with a vote weight above zero (the default): {', '.join(voting)}")
    print(f"--jobs on {len(more)} tracks ({more_seconds / 60:.0f} min), wall clock: --jobs 1 "
          f"{more_seconds / jobs1:.0f}x realtime, --jobs 2 {more_seconds / jobs2:.0f}x: {jobs1 / jobs2:.2f}x")
    # Issue 5: the CNN path at 300x, the ensemble at 100x; issue 6: musicnn within the CNN path's budget.
    targets = [("gtag tag --dry-run, cnn only", 300), ("gtag tag --dry-run, ensemble", 100),
               ("gtag tag --dry-run, musicnn only", 300)]
    for name, goal in targets:
        if name in rows:
            x = seconds / rows[name]
            print(f"target {name}: >= {goal}x realtime per core: {x:.0f}x, {'met' if x >= goal else 'MISSED'}")
    print(f"target: >= 4x the study-style pipeline: ensemble {base / ens:.1f}x, "
          f"{'met' if base / ens >= 4 else 'MISSED'}")
    if memory is not None:
        print(f"peak memory, gtag predict on a 1-hour flac: {memory:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({
            "date": str(date.today()), "machine": platform.platform(), "cores": os.cpu_count(),
            "audio_seconds": seconds, "rows": result, "jobs_audio_seconds": more_seconds,
            "jobs1_x_realtime": round(more_seconds / jobs1, 1), "jobs2_x_realtime": round(more_seconds / jobs2, 1),
            "jobs2_speedup": round(jobs1 / jobs2, 2), "peak_memory_mib_1h": memory,
            "ensemble_models": voting}, indent=2) + "\n")


if __name__ == "__main__":
    main()
