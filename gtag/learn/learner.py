"""`gtag learn`: a genre model learned from the genre tags a library already carries.

Steps (each a small function, so the CLI and ``training`` share them):

1. ``read_library``: every audio file's genres and artist, through gtag's one tag reader.
2. ``label_tracks``: spellings merged (the taxonomy's aliases and the user's map), the first genre
   of a file is its label (a file's first genre is its main one in every tagger; several labels per
   track would need a multi-label head for little gain), a style with fewer than ``min_tracks``
   tracks folded into its genre where that is a label, other such genres dropped.
3. Embeddings of every track with the shipped backbone, cached by content (``gtag.learn.embed``).
4. ``cross_validate``: folds grouped by artist (album artist, else artist, else folder), so the
   estimate is for artists the model has never heard; temperature and abstain thresholds are
   chosen on those out-of-fold tracks.
5. ``export``: one ONNX model (backbone + head) and its manifest in a models folder.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from gtag import __version__
from gtag.learn.labels import DEFAULT_MIN_TRACKS, label_paths, label_tracks, read_library, read_map
from gtag.learn.reference import OTHER, reference_music
from gtag.models import head as heads
from gtag.models.catalog import NAME_PATTERN, user_models_dir

DEFAULT_FOLDS = 5
TARGET_PRECISION = 0.9  # abstain threshold: the written tags of held-out artists are right this often
UNKNOWN_QUANTILE = 0.95  # max_unknown refuses at most ~5 % of held-out tracks of the library's genres


# ------------------------------------------------------------------ cross-validation


def classification_report(y: np.ndarray, pred: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-genre precision/recall/tracks and the confusion table."""
    n = len(labels)
    conf = np.zeros((n, n), dtype=int)
    np.add.at(conf, (y, pred), 1)
    per = {}
    recalls = []
    for i, lab in enumerate(labels):
        support = int(conf[i].sum())
        called = int(conf[:, i].sum())
        rec = conf[i, i] / support if support else 0.0
        recalls.append(rec)
        per[lab] = {"precision": round(conf[i, i] / called, 3) if called else 0.0, "recall": round(rec, 3),
                    "tracks": support}
    return {
        "tracks": int(len(y)),
        "accuracy": round(float((y == pred).mean()), 4) if len(y) else 0.0,
        "balanced_accuracy": round(float(np.mean(recalls)), 4) if recalls else 0.0,
        "per_genre": per,
        "confusion": conf.tolist(),
    }


def _other_folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Reference tracks cut into ``k`` folds at random (each fold's head is measured on tracks of
    the reject class it did not learn from)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


def cross_validate(embs: list[np.ndarray], y: np.ndarray, groups: list[str], labels: tuple[str, ...],
                   C: float, folds: int = DEFAULT_FOLDS, seed: int = 0,
                   other: list[np.ndarray] | tuple = ()) -> dict[str, Any]:
    """Out-of-fold track probabilities (folds grouped by ``groups``), the temperature that
    calibrates them, the abstain thresholds chosen on them, and the report. With ``other``
    (windows of reference tracks outside ``labels``), each fold's head also learns a reject class,
    and the report says how much of the held-out outside music it still tags."""
    g = np.asarray(groups)
    n_known = len(labels)
    k = max(2, min(folds, len(set(groups))))
    oof_logits: list[np.ndarray | None] = [None] * len(y)
    oof_dist = np.zeros(len(y))
    other_logits: list[np.ndarray] = [np.empty(0)] * len(other)
    other_dist = np.zeros(len(other))
    other_folds = _other_folds(len(other), k, seed) if len(other) else [np.empty(0, int)] * k
    for test, other_test in zip(heads.group_folds(y, g, k, seed), other_folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        assert not set(g[train]) & set(g[test])  # no artist on both sides
        h = _fit(embs, y, g, train, labels, C, [other[i] for i in np.setdiff1d(np.arange(len(other)), other_test)])
        for i in test:
            oof_logits[i] = h.logits(embs[i])
            oof_dist[i] = float(h.distances(embs[i]).mean())
        for i in other_test:
            other_logits[i] = h.logits(other[i])
            other_dist[i] = float(h.distances(other[i]).mean())
    logits = [lg for lg in oof_logits if lg is not None]
    t = heads.fit_temperature([lg[:, :n_known] for lg in logits], y)
    probs = np.stack([heads._softmax(lg[:, :n_known] / t).mean(axis=0) for lg in logits])
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = pred == y
    # Distance: 99th percentile of held-out tracks of known genres, so ~1 % of them would be refused;
    # music far from every genre taught (another style altogether) is refused too.
    max_d = float(np.quantile(oof_dist, 0.99)) if len(oof_dist) else float("inf")
    abstain: dict[str, Any] = {}
    familiar = oof_dist <= max_d
    if len(other):
        unknown = np.array([_unknown(lg, t, n_known) for lg in logits])
        # As the shipped head's rule: at most ~5 % of held-out tracks of the library's own genres refused.
        max_u = float(np.quantile(unknown, UNKNOWN_QUANTILE))
        familiar &= unknown <= max_u
        abstain["max_unknown"] = round(max_u, 4)
    min_p = heads.choose_threshold(conf[familiar], correct[familiar], TARGET_PRECISION) if familiar.any() else 1.0
    report = classification_report(y, pred, labels)
    ruled = np.where(familiar, conf, -1.0)  # a track the distance or "none of these" refuses is written at no threshold
    cov, prec = heads.coverage_precision(ruled, correct, min_p)
    if len(other):
        o_unknown = np.array([_unknown(lg, t, n_known) for lg in other_logits])
        o_conf = np.array([heads._softmax(lg[:, :n_known] / t).mean(axis=0).max() for lg in other_logits])
        o_written = (o_unknown <= abstain["max_unknown"]) & (other_dist <= max_d) & (o_conf >= min_p)
        report["outside"] = {"tracks": len(other), "tagged": round(float(o_written.mean()), 3),
                             "what": "held-out tracks of genres outside the library's (the reference set's and "
                                     "the library's own small ones) that the rule would still give one of its genres"}
    report.update(folds=k, grouped_by="artist (album artist, else artist, else folder)", temperature=round(t, 4),
                  abstain={"min_probability": round(min_p, 3), "max_distance": round(max_d, 3), **abstain,
                           "coverage": round(cov, 3), "precision": round(prec, 3),
                           "chosen_on": f"out-of-fold tracks of {k}-fold CV grouped by artist",
                           "tradeoff": heads.tradeoff(ruled, correct)})
    small = [lab for i, lab in enumerate(labels) if len(set(g[y == i])) < 3]
    report["too_small_to_estimate"] = small
    return report


def _unknown(logits: np.ndarray, t: float, n_known: int) -> float:
    """A track's mean reject-class probability (0 for a head without one)."""
    if logits.shape[1] == n_known:
        return 0.0
    return float(heads._softmax(logits / t)[:, n_known].mean())


def _fit(embs: list[np.ndarray], y: np.ndarray, g: np.ndarray, idx: np.ndarray, labels: tuple[str, ...], C: float,
         other: list[np.ndarray]) -> heads.LinearHead:
    """A head on the tracks ``idx``, plus the reject class ``OTHER`` when there are ``other`` tracks."""
    x, yy, gg = heads.stack_tracks(embs, y, idx)
    if not other:
        return heads.fit_head(x, yy, gg, labels, C=C)
    ox = np.concatenate(other)
    og = np.repeat(len(embs) + np.arange(len(other)), [len(o) for o in other])  # a track id of their own
    return heads.fit_head(np.concatenate([x, ox]), np.concatenate([yy, np.full(len(ox), len(labels))]),
                          np.concatenate([gg, og]), labels + (OTHER,), C=C)


# ------------------------------------------------------------------ export


def export(bb, head: heads.LinearHead, out_dir: Path, name: str, entry_extra: dict[str, Any]) -> Path:
    """Write ``<name>.onnx`` (backbone + head), its CPU variant when the backbone has one, and a
    ``manifest.json`` with one entry, into ``out_dir``; returns the manifest path."""
    import onnx

    from gtag.models.runtime import MANIFEST_FORMAT, MANIFEST_NAME, sha256_file

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = bb.spec
    known = tuple(lab for lab in head.labels if lab != OTHER)  # the reject class is never written
    entry: dict[str, Any] = {
        "name": name,
        "file": f"{name}.onnx",
        "kind": spec.kind,
        "description": f"learned by gtag learn from a library's own tags, on {spec.name}'s embeddings",
        "input_name": spec.input_name or "musicnn_mel",
        "labels": list(known),
        "sample_rate": spec.sample_rate,
        "window_seconds": spec.window_seconds,
        "hop_seconds": spec.hop_seconds,
        "max_batch": spec.extra.get("max_batch"),
        "msd_labels": spec.extra.get("msd_labels"),
        "weight": 1.0,
        "gtag_version": __version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backbone": {"model": spec.name, "sha256": spec.sha256},
    }
    entry.update(entry_extra)
    meta = {"labels": json.dumps(list(known)), "kind": spec.kind, "gtag_version": __version__}
    files = [(f"{name}.onnx", bb.full)]
    variant = spec.extra.get("cpu_variant")
    if isinstance(variant, dict) and (bb.root / variant["file"]).is_file():
        files.append((f"{name}_cpu.onnx", onnx.load(str(bb.root / variant["file"]))))
    for i, (fname, full) in enumerate(files):
        model = heads.attach(heads.backbone(full), head, n_known=len(known))
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        tmp = out_dir / f".{fname}.tmp"
        onnx.save(model, str(tmp))
        tmp.replace(out_dir / fname)
        sha = sha256_file(out_dir / fname)
        if i == 0:
            entry["sha256"] = sha
        else:
            entry["cpu_variant"] = {"file": fname, "sha256": sha, "what": variant.get("what", "")}
    manifest = out_dir / MANIFEST_NAME
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "models": [entry]}, indent=2) + "\n")
    tmp.replace(manifest)
    return manifest


# ------------------------------------------------------------------ the command (I/O at the edge)

HEAD_C = 0.003  # L2 strength: the value gtag-train's grouped CV chose for the musicnn head on GTZAN


def run_learn(paths, name: str, min_tracks: int | None, map_file: Path | None, out_dir: Path | None,
              cache_path: Path | None, models_dir: str | None, out, err, jobs: int = 1) -> int:
    """`gtag learn`: returns the exit code (gtag.exitcodes: 0 written, 1 nothing learnable, 2 bad input,
    3 no backbone, 4 no audio files, 130 interrupted)."""
    from contextlib import closing

    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gtag.audio.decode import AudioLoadError
    from gtag.exitcodes import Exit
    from gtag.learn.embed import Backbone, cached_embeddings
    from gtag.models.runtime import ModelError
    from gtag.run.cache import CacheError, EmbeddingCache, default_cache_path
    from gtag.run.library import walk
    from gtag.run.messages import file_failure, missing_audio

    if not re.fullmatch(NAME_PATTERN, name):
        err.print(f"[red]error:[/] --name {escape(name)!s}: use letters, digits, '.', '_' or '-'")
        return Exit.USAGE
    try:
        user_map = read_map(map_file) if map_file else {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return Exit.USAGE
    min_tracks = min_tracks or DEFAULT_MIN_TRACKS
    files = list(walk(paths))
    no_audio, notes = missing_audio(paths, files)
    if no_audio is not None:
        err.print(f"[red]error:[/] {escape(no_audio)}")
        return Exit.NO_AUDIO
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    tracks = read_library(files, on_error=lambda m: err.print(f"[red]error:[/] {escape(m)}"))
    lab = label_tracks(tracks, min_tracks, user_map)
    out.print(f"{len(files)} audio files, {len(tracks)} with readable tags, {lab.untagged} without a genre")
    for written, spellings in lab.merged.items():
        out.print(f"merged: {escape(', '.join(spellings))} → [bold]{escape(written)}[/]")
    for written, styles in lab.folded.items():
        out.print(f"folded into their genre (fewer than {min_tracks} tracks each): {escape(', '.join(styles))} → "
                  f"[bold]{escape(written)}[/]")
    if lab.dropped:
        shown = ", ".join(f"{escape(g)} ({n})" for g, n in sorted(lab.dropped.items(), key=lambda kv: -kv[1]))
        out.print(f"dropped (fewer than {min_tracks} tracks, or mapped to -): {shown}")
    if len(lab.labels) < 2:
        err.print(f"[red]error:[/] need at least two genres with {min_tracks} or more tagged tracks each; "
                  f"found {len(lab.labels)} ({escape(', '.join(lab.labels)) or 'none'})")
        return Exit.FAILED
    try:
        bb = Backbone(models_dir, threads=1 if jobs > 1 else 0)
    except ModelError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return Exit.NO_MODELS
    try:  # before minutes of embedding: a corrupt reference set fails now, as a corrupt model does
        other, outside = reference_music(bb.root, bb.sha256, lab.labels)
    except ModelError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return Exit.NO_MODELS
    try:
        cache = EmbeddingCache(cache_path or default_cache_path())
    except CacheError as exc:  # learn has no --no-cache: the cache is how it resumes
        err.print(f"[red]error:[/] {escape(str(exc).replace('--no-cache, or ', ''))}")
        return Exit.USAGE
    todo = lab.tracks + lab.outside  # the labelled tracks, then the library's own "none of these"
    embs: list[np.ndarray | None] = [None] * len(todo)
    new = 0
    progress = Progress(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=out, transient=True)
    reported = (AudioLoadError, ValueError, OSError)  # one line each, and the run goes on

    def report(path: Path, exc: Exception) -> None:
        progress.console.print(f"[red]error:[/] {escape(file_failure(path, exc))}")

    try:
        with progress:
            task = progress.add_task("embedding", total=len(todo))
            # closing: on Ctrl-C the files being embedded finish and nothing more starts
            with closing(cached_embeddings(bb, cache, [t.path for t in todo], jobs)) as found:
                for i, e, fresh in found:
                    if isinstance(e, Exception):
                        if not isinstance(e, reported):
                            raise e
                        report(todo[i].path, e)
                    else:
                        embs[i] = e
                        new += fresh
                    progress.update(task, advance=1)
    except KeyboardInterrupt:
        new = cache.stored_since_open()  # not the loop's count: Ctrl-C may land between a write and it
        err.print(f"[yellow]interrupted:[/] {new} new embeddings are cached; run the same command again to resume.")
        return Exit.INTERRUPTED
    finally:
        cache.close()
    out.print(f"embedded {new} new tracks; {sum(e is not None for e in embs) - new} came from the cache")
    ok = [i for i, e in enumerate(embs[:len(lab.tracks)]) if e is not None]
    own = [(t, e) for t, e in zip(lab.outside, embs[len(lab.tracks):]) if e is not None]
    other, outside = other + [e for _, e in own], {**outside, **own_outside([t for t, _ in own])}
    kept = [lab.tracks[i] for i in ok]
    y = lab.y[ok]
    if len(set(y.tolist())) < 2:
        err.print("[red]error:[/] fewer than two genres left after decoding")
        return Exit.FAILED
    windows = [embs[i] for i in ok]
    groups = [t.group for t in kept]
    if "tracks" in outside:
        out.print(f"none of these: taught on {outside['tracks']} reference tracks of genres outside yours "
                  f"({escape(', '.join(outside['genres']))})")
    else:
        err.print(f"[yellow]warning:[/] {escape(outside['why'])}: music outside your genres may get one of them")
    if own:
        shown = ", ".join(f"{g} ({n})" for g, n in outside["library_genres"].items())
        out.print(f"none of these: also taught on {len(own)} of your own tracks, of small genres none of yours: "
                  f"{escape(shown)}")
    report = cross_validate(windows, y, groups, lab.labels, HEAD_C, other=other)
    _print_report(report, lab.labels, out)
    for g in report["too_small_to_estimate"]:
        err.print(f"[yellow]warning:[/] {escape(g)}: fewer than 3 artists, its figures say little")
    head = heads.calibrate(_fit(windows, y, np.asarray(groups), np.arange(len(y)), lab.labels, HEAD_C, other),
                           report["temperature"])
    target = out_dir or (user_models_dir() / name)
    counts = Counter(lab.labels[i] for i in y)
    manifest = export(bb, head, target, name, {
        "metrics": {"cv_track": {k: report[k] for k in ("tracks", "accuracy", "balanced_accuracy", "per_genre",
                                                        "confusion", "folds", "grouped_by")}},
        "abstain": {k: report["abstain"][k] for k in ("min_probability", "max_unknown", "max_distance", "chosen_on",
                                                      "coverage", "precision", "tradeoff") if k in report["abstain"]},
        "training": {"data": "gtag learn", "paths": [str(p) for p in paths], "tracks": len(kept),
                     "tracks_per_genre": dict(counts), "artists": len(set(groups)), "label": "first genre of each file",
                     "min_tracks": min_tracks, "merged": lab.merged, "folded": lab.folded, "dropped": lab.dropped,
                     "taxonomy": label_paths(lab.labels),
                     "user_map": {k: v for k, v in user_map.items()}, "head": {"C": HEAD_C,
                     "temperature": report["temperature"]}, "none_of_these": outside},
        **({"outside": report["outside"]} if "outside" in report else {}),
    })
    out.print(f"wrote {escape(str(manifest.parent))}; tag with: [bold]gtag tag --models {escape(name)} PATH[/]")
    return Exit.OK


def own_outside(tracks: list) -> dict[str, Any]:
    """What the manifest says of the library's own "none of these" tracks (none: nothing)."""
    if not tracks:
        return {}
    return {"library_tracks": len(tracks), "library_genres": dict(Counter(t.genres[0] for t in tracks).most_common())}


def _print_report(report: dict[str, Any], labels: tuple[str, ...], out) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"estimated on artists the model did not learn from ({report['folds']}-fold CV)",
                  show_edge=False)
    for col in ("genre", "tracks", "precision", "recall"):
        table.add_column(col, justify="left" if col == "genre" else "right")
    for lab in labels:
        r = report["per_genre"][lab]
        table.add_row(escape(lab), str(r["tracks"]), f"{r['precision']:.2f}", f"{r['recall']:.2f}")
    out.print(table)
    conf = Table(title="confusion (rows: tagged, columns: predicted)", show_edge=False)
    conf.add_column("")
    for i, _ in enumerate(labels):
        conf.add_column(str(i + 1), justify="right")
    for i, lab in enumerate(labels):
        conf.add_row(f"{i + 1} {escape(lab)}", *[str(v) for v in report["confusion"][i]])
    out.print(conf)
    ab = report["abstain"]
    out.print(f"estimated accuracy {report['accuracy']:.2f}, balanced accuracy {report['balanced_accuracy']:.2f} "
              f"({report['tracks']} tracks); with abstaining below {ab['min_probability']:.2f}: "
              f"tags {ab['coverage']:.0%} of tracks, right {ab['precision']:.0%} of the time")
    if "outside" in report:
        o = report["outside"]
        out.print(f"music outside your genres (held-out tracks of other genres): {o['tagged']:.0%} of {o['tracks']} "
                  f"would still get one of them")
