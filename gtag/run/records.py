"""What one `gtag tag` run is asked (``TagOptions``) and what it says of each file (``Record``,
its statuses), summed up at the end (``summarize``) and saved as a JSON or CSV report.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gtag.config import DEFAULT_NAMES, GenrePolicy
from gtag.genres.taxonomy import STYLE
from gtag.predict.prediction import Prediction

# What gtag writes for each GTZAN label by default (the config file's [names] can change them).


# What gtag writes for each GTZAN label by default (the config file's [names] can change them).
DISPLAY_NAMES = DEFAULT_NAMES

# Record statuses (the `status` field of the report).
TAGGED = "tagged"
WOULD_TAG = "would tag"  # dry run
SKIPPED_HAS_GENRE = "skipped: has genre"
SKIPPED_LOW_CONFIDENCE = "skipped: low confidence"  # below an explicit --min-confidence
SKIPPED_EXCLUDED = "skipped: excluded by config"  # the top genre is refused by exclude / only, no other one reaches the bar
SKIPPED_UNCERTAIN = "skipped: uncertain"  # the models' own abstain rule: no tag beats a wrong tag
SKIPPED_NOT_REGULAR = "skipped: not a regular file"  # a FIFO, a device, a socket: never opened
SKIPPED_CHANGED = "skipped: changed during analysis"  # left for the next run
SKIPPED_SILENT = "skipped: silent"  # silence or near-silence: no genre to hear
SKIPPED_UNREADABLE = "skipped: unreadable"  # a folder that cannot be listed: counts as a failure
UNCHANGED = "unchanged"  # the file already holds exactly what gtag would write
FAILED = "failed"


@dataclass(frozen=True)
class TagOptions:
    """Policy of one `gtag tag` run."""

    dry_run: bool = False  # predict and report, change no byte of any file
    force: bool = False  # also retag files that already have a genre
    # write nothing for a file whose top genre is less probable; None: the models' abstain rule
    # (manifest "abstain": calibrated probability, reject class, distance), 0: always write
    min_confidence: float | None = None
    top_k: int = 1  # write up to k genres, each at least min_confidence probable
    jobs: int = 1  # worker processes for decoding and features (1: in the main process)
    write_confidence: bool = False  # also record GTAG_CONFIDENCE and GTAG_SOURCE custom tags
    backend: str = "local"  # "local" (process pool) or "ray" (a Ray cluster)
    ray_address: str | None = None  # Ray cluster address; None starts a local Ray instance
    separator: str | None = None  # join several genres into one value with this (config file)
    policy: GenrePolicy = field(default_factory=GenrePolicy)  # names, whitelist, exclude list
    merge: bool = False  # add to the genres a file has (no doubles) instead of skipping it
    album: bool = False  # tracks of one album vote together and get the same genre(s)
    depth: str = STYLE  # how deep in the taxonomy to write: "genre", or "style" where one is sure
    replace: bool = False  # with force: also replace a finer genre the file has (gtag.genres.refine)


@dataclass
class Record:
    """One file's outcome; becomes one row/object of the report."""

    path: str
    status: str = ""
    genre: str | None = None  # the voted genre (display name)
    genres: list[str] = field(default_factory=list)  # top-k genres chosen (display names)
    confidence: float | None = None
    existing: list[str] = field(default_factory=list)  # genre(s) found in the file before
    written: list[str] = field(default_factory=list)  # written, or would be in a dry run
    probabilities: dict[str, float] = field(default_factory=dict)
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    format: str | None = None
    cached: bool = False
    error: str | None = None
    reason: str | None = None  # why no genre was written (skipped: uncertain, low confidence, excluded by config)
    agreed: str | None = None  # the abstain rule's second model, when its agreeing let the genre be written
    # The taxonomy's decision: written path (genre first) and who named the genre (head, tags, head+tags)
    levels: list[str] = field(default_factory=list)
    source: str | None = None
    nodes: dict[str, float] = field(default_factory=dict)  # taxonomy node -> probability from the MSD tags
    album: dict | None = None  # --album: the album's key, tracks, vote and confidence
    note: str | None = None  # what was kept, refined or replaced of the file's genres, and why (gtag.genres.refine)
    prediction: Prediction | None = field(default=None, repr=False, compare=False)  # not reported
    # (dev, inode, size, mtime_ns) before analysis: the content the prediction is about. Not reported.
    before: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)

    def to_json(self, top_k: int) -> dict:
        d: dict = {"path": self.path, "status": self.status, "format": self.format}
        if top_k > 1:
            d["genres"] = self.genres
        else:
            d["genre"] = self.genre
        d.update(confidence=self.confidence, existing=self.existing, written=self.written,
                 probabilities=self.probabilities, models=self.models, cached=self.cached)
        if self.error:
            d["error"] = self.error
        if self.reason:
            d["reason"] = self.reason
        if self.agreed:
            d["agreed"] = self.agreed
        if self.nodes:
            d["nodes"] = self.nodes
        if self.levels:
            d["levels"], d["source"] = self.levels, self.source
        if self.album is not None:
            d["album"] = self.album
        if self.note:
            d["note"] = self.note
        return d


def summarize(records: list[Record]) -> dict:
    """Counts for the end-of-run table: per status and per written genre."""
    by_status = Counter(r.status for r in records)
    by_genre = Counter(g for r in records if r.status in (TAGGED, WOULD_TAG, UNCHANGED) for g in r.written)
    return {"files": len(records), "status": dict(by_status), "genres": dict(by_genre.most_common())}


def write_report(records: list[Record], path: Path, top_k: int) -> None:
    """JSON array or CSV, chosen by the report file's extension; written atomically. A file name
    that is not UTF-8 is kept as its bytes in CSV, and as \\udcXX escapes in JSON."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            labels = sorted({lab for r in records for lab in r.probabilities})
            models = sorted({m for r in records for m in r.models})
            albums = any(r.album for r in records)  # --album: the album and its vote, after the error
            notes = any(r.note for r in records)  # what was kept or replaced of a file's genres (gtag.genres.refine)
            head = ["path", "status", "format", "genre", "genres", "confidence", "existing", "written", "cached",
                    "error", "reason"] + (["note"] if notes else []) \
                + (["album", "album_genres", "album_confidence"] if albums else []) \
                + [f"p_{lab}" for lab in labels] + [f"{m}_{lab}" for m in models for lab in labels]
            with tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
                w = csv.writer(f)
                w.writerow(head)
                for r in records:
                    w.writerow([r.path, r.status, r.format or "", r.genre or "", ";".join(r.genres),
                                "" if r.confidence is None else r.confidence, ";".join(r.existing),
                                ";".join(r.written), int(r.cached), r.error or "", r.reason or ""]
                               + ([r.note or ""] if notes else [])
                               + ([(r.album or {}).get("key", ""), ";".join((r.album or {}).get("genres", [])),
                                   (r.album or {}).get("confidence", "")] if albums else [])
                               + [r.probabilities.get(lab, "") for lab in labels]
                               + [r.models.get(m, {}).get(lab, "") for m in models for lab in labels])
        else:
            tmp.write_text(json.dumps([r.to_json(top_k) for r in records], indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
