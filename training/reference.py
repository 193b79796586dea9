"""`gtag-train reference`: the reference set `gtag learn` teaches as "none of these".

The shipped backbone's embeddings of a labelled dataset's tracks (16 windows each, as `gtag learn`
caches a library's), saved beside the models (``gtag.learn.reference``: an ``.npz`` of arrays and
a JSON card). No model is fitted here and no vote changes: the set only lets a model learned later
on a few genres abstain on music of the others. Run it again after the backbone changes (the
`transfer` step re-exports musicnn); a learned model then warns until it does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gtag.learn.embed import CACHED_WINDOWS, Backbone, cached_embeddings
from gtag.learn.reference import REFERENCE_CARD, save_reference
from gtag.run.cache import EmbeddingCache
from gtag.run.jobs import usable_cpus

from .data import train_valid

SPLITS = ("train", "valid")


def build_reference(data_root: str | Path, models_dir: str | Path, run_dir: str | Path = "runs/reference",
                    splits: tuple[str, ...] = SPLITS, command: str = "") -> dict[str, Any]:
    """Embed the tracks of ``splits`` and write the reference set into ``models_dir``; returns its card."""
    data_root, models_dir, run_dir = Path(data_root), Path(models_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _, train, valid = train_valid(data_root)
    tracks = [t for name, part in (("train", train), ("valid", valid)) if name in splits for t in part]
    jobs = usable_cpus()
    bb = Backbone(models_dir, threads=1 if jobs > 1 else 0)
    cache = EmbeddingCache(run_dir / "embeddings.sqlite3")
    windows: list[np.ndarray] = [np.zeros(0)] * len(tracks)
    try:
        found = cached_embeddings(bb, cache, [t.path for t in tracks], jobs)
        for i, e, _ in tqdm(found, total=len(tracks), desc="embedding", unit="track"):
            if isinstance(e, Exception):
                raise e
            windows[i] = np.asarray(e, np.float32)
    finally:
        cache.close()
    counts: dict[str, int] = {}
    for t in tracks:
        counts[t.genre] = counts.get(t.genre, 0) + 1
    card = {
        "what": f"{bb.spec.name}'s embeddings of {len(tracks)} tracks of {data_root.name} ({'+'.join(splits)})",
        "training_data": {"dataset": str(data_root), "splits": list(splits), "tracks_per_genre": counts,
                          "licence": "derived from the dataset's audio: its own terms apply, as to the models "
                                     "trained on it"},
        "windows_per_track": CACHED_WINDOWS,
        "embedding": {"model": bb.spec.name, "output": "embedding", "dim": int(windows[0].shape[1])},
        "track_ids": [t.track_id for t in tracks],
        "command": command,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_reference(models_dir, [t.genre for t in tracks], windows, bb.sha256, card)
    out = {**card, "file": str(models_dir / REFERENCE_CARD)}
    (run_dir / "card.json").write_text(json.dumps(out, indent=2) + "\n")  # the chain's "finished" mark
    return out
