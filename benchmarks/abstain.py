"""How often the default run writes a genre, and how often it is right, as a user runs it.

Runs `gtag tag --dry-run --force --no-cache --report` (the real command, default models and rule)
over a real library's folders and over GTZAN's valid full clips, and prints, per folder, the share of
tracks that would get a genre and the share of those that would get their own genre. Beside them it
prints the held-out estimates recorded in the manifest by `gtag-train musicnn-head` (GTZAN valid from
a head that never saw valid; the library by 5-fold CV grouped by artist): the shipped head is fitted
on all of these tracks, so the dry run over them shows the behaviour, the held-out figures the
accuracy to expect on music it has never heard.

    python benchmarks/abstain.py [--library ../shared/library] [--gtzan ../shared/gtzan]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GTZAN_NAMES = {"blues": "Blues", "classical": "Classical", "country": "Country", "disco": "Disco",
               "hiphop": "Hip-Hop", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "reggae": "Reggae",
               "rock": "Rock"}


def dry_run(files: list[Path], report: Path, models: Path | None = None) -> list[dict]:
    """The real command over ``files`` (copied into one folder), its JSON report; ``models``: a
    models folder instead of the shipped ones (``--models``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(files):
            # copies, not links: a dry run refuses (and reports as failed) a file it could not write
            shutil.copyfile(f, Path(tmp) / f"{i:04d}{f.suffix}")
        cmd = [sys.executable, "-m", "gtag.cli", "tag", "--dry-run", "--force", "--no-cache", "-j", "1",
               "--report", str(report), tmp] + (["--models", str(models)] if models else [])
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, env=dict(os.environ, GTAG_CONFIG="/nonexistent"))
        rows = json.loads(report.read_text())
    order = {f"{i:04d}{f.suffix}": f for i, f in enumerate(files)}
    for r in rows:
        r["source"] = str(order[Path(r["path"]).name])
    return rows


def summary(rows: list[dict], truth: dict[str, str]) -> dict[str, float]:
    # "unchanged": the file already holds exactly what gtag would write (the library's own tags)
    written = [r for r in rows if r["status"] in ("would tag", "unchanged")]
    right = [r for r in written if r["written"][:1] == [truth[r["source"]]]]
    return {"tracks": len(rows), "written": round(len(written) / max(len(rows), 1), 3),
            "right_when_written": round(len(right) / max(len(written), 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, default=HERE.parent.parent / "shared" / "library")
    ap.add_argument("--gtzan", type=Path, default=HERE.parent.parent / "shared" / "gtzan")
    ap.add_argument("--out", type=Path, default=HERE / "abstain.json")
    args = ap.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with open(args.library / "MANIFEST.tsv", newline="") as f:
            lib = [(args.library / r["file"], r["folder_genre"]) for r in csv.DictReader(f, delimiter="\t")]
        for folder in sorted({g for _, g in lib}):
            files = [p for p, g in lib if g == folder]
            rows = dry_run(files, Path(tmp) / f"{folder}.json")
            truth = {str(p): GTZAN_NAMES.get(folder, "(none: outside GTZAN)") for p in files}
            results[f"library/{folder}"] = summary(rows, truth)
        valid_ids = set((args.gtzan / "splits" / "valid.txt").read_text().split())
        with open(args.gtzan / "MANIFEST.tsv", newline="") as f:
            clips = [(args.gtzan / r["file"], r["genre"]) for r in csv.DictReader(f, delimiter="\t")
                     if r["clip_id"] in valid_ids and r["variant"] == "original"]
        rows = dry_run([p for p, _ in clips], Path(tmp) / "gtzan.json")
        results["gtzan valid full clips"] = summary(rows, {str(p): GTZAN_NAMES[g] for p, g in clips})
    from gtag.models.runtime import read_manifest

    held = {}
    for s in read_manifest():
        if "valid_full_clips" in s.metrics:
            held = {"gtzan valid full clips": {k: s.metrics["valid_full_clips"][k] for k in ("written", "written_right")},
                    **{f"library/{f}": {k: d[k] for k in ("written_any", "written_by_folder_genre", "called_by_folder_genre")}
                       for f, d in s.metrics.get("library_cv", {}).items()}}
    print(f"{'set':28} {'tracks':>6} {'written':>8} {'right':>6}   held-out estimate (manifest)")
    for k, v in results.items():
        print(f"{k:28} {v['tracks']:>6} {v['written']:>8.0%} {v['right_when_written']:>6.0%}   {held.get(k, '')}")
    args.out.write_text(json.dumps({"dry_run": results, "held_out": held}, indent=2) + "\n")


if __name__ == "__main__":
    main()
