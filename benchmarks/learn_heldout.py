"""`gtag learn` as a user runs it, scored on tracks of artists it never heard.

The shared library's artists are dealt into three folds (stratified by genre, as `gtag learn`'s
own cross-validation deals them). For each fold, a copy
of the other two folds' files (tagged as they are) is what `gtag learn` learns from; a copy of the
fold's own files with their genre removed is what `gtag tag --dry-run --models MODEL` then tags.
Every track is tagged once, by a model that never heard its artist, and the three reports are
scored together by ../shared/tools/score_library.py (right when the written genre names the
folder's genre at any level or is the file's own tag). It runs twice: with the shipped reference
set ("none of these") and without one, so the difference is what "none of these" does. The tracks
whose own tag is a genre too small to learn (Electro Rock, Hard Rock, Ambient) are listed with
what each run wrote on them.

    python benchmarks/learn_heldout.py [--library ../shared/library] [--work runs/learn_heldout]

Magnatune only (as the library is): benchmarks/learn_outside.py measures on GTZAN.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FOLDS = 3
SMALL = ("Electro Rock", "Hard Rock", "Ambient")  # the library's genres with fewer tracks than --min-tracks


def _gtag(*args: str, check: bool = True) -> None:
    """gtag as a user runs it; ``check``: a failing command stops the benchmark (a dry run's exit 1
    for one unreadable file need not)."""
    subprocess.run([sys.executable, "-m", "gtag.cli", *args], check=check, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, GTAG_CONFIG=os.devnull))


def artist_folds(rows: list[dict], seed: int = 0) -> dict[str, int]:
    """Each artist's fold (no artist on both sides), stratified by the files' own genre as
    `gtag learn`'s cross-validation is (``gtag.models.head.group_folds``)."""
    import numpy as np

    from gtag.learn.labels import normalise
    from gtag.models.head import group_folds

    keys = sorted({normalise(r["file_genre_tag"]) for r in rows})
    y = np.array([keys.index(normalise(r["file_genre_tag"])) for r in rows])
    folds = group_folds(y, np.array([r["artist"] for r in rows]), FOLDS, seed)
    return {rows[i]["artist"]: k for k, test in enumerate(folds) for i in test}


def _copy(rows: list[dict], library: Path, dest: Path, strip: bool) -> None:
    from mutagen.id3 import ID3

    for r in rows:
        target = dest / r["file"]  # music/<folder>/<n>.mp3, as score_library.py expects
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(library / r["file"], target)
        if strip:
            tags = ID3(str(target))
            tags.delall("TCON")
            tags.save(str(target), v2_version=3)  # the file's own ID3 version


def models_without_reference(dest: Path) -> Path:
    from gtag.learn.reference import REFERENCE_ARRAYS, REFERENCE_CARD

    if not dest.exists():
        shutil.copytree(ROOT / "exported_models", dest, ignore=shutil.ignore_patterns(REFERENCE_ARRAYS, REFERENCE_CARD))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, default=ROOT.parent / "shared" / "library")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "learn_heldout")
    ap.add_argument("--out", type=Path, default=HERE / "results_learn_heldout.json")
    args = ap.parse_args()
    work = args.work.resolve()
    with open(args.library / "MANIFEST.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    fold_of = artist_folds(rows)
    variants = {"with none of these": ROOT / "exported_models",
                "without (no reference set)": models_without_reference(work / "models_without")}
    results: dict[str, dict] = {}
    for variant, models in variants.items():
        combined: list[dict] = []
        for k in range(FOLDS):
            fold = work / f"fold{k}"
            if fold.exists():
                shutil.rmtree(fold)
            _copy([r for r in rows if fold_of[r["artist"]] != k], args.library, fold / "learn", strip=False)
            _copy([r for r in rows if fold_of[r["artist"]] == k], args.library, fold / "new", strip=True)
            _gtag("learn", str(fold / "learn"), "--name", f"fold{k}", "--out", str(fold / "model"),
                  "--models", str(models), "--cache", str(work / "embeddings.sqlite3"))
            _gtag("tag", "--dry-run", "--no-cache", "--models", str(fold / "model"), "--report",
                  str(fold / "report.json"), str(fold / "new"), check=False)
            combined += json.loads((fold / "report.json").read_text())
        report = work / f"report {variant}.json"
        report.write_text(json.dumps(combined))
        scored = subprocess.run([sys.executable, str(args.library.parent / "tools" / "score_library.py"), str(report)],
                                capture_output=True, text=True, check=True).stdout
        own = {r["file"]: r["file_genre_tag"] for r in rows}
        small = {}
        for rec in combined:
            rel = "music/" + rec["path"].split("/music/")[-1]
            if own[rel] in SMALL:
                small[rel] = {"own tag": own[rel], "written": rec.get("written") or [], "status": rec["status"]}
        results[variant] = {"score_library": scored.strip().splitlines(), "small genres": small}
        print(f"== {variant}\n{scored}")
        for rel, s in sorted(small.items()):
            print(f"  {rel}: own tag {s['own tag']}, {s['status']} {', '.join(s['written'])}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
