"""What `--max-windows` costs in agreement: long real tracks, all their windows against N spread ones.

Tracks: 3- and 5-minute mp3s, each three (five) consecutive one-minute clips of one folder of
../shared/library joined frame by frame (bench_process.make_tracks' joining; folders sorted, taken
cyclically, so every clip starts one track), so each track has one genre. The clips are excerpts
of different recordings: a joined track changes more along its length than one song does, which
makes spread windows a harder test than a real song would be.

For each track: the default vote's prediction with every window (``max_windows=0``) and with
``DEFAULT_MAX_WINDOWS`` through the real path (spans decoded by seeking); other caps are the same
spread subsets of the full analysis' windows (``gtag.audio.spans.spread``), whose inputs the real path
reproduces up to float rounding (the report shows how close the real path is to that subset).
Reported per cap: the voted genre and the tag/abstain decision agreeing with the full analysis,
what gtag would write (the same genre, or nothing either way),
the largest and median |Δp| over genres, and accuracy on the folders that are GTZAN genres.

    python benchmarks/cap_agreement.py [--json benchmarks/results_cap_agreement.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_process import LIBRARY, mp3_frames  # noqa: E402

from gtag.audio.spans import spread  # noqa: E402
from gtag.config import DEFAULT_MAX_WINDOWS  # noqa: E402
from gtag.models import vote  # noqa: E402
from gtag.models.runtime import load_models  # noqa: E402
from gtag.predict.pipeline import Predictor, analyse_file  # noqa: E402

CAPS = (8, 12, 16, 20, 24, 30, 40)


def joined_tracks(folder: Path, clips_per_track: int) -> list[tuple[str, Path]]:
    """(genre folder, path) of one track per clip: that clip and the next ones of its folder."""
    out = []
    for genre in sorted(p for p in LIBRARY.iterdir() if p.is_dir()):
        clips = sorted(genre.glob("*.mp3"))
        for i in range(len(clips)):
            path = folder / f"{genre.name}-{clips_per_track}x-{i:02d}.mp3"
            path.write_bytes(b"".join(mp3_frames(clips[(i + j) % len(clips)]) for j in range(clips_per_track)))
            out.append((genre.name, path))
    return out


def decision(predictor: Predictor, probs: np.ndarray, sig: dict[str, np.ndarray], rows: np.ndarray,
             labels: tuple[str, ...], name: str) -> tuple[np.ndarray, str, bool]:
    """Track probabilities, genre and whether gtag would tag, from the windows ``rows``."""
    p = vote.track_probabilities(probs[rows])
    signals = {k: float(np.mean(v[rows])) for k, v in sig.items()}
    rule = predictor.abstain_rule
    tags = rule is None or vote.abstain_reason(float(p.max()), signals, rule) is None
    return p, labels[int(np.argmax(p))], tags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    models = load_models(None, None, device="cpu", threads=1)
    full = Predictor(models)
    capped = Predictor(models, max_windows=DEFAULT_MAX_WINDOWS)
    model = models[0]
    assert len(models) == 1, "the default vote is one model (musicnn); this study reads its windows"
    labels = model.spec.labels
    result: dict = {"default_max_windows": DEFAULT_MAX_WINDOWS, "model": model.spec.name, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for clips in (3, 5):
            rows: dict[int, list[dict]] = {n: [] for n in CAPS}
            real_vs_subset = []
            for genre, path in joined_tracks(Path(tmp), clips):
                analysed = analyse_file(path, full.config)
                probs, _, sig = model.predict_all(analysed.batches[model.spec.kind], tags=False)
                everything = np.arange(len(probs))
                p_full, g_full, t_full = decision(full, probs, sig, everything, labels, model.spec.name)
                real = capped.predict_file(path)
                subset = decision(full, probs, sig, spread(len(probs), DEFAULT_MAX_WINDOWS), labels, model.spec.name)[0]
                real_vs_subset.append(float(np.abs(real.probabilities - subset).max()))
                for n in CAPS:
                    p, g, t = decision(full, probs, sig, spread(len(probs), n), labels, model.spec.name)
                    rows[n].append({"genre": genre, "windows": len(probs), "same_genre": g == g_full,
                                    "same_decision": t == t_full,
                                    # what lands in the file: the same genre, or nothing either way
                                    "same_written": t == t_full and (not t or g == g_full), "max_dp": float(np.abs(p - p_full).max()),
                                    "right_full": g_full == genre, "right_capped": g == genre})
                path.unlink()
            key = f"{clips}min"
            gtzan = [r for r in rows[CAPS[0]] if r["genre"] in labels]
            result["sets"][key] = {
                "tracks": len(rows[CAPS[0]]), "windows_each": statistics.median(r["windows"] for r in rows[CAPS[0]]),
                "real_path_vs_subset_max_dp": round(max(real_vs_subset), 5),
                "accuracy_full_gtzan_folders": round(sum(r["right_full"] for r in gtzan) / len(gtzan), 3),
                "caps": {str(n): {"same_genre": sum(r["same_genre"] for r in rs),
                                  "same_decision": sum(r["same_decision"] for r in rs),
                                  "same_written": sum(r["same_written"] for r in rs),
                                  "max_dp": round(max(r["max_dp"] for r in rs), 3),
                                  "median_dp": round(statistics.median(r["max_dp"] for r in rs), 3),
                                  "accuracy_gtzan_folders": round(sum(r["right_capped"] for r in rs if r["genre"] in labels)
                                                                  / len(gtzan), 3)}
                         for n, rs in rows.items()}}
            report(key, result["sets"][key])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def report(key: str, s: dict) -> None:
    print(f"\n{key}: {s['tracks']} tracks of {s['windows_each']:.0f} windows; real path vs the same spread "
          f"subset: max |dp| {s['real_path_vs_subset_max_dp']}; accuracy (classical/pop/rock folders), all windows: "
          f"{s['accuracy_full_gtzan_folders']:.1%}")
    print("| windows | same genre | same tag/abstain | same written | max abs dp | median | accuracy |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for n, c in s["caps"].items():
        print(f"| {n} | {c['same_genre']}/{s['tracks']} | {c['same_decision']}/{s['tracks']} | {c['same_written']}/{s['tracks']} "
              f"| {c['max_dp']:.3f} "
              f"| {c['median_dp']:.3f} | {c['accuracy_gtzan_folders']:.1%} |")


if __name__ == "__main__":
    main()
