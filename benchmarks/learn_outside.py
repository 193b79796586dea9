"""How often a model learned with `gtag learn` tags music outside its genres, with and without
"none of these".

As a user would: a copy of the shipped models whose reference set holds GTZAN's *train* split only
(`gtag-train reference --split train`), `gtag learn` on a real library twice (once with that
reference set, once with none), then `gtag tag --dry-run --force --models MODEL --report` over
GTZAN's *valid* full clips (originals and 16 kHz copies), which neither the model nor its reference set has heard. A valid clip
whose genre the taxonomy puts outside every learned label (jazz for a library of Alternative Rock,
Classical and Electronic) should get no genre: each one written is a wrong tag. Clips of the
library's own genres show what the rule costs there. The cross-validated figures each `gtag learn`
recorded in its manifest are printed beside them.

    python benchmarks/learn_outside.py [--library ../shared/library] [--gtzan ../shared/gtzan]

The first run embeds GTZAN train and the library (minutes on a 2-core machine); the embeddings are
cached under --work, so a rerun takes under a minute.
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

from abstain import dry_run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FULL_CLIPS = ("original", "resampled_16k")  # whole 30 s clips (not the 2-3 s excerpts)


def _gtag(*args: str, **env: str) -> None:
    subprocess.run([sys.executable, "-m", "gtag.cli", *args], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, GTAG_CONFIG="/nonexistent", **env))


def models_copy(dest: Path, gtzan: Path, work: Path, reference: bool) -> Path:
    """The shipped models, with a reference set of GTZAN train (or none)."""
    from gtag.learn.reference import REFERENCE_ARRAYS, REFERENCE_CARD

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "exported_models", dest, ignore=shutil.ignore_patterns(REFERENCE_ARRAYS, REFERENCE_CARD))
    if reference:
        subprocess.run([sys.executable, "-m", "training.cli", "reference", "--data", str(gtzan), "--split", "train",
                        "--out", str(dest), "--run-dir", str(work / "reference")], check=True, stdout=subprocess.DEVNULL)
    return dest


def learn(library: Path, models: Path, out: Path, cache: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    _gtag("learn", str(library), "--name", out.name, "--models", str(models), "--out", str(out),
          "--cache", str(cache), "-j", "2")
    return json.loads((out / "manifest.json").read_text())["models"][0]


def score(rows: list[dict], genre_of_clip: dict[str, str], labels: list[str]) -> dict[str, dict]:
    """Per side (outside the learned genres, or one of them): clips, share tagged, share tagged right."""
    from gtag.genres.taxonomy import default_taxonomy
    from gtag.learn.reference import same_genre

    tax = default_taxonomy()
    out: dict[str, dict] = {}
    for side in ("outside", "inside"):
        mine = [r for r in rows if any(same_genre(lab, genre_of_clip[r["source"]], tax) for lab in labels)
                == (side == "inside")]
        written = [r for r in mine if r["status"] in ("would tag", "unchanged")]
        right = [r for r in written if r["written"] and same_genre(r["written"][0], genre_of_clip[r["source"]], tax)]
        genres: dict[str, int] = {}
        for r in mine:
            genres[genre_of_clip[r["source"]]] = genres.get(genre_of_clip[r["source"]], 0) + 1
        out[side] = {"clips": len(mine), "genres": dict(sorted(genres.items())),
                     "tagged": round(len(written) / max(len(mine), 1), 3),
                     "tagged_right": round(len(right) / max(len(mine), 1), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, default=ROOT.parent / "shared" / "library")
    ap.add_argument("--gtzan", type=Path, default=ROOT.parent / "shared" / "gtzan")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "learn_outside")
    ap.add_argument("--out", type=Path, default=HERE / "results_learn_outside.json")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    valid_ids = set((args.gtzan / "splits" / "valid.txt").read_text().split())
    with open(args.gtzan / "MANIFEST.tsv", newline="") as f:
        clips = [(args.gtzan / r["file"], r["genre"]) for r in csv.DictReader(f, delimiter="\t")
                 if r["clip_id"] in valid_ids and r["variant"] in FULL_CLIPS]
    genre_of_clip = {str(p): g for p, g in clips}
    results: dict[str, dict] = {}
    for name, reference in (("without", False), ("with", True)):
        models = models_copy(work / f"models_{name}", args.gtzan, work, reference)
        entry = learn(args.library / "music", models, work / f"learned_{name}", work / "embeddings.sqlite3")
        rows = dry_run([p for p, _ in clips], work / f"report_{name}.json", models=work / f"learned_{name}")
        ab = entry["abstain"]
        results[f"{name} none of these"] = {
            "labels": entry["labels"],
            "gtzan_valid": score(rows, genre_of_clip, entry["labels"]),
            "cv_library": {"coverage": ab["coverage"], "precision": ab["precision"]},
            "cv_outside_reference": entry.get("outside"),
        }
    text = json.dumps(results, indent=2)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
