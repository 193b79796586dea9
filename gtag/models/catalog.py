"""`gtag models`: every model gtag can use, shipped and learned, with where it lives and how it votes.

``collect`` gathers the facts (JSON-ready, the shape of `gtag models --json`); ``render`` prints them.
Shipped models are the folder ``default_models_dir`` names ($GTAG_MODELS, else the package's);
learned ones are the folders `gtag learn` writes under ``user_models_dir`` ($GTAG_USER_MODELS, else
the user data folder), one per name, each found by `--models NAME`. Only manifests are read: no
numpy, no ONNX Runtime.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from gtag.models.runtime import MANIFEST_NAME, ModelError, ModelSpec, default_models_dir, read_manifest

# A learned model's name: a folder name on every filesystem, never a path (no '/', no leading '.').
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def user_models_dir() -> Path:
    """Where learned models live: $GTAG_USER_MODELS, else the user data folder (platformdirs)."""
    env = os.environ.get("GTAG_USER_MODELS")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("gtag")) / "models"

__all__ = ["collect", "collection", "key_metrics", "render"]


def key_metrics(spec: ModelSpec) -> dict[str, Any]:
    """The figures worth comparing models on, from the manifest entry (absent ones left out):
    accuracy on held-out GTZAN tracks, cross-validated accuracy, the real-library checks, and the
    share of tracks the abstain rule tags with how often it is right."""
    m = spec.metrics if isinstance(spec.metrics, dict) else {}

    def num(d: Any, *keys: str) -> float | int | None:
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None

    lib = m.get("library_cv") or m.get("library") or {}
    ab = spec.extra.get("abstain")
    found = {
        "valid_accuracy": num(m, "valid_track", "accuracy"),
        "cv_accuracy": num(m, "cv_track", "accuracy"),
        "cv_balanced_accuracy": num(m, "cv_track", "balanced_accuracy"),
        "cv_tracks": num(m, "cv_track", "tracks"),
        "real_classical": num(lib, "classical", "called_by_folder_genre"),
        "real_rock": num(lib, "rock", "called_by_folder_genre"),
        "electronic_tagged": num(lib, "electronic", "written_any"),
        "abstain_min_probability": num(ab, "min_probability"),
        "abstain_coverage": num(ab, "coverage"),
        "abstain_precision": num(ab, "precision"),
    }
    return {k: v for k, v in found.items() if v is not None}


def _model(spec: ModelSpec, root: Path, voters: set[str]) -> dict[str, Any]:
    path = root / spec.file
    size = path.stat().st_size if path.is_file() else None
    return {"name": spec.name, "file": str(path), "size_bytes": size, "kind": spec.kind,
            "labels": list(spec.labels), "weight": spec.weight, "votes": spec.name in voters,
            "hop_seconds": spec.hop_seconds, "description": spec.description, "metrics": key_metrics(spec),
            **{k: spec.extra[k] for k in ("abstain", "cpu_variant") if isinstance(spec.extra.get(k), dict)},
            **({"taxonomy": _taxonomy(spec.extra["taxonomy"])} if isinstance(spec.extra.get("taxonomy"), dict) else {})}


def _taxonomy(block: dict[str, Any]) -> dict[str, Any]:
    """The taxonomy block without the scorers' weights: what each node needs and its figures."""
    keys = ("min_probability", "default", "held_out", "tags", "agree")
    nodes = {n: {k: d[k] for k in keys if k in d} for n, d in (block.get("nodes") or {}).items() if isinstance(d, dict)}
    return {**{k: v for k, v in block.items() if k != "nodes"}, "nodes": nodes}


def collection(root: Path, source: str, name: str | None = None) -> dict[str, Any]:
    """One models folder: ``source`` "shipped", "learned" (``name``: what --models takes) or
    "folder"; its models, which of them vote by default (a weight above zero, else all, as
    ``select_models``), and how to use it. A manifest gtag cannot read is an ``error``, not a stop."""
    use = {"shipped": "the default; one model alone: gtag tag --model NAME PATH",
           "learned": f"gtag tag --models {name} PATH"}.get(source, f"gtag tag --models {root} PATH")
    out: dict[str, Any] = {"source": source, "name": name, "folder": str(root),
                           "manifest": str(root / MANIFEST_NAME), "use": use}
    try:
        specs = read_manifest(root)
    except ModelError as exc:
        return dict(out, models=[], error=str(exc))
    voters = {s.name for s in specs if s.weight > 0} or {s.name for s in specs}
    out["models"] = [_model(s, root, voters) for s in specs]
    training = next((s.extra["training"] for s in specs if isinstance(s.extra.get("training"), dict)), None)
    if training is not None and training.get("data") == "gtag learn":  # learned from a library: which
        out["learned_from"] = {k: training[k] for k in ("paths", "tracks", "artists", "tracks_per_genre",
                                                        "taxonomy", "none_of_these") if k in training}
    exported = next((s.extra["exported"] for s in specs if isinstance(s.extra.get("exported"), str)), None)
    if exported:
        out["exported"] = exported
    ens = next((s.extra["ensemble"] for s in sorted(specs, key=lambda s: -s.weight)
                if isinstance(s.extra.get("ensemble"), dict)), None)
    if ens and isinstance(ens.get("valid_track_accuracy"), (int, float)):
        out["ensemble"] = {"valid_accuracy": ens["valid_track_accuracy"], "best_single": ens.get("best_single")}
    return out


def learned_folders(root: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every learned model under ``root`` that `--models NAME` finds: a folder
    with a manifest, named as `gtag learn --name` allows; sorted by name."""

    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:  # no learned model yet (the folder does not exist), or unreadable
        return []
    return [(e.name, Path(e.path)) for e in entries
            if re.fullmatch(NAME_PATTERN, e.name) and (Path(e.path) / MANIFEST_NAME).is_file()]


def collect(models_dir: str | None = None) -> dict[str, Any]:
    """What `gtag models` shows: with ``models_dir`` (a resolved --models folder) that folder only;
    else the shipped models and every learned one."""

    learned_root = user_models_dir()
    if models_dir is not None:
        root = Path(models_dir)
        inside = root.resolve().parent == learned_root.resolve()
        cols = [collection(root, "learned" if inside else "folder", root.name if inside else None)]
    else:
        cols = [collection(default_models_dir(), "shipped")]
        cols += [collection(folder, "learned", name) for name, folder in learned_folders(learned_root)]
    return {"learned_folder": str(learned_root), "collections": cols}


def _f3(d: dict, key: str) -> str:
    v = d.get(key)
    return f"{v:.3f}" if isinstance(v, (int, float)) else "–"


def render(cat: dict[str, Any], out, err) -> None:
    """Print ``collect``'s result for a terminal (80 columns): one table per folder."""
    from rich.markup import escape

    for col in cat["collections"]:
        if col.get("error"):
            err.print(f"[red]error:[/] {escape(col['error'])}")
            continue
        _render_collection(col, out)
    if not any(c["source"] == "learned" for c in cat["collections"]) and \
            all(c["source"] == "shipped" for c in cat["collections"]):
        out.print(f"[dim]no learned models in {escape(cat['learned_folder'])} "
                  "(gtag learn PATH --name NAME learns one from your own tags)[/]")


def _render_collection(col: dict[str, Any], out) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    models = col["models"]
    what = {"shipped": "shipped models", "learned": f"learned model {col['name']}"}.get(col["source"], "models")
    # Two-line headers and no column rules: the table fits an 80-column terminal (kind and hop are
    # on each model's line below it).
    table = Table(title=f"{escape(what)} in {escape(col['folder'])}", box=box.SIMPLE_HEAD)
    for c in ("name", "valid\nacc", "CV\nacc", "real\nclassical", "real\nrock", "electronic\ntagged",
              "weight", "size"):
        table.add_column(c, no_wrap=c != "name", justify="left" if c == "name" else "right")
    for m in models:
        k = m["metrics"]
        size = f"{m['size_bytes'] / 1e6:.1f} MB" if m["size_bytes"] else "missing"
        table.add_row(escape(m["name"]), _f3(k, "valid_accuracy"), _f3(k, "cv_accuracy"), _f3(k, "real_classical"),
                      _f3(k, "real_rock"), _f3(k, "electronic_tagged"), f"{m['weight']:.2f}", size)
    out.print(table)
    if col["source"] == "shipped":
        out.print("[dim]valid acc: track accuracy on GTZAN valid tracks never trained on; CV acc: cross-validated "
                  "track accuracy (grouped by track for GTZAN models, by artist for learned ones); real classical / "
                  "rock: share of real library tracks (../shared/library, artists never trained on) whose top genre "
                  "is theirs; electronic tagged: share of real electronic tracks (no GTZAN genre fits) that would get "
                  "a genre (lower is better); weight: share of the default vote (0: run only when picked with "
                  "--model)[/]")
    voters = [m["name"] for m in models if m["votes"]]
    out.print(f"votes: {escape(', '.join(voters))}; use: [bold]{escape(col['use'])}[/]")
    learned = col.get("learned_from")
    if learned:
        paths = ", ".join(str(p) for p in learned.get("paths", []))
        out.print(f"learned {escape(col.get('exported', ''))} from {escape(paths)} ({learned.get('tracks', '?')} tracks, "
                  f"{learned.get('artists', '?')} artists)")
        for line in _learned_lines(learned):
            out.print(escape(line))
    for m in models:
        _render_abstain(m["name"], m.get("abstain"), out)
    if col.get("ensemble"):
        out.print(f"ensemble: valid track accuracy {col['ensemble']['valid_accuracy']:.3f} "
                  f"(best single model: {escape(str(col['ensemble'].get('best_single', '?')))})")
    for m in models:
        out.print(f"  {escape(m['name'])} ({m['kind']}, {m['hop_seconds']:g} s hop): {escape(m['description'])}")
        variant = m.get("cpu_variant")
        if variant:
            out.print(f"    on CPU: {escape(str(variant.get('file')))} ({escape(str(variant.get('what', '')))})")
    labels = {tuple(m["labels"]) for m in models}
    for labs in sorted(labels):
        out.print(f"labels: {escape(', '.join(labs))}")
    for m in models:  # genres and styles past the vote (gtag.genres.hierarchy), with their held-out figures
        if m.get("taxonomy"):
            from gtag.genres.taxonomy import default_taxonomy
            from gtag.models.modelcard import taxonomy_card

            for line in taxonomy_card(m["taxonomy"], default_taxonomy()):
                out.print(escape(line))
    out.print()


def _learned_lines(learned: dict) -> list[str]:
    """Where a learned model's labels sit in the taxonomy, and what its "none of these" was taught
    (from its manifest, which a person may have edited: any shape gives a line, never a traceback)."""
    lines = []
    places = learned.get("taxonomy")
    if isinstance(places, dict) and places:
        def place(lab: str, path) -> str:
            path = [str(x) for x in path] if isinstance(path, list) else []
            return f"{lab} = {' › '.join(path)}" if path and path != [lab] else lab if path else f"{lab} (not a node)"
        lines.append("in gtag's taxonomy: " + "; ".join(place(str(lab), path) for lab, path in places.items()))
    outside = learned.get("none_of_these")
    if isinstance(outside, dict):
        taught = []
        if outside.get("tracks"):
            genres = outside.get("genres")
            taught.append(f"{outside['tracks']} reference tracks"
                          + (f" ({', '.join(map(str, genres))})" if isinstance(genres, list) else ""))
        if outside.get("library_tracks"):
            genres = outside.get("library_genres")
            taught.append(f"{outside['library_tracks']} of the library's own tracks"
                          + (f" ({', '.join(map(str, genres))})" if isinstance(genres, dict) else ""))
        lines.append("none of these: " + (" and ".join(taught) or f"not taught ({outside.get('why', '?')})"))
    return lines


def _render_abstain(name: str, ab: dict | None, out) -> None:
    """A model's abstain rule, as its manifest states it, and its measured trade-off."""
    from rich.markup import escape

    if not isinstance(ab, dict):
        return

    def num(key: str) -> bool:
        return isinstance(ab.get(key), (int, float))

    parts = [f"probability below {ab['min_probability']:g}" if num("min_probability") else "",
             f"'none of these' above {ab['max_unknown']:g}" if num("max_unknown") else "",
             f"distance above {ab['max_distance']:g}" if num("max_distance") else ""]
    out.print(f"{escape(name)} abstains when: " + ", ".join(p for p in parts if p))
    second = ab.get("second_opinion")
    if isinstance(second, dict) and isinstance(second.get("model"), str) \
            and isinstance(second.get("min_probability"), (int, float)):
        out.print(f"  unless {escape(second['model'])} (not voting) names the same genre: then from "
                  f"probability {second['min_probability']:g}")
    for t in ab.get("tradeoff", []) if isinstance(ab.get("tradeoff"), list) else []:
        if isinstance(t, dict) and t.get("min_probability") in (0.0, 0.5, 0.7):
            out.print(f"  [dim]at probability ≥ {t['min_probability']:.1f}: tags {t['coverage']:.0%} of "
                      f"held-out tracks, right {t['precision']:.0%} of the time[/]")


def resolve_models_dir(value: str | None) -> str | None:
    """``--models``: a folder, else the name of a model learned with `gtag learn`."""
    if value is None or Path(value).expanduser().is_dir():
        return value
    if re.fullmatch(NAME_PATTERN, value) and (user_models_dir() / value).is_dir():
        return str(user_models_dir() / value)
    raise ModelError(f"--models {value}: no such folder, and no model learned under that name "
                     f"(gtag learn --name {value} …; learned models live in {user_models_dir()})")
