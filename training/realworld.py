"""`gtag-train library-check`: every shipped model measured on a real library, beside GTZAN valid.

GTZAN's valid split shares its source with the training clips (22 kHz mono, 1990s-2000s); a model can
win there and still call modern rock "classical". This check runs each model alone, through gtag's
own Predictor (decoding, windows, vote: exactly what a user gets), over a real library whose folders
are curated labels, and records per folder how often the model's top genre is the folder's and how
often gtag would write any genre (for electronic, outside GTZAN's genres, lower is better).
Models fitted on GTZAN only see these tracks for the first time; a model fitted with them (musicnn's
head) is reported by its own cross-validation (``library_cv``) and is not re-scored here.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from gtag.models.runtime import load_models, read_manifest
from gtag.predict.pipeline import Predictor

from .export import set_manifest_fields


def library_files(root: Path) -> list[tuple[Path, str]]:
    """(file, curated folder label) of every track listed in the library's MANIFEST.tsv."""
    with open(root / "MANIFEST.tsv", newline="") as f:
        return [(root / r["file"], r["folder_genre"]) for r in csv.DictReader(f, delimiter="\t")]


def summarise(rows: list[tuple[str, str, bool]]) -> dict[str, dict[str, Any]]:
    """Per folder: tracks, the top genres called, the share called by the folder's genre and the
    share that would get any genre. ``rows``: (folder, top genre, would write)."""
    out: dict[str, dict[str, Any]] = {}
    for folder, top, writes in rows:
        d = out.setdefault(folder, {"tracks": 0, "called": {}, "writes": 0})
        d["tracks"] += 1
        d["called"][top] = d["called"].get(top, 0) + 1
        d["writes"] += int(writes)
    for folder, d in out.items():
        d["called_by_folder_genre"] = round(d["called"].get(folder, 0) / d["tracks"], 3)
        d["written_any"] = round(d.pop("writes") / d["tracks"], 3)
        d["called"] = dict(sorted(d["called"].items(), key=lambda kv: -kv[1]))
    return out


def check(models_dir: str | Path, library_root: str | Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Score every model of ``models_dir`` not in ``skip`` (nor fitted on the library) on the library;
    writes ``metrics.library`` into their manifest entries and returns it."""
    models_dir, library_root = Path(models_dir), Path(library_root)
    names = [s.name for s in read_manifest(models_dir)
             if s.name not in skip and "library" not in str(s.extra.get("training", {}).get("data", ""))]
    if not names:  # every model was fitted with the library (or skipped): nothing to measure
        return {}
    predictor = Predictor(load_models(models_dir, names, device="cpu"), weights=dict.fromkeys(names, 1.0))
    rows: dict[str, list[tuple[str, str, bool]]] = {n: [] for n in names}
    for path, folder in library_files(library_root):
        pred = predictor.predict_file(path)
        for n, p in pred.models.items():
            # alone, a model without an abstain rule writes its top genre on every track
            rows[n].append((folder, pred.labels[int(p.argmax())], True))
    result = {n: summarise(r) for n, r in rows.items()}
    fields = {}
    for s in read_manifest(models_dir):
        if s.name in result:
            fields[s.name] = {"metrics": dict(s.metrics, library=result[s.name])}
    set_manifest_fields(models_dir, fields)
    return result
