"""Long tracks in containers libsndfile cannot read (AAC and ALAC .m4a, WMA, WavPack), against mp3.

Since `--max-windows` (default 20), a long mp3/flac/ogg/wav is decoded only on its spread windows
(libsndfile seeks); the others went through PyAV and were decoded whole, then the same windows
picked. `gtag.audio.spans` now seeks in them too. This benchmark makes 3-minute (179 s) 44.1 kHz stereo tracks
(three one-minute tracks of one ../shared/library folder, decoded and joined), writes each in every
container (FFmpeg's encoders, through PyAV; in a temporary folder, nothing kept), and times:

- the warm loop: ``gtag.predict.pipeline.analyse_file`` per track (decode + musicnn's patches, no ONNX), the
  fastest of ``--repeats`` runs, with spans and with the whole-file decode the same container got
  before (spans switched off in-process); the ratio is against the mp3 of the same audio, same run;
- what a user waits for: one `gtag tag --dry-run --no-cache --jobs 1` process per container over
  all its tracks, start-up included, median over rounds, as a ratio to the mp3 folder's process in
  the same round;
- `gtag learn`'s embedding of one track (``gtag.learn.embed.Backbone.embed_file``: 16 spread windows,
  decoded by seeking) against what it did before (every window of a whole-file decode embedded,
  16 kept), for the mp3 and the AAC tracks.

    python benchmarks/bench_containers.py [--tracks 6] [--repeats 3] [--json benchmarks/results_containers.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.timing import best  # noqa: E402

LIBRARY = ROOT.parent / "shared" / "library" / "music"
# (FFmpeg encoder, extension): what people's libraries hold beside mp3.
CONTAINERS = [("libmp3lame", "mp3"), ("aac", "m4a"), ("alac", "m4a"), ("wmav2", "wma"), ("wavpack", "wv")]
SAMPLE_FORMAT = {"libmp3lame": "fltp", "aac": "fltp", "wmav2": "fltp", "alac": "s16p", "wavpack": "s16p"}
SR = 44100


def tracks(n: int) -> list[np.ndarray]:
    """``n`` 3-minute stereo tracks, each three one-minute library tracks of one folder."""
    import soundfile as sf

    out = []
    folders = sorted(d for d in LIBRARY.iterdir() if d.is_dir())
    for i in range(n):
        files = sorted(folders[i % len(folders)].glob("*.mp3"))
        k = (i // len(folders)) * 3
        y = np.concatenate([sf.read(str(f), dtype="float32", always_2d=True)[0] for f in files[k:k + 3]])
        # 179 s, not 180: a WMA header declares ~45 ms more than it decodes, and a track whose last
        # window ends within that of the end is decoded whole (1.5 % of real lengths; gtag.audio.spans).
        out.append(y[:-SR])
    return out


def encode(path: Path, y: np.ndarray, codec: str, sr: int = SR) -> Path:
    """Write stereo float ``y`` (samples, 2) with one of FFmpeg's encoders through PyAV (also used
    by tests/test_spans.py to make files libsndfile cannot read)."""
    import av

    fmt = SAMPLE_FORMAT[codec]
    with av.open(str(path), "w") as c:
        stream = c.add_stream(codec, rate=sr, layout="stereo")
        stream.bit_rate = 192_000  # wmav2 needs one
        block = 4096 if codec == "alac" else 1152 if codec == "libmp3lame" else 1024
        for i in range(0, len(y), block):
            x = np.ascontiguousarray(y[i:i + block].T)
            if fmt == "s16p":
                x = (np.clip(x, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(x, format=fmt, layout="stereo")
            frame.sample_rate, frame.pts = sr, i
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from gtag.audio import spans
    from gtag.models.runtime import load_models
    from gtag.predict.pipeline import Predictor, analyse_file

    config = Predictor(load_models(None, ["musicnn"], device="cpu", threads=1), max_windows=20).config
    with tempfile.TemporaryDirectory(prefix="gtag-containers-") as tmp:
        folders = {}
        for y_i, y in enumerate(tracks(args.tracks)):
            for codec, ext in CONTAINERS:
                d = folders.setdefault(f"{codec}.{ext}", Path(tmp) / codec)
                d.mkdir(exist_ok=True)
                encode(d / f"t{y_i}.{ext}", y, codec)
        declared = spans.declared_samples

        def loop(d: Path, seek: bool) -> float:
            files = sorted(d.iterdir())
            spans.declared_samples = declared if seek else (lambda p: None)  # None: decode whole
            try:
                return best(lambda: [analyse_file(f, config) for f in files], args.repeats, warm_up=True) / len(files)
            finally:
                spans.declared_samples = declared

        warm = {name: {"spans": loop(d, True), "whole": loop(d, False)} for name, d in folders.items()}
        # `gtag learn`'s embedding of a track: 16 spread windows as now, against what it did before
        # (every window of a whole-file decode embedded, 16 of them kept).
        from gtag.audio import decode as audio
        from gtag.learn.embed import Backbone, spread

        bb = Backbone()
        learn = {}
        for name in ("libmp3lame.mp3", "aac.m4a"):
            files = sorted(folders[name].iterdir())
            before = best(lambda files=files: [(e := bb.embed_samples(audio.load_audio(f).samples))[spread(len(e))]
                                               for f in files], args.repeats, warm_up=True) / len(files)
            now = best(lambda files=files: [bb.embed_file(f) for f in files], args.repeats, warm_up=True) / len(files)
            learn[name] = {"s_per_track_before": round(before, 4), "s_per_track_now": round(now, 4),
                           "speed-up": round(before / now, 2)}
            print(f"learn embed {name:16s} {learn[name]}")
        rounds: dict[str, list[float]] = {name: [] for name in folders}
        for _ in range(args.repeats):
            for name, d in folders.items():
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "gtag.cli", "tag", "--dry-run", "--no-cache", "--jobs", "1",
                                str(d)], check=True, capture_output=True, cwd=ROOT)
                rounds[name].append(time.perf_counter() - t)
    base = "libmp3lame.mp3"
    rows = {}
    for name in folders:
        rows[name] = {
            "warm_s_per_track_spans": round(warm[name]["spans"], 4),
            "warm_s_per_track_whole_decode": round(warm[name]["whole"], 4),
            "warm_vs_mp3_spans": round(warm[name]["spans"] / warm[base]["spans"], 2),
            "warm_vs_mp3_whole_decode": round(warm[name]["whole"] / warm[base]["spans"], 2),
            "process_s": round(statistics.median(rounds[name]), 2),
            "process_vs_mp3": round(statistics.median(r / b for r, b in zip(rounds[name], rounds[base])), 2),
        }
        print(f"{name:16s} " + "  ".join(f"{k} {v}" for k, v in rows[name].items()))
    if args.json:
        args.json.write_text(json.dumps({"tracks": args.tracks, "seconds_per_track": 180, "repeats": args.repeats,
                                         "max_windows": 20, "results": rows, "learn_embedding": learn}, indent=2) + "\n")


if __name__ == "__main__":
    main()
