"""`gtag-train taxonomy`: node scorers that let gtag say more than GTZAN's ten genres.

musicnn's MSD tag layer (frozen, trained on a million songs' Last.fm tags, never on our data) already
hears "electronic", "alternative" and "rock". This trainer turns those tags into calibrated node
probabilities for the taxonomy (gtag/data/taxonomy.toml) and chooses when each is sure:

1. runs the shipped models through gtag's own Predictor over GTZAN (train + valid) and a tagged real
   library, keeping each track's mean MSD tags (cached by content in the run folder);
2. labels each track with the nodes it belongs to: a GTZAN clip its folder's genre; a library track
   the taxonomy path of its own genre tag and of its curated folder label;
3. fits a logistic regression per *measurable* node (at least MIN_REAL_TRACKS real tracks, and MSD
   evidence of its own or its styles'), reading the MSD tags of the node, its styles and its
   siblings; a style's scorer is fitted among the tracks of its genre;
4. chooses each node's ``min_probability`` on held-out tracks (5 folds grouped by artist, GTZAN clips
   by clip; 3 fold seeds pooled): the lowest at which, on the real library, written nodes are right
   TARGET_PRECISION of the time, and at most MAX_GTZAN_FIRE of GTZAN clips that are not the node get it;
5. measures it on tracks it never saw (nested: the threshold of each outer fold chosen inside it),
   per node and, with the head's held-out decisions (`gtag-train musicnn-head` leaves them in
   runs/musicnn-head/held_out.json), the whole genre > style decision per library folder;
6. writes the scorers and their figures into the musicnn entry's ``taxonomy`` block. Vote weights are
   not touched: only `gtag-train ensemble` sets those.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from gtag.genres.hierarchy import decide, logit
from gtag.genres.taxonomy import Taxonomy, default_taxonomy
from gtag.models.head import group_folds

from .data import train_valid
from .export import set_manifest_fields

MODEL = "musicnn"  # the model whose MSD tags are read
MIN_REAL_TRACKS = 10  # a node needs this many real held-out tracks to be measured (else: unmeasured)
TARGET_PRECISION = 0.95  # written nodes right this often on held-out real tracks
MAX_GTZAN_FIRE = 0.02  # at most this share of GTZAN clips outside the node get it
DEFAULT_PRECISION = 0.9  # held-out precision a node needs in every set to be written by default
C = 0.1  # L2: few real tracks per node, so a strong prior towards "the tags as they are"
FOLDS, REPEATS = 5, 3
# Agreement: where the head's top genre is a node's GTZAN genre but it held the genre back for its
# probability alone, the node's own scorer may settle it at a lower threshold (two pieces of evidence
# fitted apart: the head on musicnn's embedding, the scorer on its MSD tags). The head's probability
# floors tried; the scorer's threshold is chosen with each, by the same precision rule.
AGREE_HEAD_FLOORS = (0.3, 0.35, 0.4, 0.45, 0.5)


def library_rows(root: Path) -> list[dict[str, str]]:
    """The library's MANIFEST.tsv: file, curated folder label, artist, the file's own genre tag."""
    with open(root / "MANIFEST.tsv", newline="") as f:
        return [{"path": str(root / r["file"]), "folder": r["folder_genre"], "artist": r["artist"],
                 "own": r["file_genre_tag"]} for r in csv.DictReader(f, delimiter="\t")]


def truth(row: dict, tax: Taxonomy) -> set[str]:
    """The nodes a track belongs to: any of them is a right thing to write."""
    if row["domain"] == "gtzan":
        return {tax.by_gtzan[row["gtzan"]]}
    return set(tax.path(row["own"])) | set(tax.path(row["folder"]))


def features(node: str, tax: Taxonomy, tag_labels: list[str]) -> list[str]:
    """The MSD tags a node's scorer reads: the node's and its styles', its siblings' (the other
    genres, or the other styles of its genre) and, for a style, its genre's."""
    n = tax.nodes[node]
    family = [node, *tax.children(node)]
    siblings = [s for s in tax.nodes.values() if s.parent == n.parent and s.name != node]
    names = family + [s.name for s in siblings] + ([n.parent] if n.parent else [])
    tags = [t for name in names for t in tax.nodes[name].msd if t in tag_labels]
    return list(dict.fromkeys(tags))


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = C) -> dict[str, Any]:
    """L2 logistic regression on standardised inputs (scipy L-BFGS): the manifest's scorer fields."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    n = len(y)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        p = 1 / (1 + np.exp(-(z @ w[:-1] + w[-1])))
        ll = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
        return ll + 0.5 * np.sum(w[:-1] ** 2) / (c * n), np.append(z.T @ (p - y) / n + w[:-1] / (c * n), np.mean(p - y))

    w = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return {"weights": w[:-1], "bias": float(w[-1]), "mean": mean, "scale": scale}


def apply_logistic(m: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(((x - m["mean"]) / m["scale"]) @ m["weights"] + m["bias"])))


def choose_threshold(p: np.ndarray, member: np.ndarray, domain: np.ndarray) -> float:
    """The lowest probability at which held-out real tracks given the node are right
    TARGET_PRECISION of the time and at most MAX_GTZAN_FIRE of GTZAN non-members get it (GTZAN
    members, where there are any, right 90 %); 1.0 when none is."""
    lib, gtz = domain == "library", domain == "gtzan"
    for t in np.unique(np.round(p, 3)):
        w = p >= t
        lib_ok = not (w & lib).any() or (w & lib & member).sum() / (w & lib).sum() >= TARGET_PRECISION
        fire = (w & gtz & ~member).sum() / max((gtz & ~member).sum(), 1)
        gtz_ok = not (w & gtz).any() or not (gtz & member).any() or (w & gtz & member).sum() / (w & gtz).sum() >= 0.9
        if lib_ok and fire <= MAX_GTZAN_FIRE and gtz_ok:
            return float(t)
    return 1.0


def choose_agreement(head_p: np.ndarray, node_p: np.ndarray, eligible: np.ndarray, member: np.ndarray,
                     domain: np.ndarray) -> tuple[float, float] | None:
    """The (head floor, scorer threshold) pair that writes the node on the most eligible decisions
    (head's top genre is the node's, held back for its probability alone) while those it adds are
    right TARGET_PRECISION of the time in each set it writes to; None when no pair adds a right one.
    Ties go to the stricter pair."""
    best, best_key = None, (0, 0.0, 0.0)
    for floor in AGREE_HEAD_FLOORS:
        for t in np.unique(np.round(node_p[eligible], 3)):
            w = eligible & (head_p >= floor) & (node_p >= t)
            ok = all((w & (domain == d) & member).sum() >= TARGET_PRECISION * (w & (domain == d)).sum()
                     for d in ("library", "gtzan"))
            key = (int((w & member).sum()), float(t), floor)
            if ok and key > best_key:
                best, best_key = (floor, float(t)), key
    return best


def held_out(x, y, groups, domain, seed: int) -> np.ndarray:
    """Each track's probability from a scorer fitted without its group (5 grouped folds)."""
    p = np.zeros(len(y))
    for test in group_folds(y.astype(int), groups, FOLDS, seed=seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        p[test] = apply_logistic(fit_logistic(x[train], y[train]), x[test])
    return p


def nested(x, y, groups, domain, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outer held-out probabilities and, for each, the threshold chosen inside its outer fold."""
    p, thr = np.zeros(len(y)), np.zeros(len(y))
    for test in group_folds(y.astype(int), groups, FOLDS, seed=seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        inner = held_out(x[train], y[train], groups[train], domain[train], seed + 100)
        thr[test] = choose_threshold(inner, y[train] == 1, domain[train])
        p[test] = apply_logistic(fit_logistic(x[train], y[train]), x[test])
    return p, thr


def node_figures(written: np.ndarray, member: np.ndarray, domain: np.ndarray) -> dict[str, Any]:
    """Per domain: tracks, members, tracks given the node, coverage of members, precision."""
    out = {}
    for d in ("library", "gtzan"):
        m = domain == d
        w, pos = written & m, member & m
        out[d] = {"tracks": int(m.sum()), "members": int(pos.sum()), "written": int(w.sum()),
                  "wrong": int((w & ~pos).sum()),
                  "coverage": round(float((w & pos).sum() / max(pos.sum(), 1)), 3),
                  "precision": round(float((w & pos).sum() / w.sum()), 3) if w.any() else None}
    return out


def collect(rows: list[dict], models_dir: Path, cache_path: Path) -> list[dict]:
    """Add each track's mean MSD tags and the head's decision (the shipped Predictor, as `gtag tag`
    runs it), cached by file content and the models' signature."""
    from tqdm import tqdm

    from gtag.config import DEFAULT_MAX_WINDOWS
    from gtag.learn.embed import content_key
    from gtag.models.runtime import load_models
    from gtag.predict.pipeline import Predictor

    pred = Predictor(load_models(models_dir, None, device="cpu"), max_windows=DEFAULT_MAX_WINDOWS)
    # What the tags and the head's decision depend on: the models' files and the abstain rule (not
    # the node scorers this trainer writes, so a rerun reuses what it computed).
    head = json.dumps([[m.sha256, m.spec.weight, m.spec.extra.get("abstain")] for m in pred.models], sort_keys=True)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    for row in tqdm(rows, desc="tags", unit="track"):
        key = f"{hashlib.sha256(head.encode()).hexdigest()[:16]}:{content_key(row['path'])}"
        if key not in cache:
            p = pred.predict_file(row["path"])
            cache[key] = {"msd": dict(p.tags[MODEL]), "genre": p.genre, "confidence": p.confidence,
                          "reason": pred.abstain_reason(p)}
        row.update(cache[key])
    cache_path.write_text(json.dumps(cache) + "\n")
    return rows


def _head_held_out(path: Path) -> dict[str, list[dict]]:
    """The musicnn head's held-out decisions per track (`gtag-train musicnn-head` writes them)."""
    if not path.is_file():
        return {}
    out: dict[str, list[dict]] = {}
    for d in json.loads(path.read_text()):
        out.setdefault(str(Path(d["path"]).resolve()), []).append(d)
    return out


def train(gtzan_root: str | Path, library_root: str | Path, models_dir: str | Path,
          run_dir: str | Path = "runs/taxonomy", head_run: str | Path = "runs/musicnn-head",
          command: str = "") -> dict[str, Any]:
    """Fit, choose, measure and record the node scorers; returns the manifest block."""
    gtzan_root, library_root, models_dir, run_dir = map(Path, (gtzan_root, library_root, models_dir, run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    tax = default_taxonomy()
    _, gtrain, gvalid = train_valid(gtzan_root)
    rows = [{"path": str(t.path), "domain": "gtzan", "gtzan": t.genre, "group": f"gtzan:{t.track_id}",
             "split": t.split} for t in gtrain + gvalid]
    rows += [{**r, "domain": "library", "group": f"artist:{r['artist']}"} for r in library_rows(library_root)]
    rows = collect(rows, models_dir, run_dir / "cache.json")
    tag_labels = list(rows[0]["msd"])
    member_of = [truth(r, tax) for r in rows]
    domain = np.array([r["domain"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    x_all = logit(np.array([[r["msd"][t] for t in tag_labels] for r in rows]))

    block: dict[str, Any] = {"input": f"{MODEL}'s msd_tags, mean over the analysed windows, as logits",
                             "chosen_on": f"library tracks (5 folds grouped by artist) and GTZAN clips, {REPEATS} fold "
                                          f"seeds pooled: right {TARGET_PRECISION:.0%} of the time on the library, "
                                          f"at most {MAX_GTZAN_FIRE:.0%} of other GTZAN clips",
                             "measured_on": "nested: each outer fold's scorer and threshold chosen without it",
                             "min_real_tracks": MIN_REAL_TRACKS, "command": command, "nodes": {}, "unmeasured": []}
    head = _head_held_out(Path(head_run) / "held_out.json")
    outer: dict[str, dict[int, np.ndarray]] = {}
    agreed_outer: dict[str, dict[int, np.ndarray]] = {}
    for node in tax.nodes.values():
        evidence = [t for n in [node.name, *tax.children(node.name)] for t in tax.nodes[n].msd if t in tag_labels]
        real = sum(node.name in m for m, d in zip(member_of, domain) if d == "library")
        if not evidence:
            continue
        if real < MIN_REAL_TRACKS:
            if not node.gtzan:  # a GTZAN genre is the head's to write; its tags alone stay unmeasured
                block["unmeasured"].append({"node": node.name, "real_tracks": real, "tags": evidence})
            continue
        idx = np.array([i for i, m in enumerate(member_of) if node.parent is None or node.parent in m])
        tags = features(node.name, tax, tag_labels)
        x = x_all[idx][:, [tag_labels.index(t) for t in tags]]
        y = np.array([node.name in member_of[i] for i in idx], float)
        pooled = np.concatenate([held_out(x, y, groups[idx], domain[idx], seed) for seed in range(REPEATS)])
        threshold = choose_threshold(pooled, np.tile(y, REPEATS) == 1, np.tile(domain[idx], REPEATS))
        figures, outer[node.name] = [], {}
        for seed in range(REPEATS):
            p, thr = nested(x, y, groups[idx], domain[idx], seed)
            figures.append(node_figures(p >= thr, y == 1, domain[idx]))
            outer[node.name][seed] = np.full(len(rows), np.nan)
            outer[node.name][seed][idx] = np.where(p >= thr, 1.0, 0.0)
        final = fit_logistic(x, y)
        held = _mean_figures(figures)
        # Written by default only where tracks it never saw got it right 90 % of the time in each
        # set it wrote to (the project's rule; a node short of it can still be enabled by name).
        default = _default(held)
        block["nodes"][node.name] = {"tags": tags, "weights": np.round(final["weights"], 6).tolist(),
                                     "bias": round(final["bias"], 6), "mean": np.round(final["mean"], 6).tolist(),
                                     "scale": np.round(final["scale"], 6).tolist(),
                                     "min_probability": round(threshold, 3),
                                     "fitted_on": f"{len(idx)} tracks" + (f" of {node.parent}" if node.parent else ""),
                                     "held_out": held, "default": bool(default)}
        if node.gtzan and default and head:
            hp, eligible = _head_arrays([rows[i] for i in idx], head, node.gtzan)
            pair = choose_agreement(np.concatenate(hp), pooled, np.concatenate(eligible), np.tile(y, REPEATS) == 1,
                                    np.tile(domain[idx], REPEATS))
            if pair is not None:
                agreed_outer[node.name] = {}
                for seed in range(REPEATS):
                    added = nested_agreement(x, y, groups[idx], domain[idx], seed, hp[seed], eligible[seed])
                    agreed_outer[node.name][seed] = np.zeros(len(rows))
                    agreed_outer[node.name][seed][idx] = added
                block["nodes"][node.name]["agree"] = {
                    "head_min_probability": pair[0], "min_probability": round(pair[1], 3),
                    "chosen_on": "held-out decisions where the head's top genre is this node's, held back for "
                                 f"its probability alone: added ones right {TARGET_PRECISION:.0%} of the time in each set"}
    on = {n: v for n, v in outer.items() if block["nodes"][n]["default"]}
    block["decision"] = _whole_decision(rows, member_of, on, tax, head, agreed_outer)
    set_manifest_fields(models_dir, {MODEL: {"taxonomy": block}})
    (run_dir / "report.json").write_text(json.dumps(block, indent=2) + "\n")
    return block


def _head_arrays(rows: list[dict], head: dict[str, list[dict]], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Per fold seed and row: the head's held-out probability (0 without a held-out decision), and
    whether the decision may be settled by agreement (its top genre is ``label``, not written,
    within the rule's other limits)."""
    hp, eligible = np.zeros((REPEATS, len(rows))), np.zeros((REPEATS, len(rows)), bool)
    for i, r in enumerate(rows):
        for h in head.get(str(Path(r["path"]).resolve()), []):
            seed = h["repeat"] % REPEATS
            hp[seed, i] = h["probability"]
            eligible[seed, i] = h["genre"] == label and not h["written"] and bool(h.get("familiar", False))
    return hp, eligible


def nested_agreement(x, y, groups, domain, seed: int, hp: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """1.0 where the agreement rule adds the node on a held-out decision: each outer fold's pair
    chosen on its training tracks' inner held-out scores, applied to the fold's own scores."""
    added = np.zeros(len(y))
    for test in group_folds(y.astype(int), groups, FOLDS, seed=seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        inner = held_out(x[train], y[train], groups[train], domain[train], seed + 100)
        pair = choose_agreement(hp[train], inner, eligible[train], y[train] == 1, domain[train])
        if pair is None:
            continue
        p = apply_logistic(fit_logistic(x[train], y[train]), x[test])
        added[test] = (eligible[test] & (hp[test] >= pair[0]) & (p >= pair[1])).astype(float)
    return added


def _default(held: dict[str, dict]) -> bool:
    """Whether a node is written by default: on tracks it never saw, right DEFAULT_PRECISION of the
    time on the real library and on GTZAN's clips of it, and given to at most MAX_GTZAN_FIRE of the
    GTZAN clips that are not it (GTZAN has no electronic clip: there every one it gets is wrong)."""
    lib, gtz = held["library"], held["gtzan"]
    if lib["precision"] is not None and lib["precision"] < DEFAULT_PRECISION:
        return False
    if gtz["members"] and gtz["precision"] is not None and gtz["precision"] < DEFAULT_PRECISION:
        return False
    return gtz["wrong"] <= MAX_GTZAN_FIRE * max(gtz["tracks"] - gtz["members"], 1)


def _mean_figures(figures: list[dict]) -> dict[str, Any]:
    """Figures averaged over the fold seeds (counts as means, one decimal)."""
    out: dict[str, Any] = {}
    for d in figures[0]:
        out[d] = {}
        for k in figures[0][d]:
            vals = [f[d][k] for f in figures if f[d][k] is not None]
            out[d][k] = (round(float(np.mean(vals)), 3 if k in ("coverage", "precision") else 1) if vals else None)
    return out


def _whole_decision(rows, member_of, outer, tax: Taxonomy, head: dict[str, list[dict]],
                    agreed: dict[str, dict[int, np.ndarray]] | None = None) -> dict[str, Any]:
    """The whole genre > style decision on tracks neither the head nor the scorers saw: the head's
    held-out decision with each node's outer-fold verdict, per library folder and on GTZAN valid
    (right: every written node is one of the track's; wrong: any is not), beside the head alone."""
    if not head:
        return {"note": "run gtag-train musicnn-head first: its held-out decisions are needed"}
    out: dict[str, Any] = {}
    for i, r in enumerate(rows):
        key = str(Path(r["path"]).resolve())
        if key not in head or (r["domain"] == "gtzan" and r.get("split") != "valid"):
            continue
        group = r["folder"] if r["domain"] == "library" else "gtzan valid"
        for h in head[key]:
            seed = h["repeat"] % REPEATS
            sure = {n: 1.0 for n, v in outer.items() if v[seed][i] == 1.0}
            head_node = tax.by_gtzan.get(h["genre"])
            settled = {n for n, v in (agreed or {}).items() if v[seed][i] == 1.0 and n == head_node}
            reason = None if h["written"] or settled else "uncertain"
            written = decide(head_node, h["probability"], reason, {**sure, **dict.fromkeys(settled, 1.0)}, tax).path
            alone = (head_node,) if h["written"] else ()
            for name, path in (("taxonomy", written), ("head alone", alone)):
                d = out.setdefault(group, {}).setdefault(name, {"right": 0, "wrong": 0, "untagged": 0, "n": 0})
                d["n"] += 1
                d["untagged" if not path else "right" if set(path) <= member_of[i] else "wrong"] += 1
    for group, by in out.items():
        for name, d in by.items():
            n = d.pop("n")
            by[name] = {k: round(v / n, 3) for k, v in d.items()} | {"decisions": n}
    return out
