"""A run folder's models (`gtag-train all`): fingerprints of inputs, snapshots of a models folder,
the comparison with the shipped models, and promotion over them. File I/O only; no training."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from gtag.learn.reference import REFERENCE_ARRAYS, REFERENCE_CARD
from gtag.models.runtime import MANIFEST_FORMAT, MANIFEST_NAME, sha256_file

LICENCE = "MUSICNN_LICENSE.md"  # shipped beside musicnn.onnx (training.export.MUSICNN_LICENCE_FILE)
# Real-library folders whose recall says whether a model hears real music (training.ensemble's gate).
REAL_FOLDERS = ("rock", "classical")


def listing(path: Path) -> str:
    """A fingerprint of a file or of every file under a folder: names, sizes, modification times
    (cheap on a whole dataset, and changes when any file is added, removed or rewritten)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    rows = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in files]
    return hashlib.sha256(json.dumps([str(path.resolve()), rows]).encode()).hexdigest()


def file_sha(path: Path) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: Any) -> None:
    """Whole file or nothing (a stamp half-written by a crash must not pass for a finished step)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def _entries(models_dir: Path) -> list[dict[str, Any]]:
    return read_json(Path(models_dir) / MANIFEST_NAME).get("models", [])


def model_files(models_dir: Path) -> list[str]:
    """The files a models folder's manifest names (each model's file and CPU variant), its licence
    file and the reference set when present, and the manifest itself, last."""
    names: list[str] = []
    for m in _entries(models_dir):
        variant = m.get("cpu_variant")
        names += [m["file"]] + ([variant["file"]] if isinstance(variant, dict) and "file" in variant else [])
    if (Path(models_dir) / LICENCE).is_file():
        names.append(LICENCE)
    names += [REFERENCE_ARRAYS, REFERENCE_CARD]  # gtag learn's "none of these", where there is one
    return [n for n in dict.fromkeys(names) if (Path(models_dir) / n).is_file()] + [MANIFEST_NAME]


def copy_models(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of the models of ``src`` (an empty manifest where ``src`` has none)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if not (src / MANIFEST_NAME).is_file():
        write_json(dst / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "models": []})
        return
    for name in model_files(src):
        shutil.copyfile(src / name, dst / name)


def snapshot(models_dir: Path, blobs: Path) -> dict[str, str]:
    """{file name: sha256} of every file of ``models_dir``; each version is also kept in ``blobs``."""
    blobs.mkdir(parents=True, exist_ok=True)
    out = {}
    for p in sorted(models_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            sha = out[p.name] = sha256_file(p)
            if not (blobs / sha).is_file():
                _copy_atomic(p, blobs / sha)
    return out


def has_blobs(files: dict[str, str], blobs: Path) -> bool:
    return all((blobs / sha).is_file() for sha in files.values())


def restore(models_dir: Path, files: dict[str, str], blobs: Path) -> None:
    """Make ``models_dir`` hold exactly ``files`` (a ``snapshot``), from ``blobs``."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for p in models_dir.iterdir():
        if p.is_file() and p.name not in files:
            p.unlink()
    for name, sha in files.items():
        if file_sha(models_dir / name) != sha:
            _copy_atomic(blobs / sha, models_dir / name)


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------------------------
# Before anything is replaced: the new models beside the shipped ones


def _real(m: dict[str, Any], folder: str) -> float | None:
    lib = m.get("metrics", {}).get("library_cv") or m.get("metrics", {}).get("library") or {}
    v = lib.get(folder, {}).get("called_by_folder_genre") if isinstance(lib.get(folder), dict) else None
    return None if v is None else float(v)


def _valid(m: dict[str, Any]) -> float | None:
    v = m.get("metrics", {}).get("valid_track", {}).get("accuracy")
    return None if v is None else float(v)


def _vote(entries: list[dict[str, Any]]) -> float | None:
    """Valid track accuracy of the default vote, as the ensemble step recorded it."""
    voters = [m for m in entries if m.get("weight", 0) > 0]
    acc = [m.get("ensemble", {}).get("valid_track_accuracy") for m in voters]
    return float(acc[0]) if acc and acc[0] is not None else None


def compare(shipped: Path, new: Path) -> dict[str, Any]:
    """Per model, shipped beside new: whether its file changed, its weight, valid track accuracy
    and real-library recall on rock and classical; and the default vote's valid accuracy."""
    old = {m["name"]: m for m in _entries(shipped)}
    cur = {m["name"]: m for m in _entries(new)}
    rows = []
    for name in list(old) + [n for n in cur if n not in old]:
        a, b = old.get(name, {}), cur.get(name, {})
        status = ("removed" if not b else "new" if not a else
                  "unchanged" if a.get("sha256") == b.get("sha256") else "retrained")
        rows.append({"model": name, "status": status,
                     "weight": [a.get("weight"), b.get("weight")],
                     "valid_track_accuracy": [_valid(a), _valid(b)],
                     **{f"real_{f}": [_real(a, f), _real(b, f)] for f in REAL_FOLDERS}})
    return {"models": rows, "vote": {"voters": [[m["name"] for m in e if m.get("weight", 0) > 0]
                                                for e in (list(old.values()), list(cur.values()))],
                                     "valid_track_accuracy": [_vote(list(old.values())), _vote(list(cur.values()))]}}


def _pair(v: list[Any]) -> str:
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}" if isinstance(x, (int, float)) else str(x)
    return f(v[0]) if v[0] == v[1] else f"{f(v[0])} -> {f(v[1])}"


def format_table(cmp: dict[str, Any], shipped: Path, new: Path) -> str:
    """The comparison as a plain-text table (shipped -> new where they differ)."""
    head = ["model", "file", "vote weight", "valid track acc", "real rock", "real classical"]
    rows = [[r["model"], r["status"], _pair(r["weight"]), _pair(r["valid_track_accuracy"]),
             _pair(r["real_rock"]), _pair(r["real_classical"])] for r in cmp["models"]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = [f"shipped ({shipped}) -> new ({new}):"]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    v = cmp["vote"]
    lines.append(f"default vote: {'+'.join(v['voters'][0]) or 'all, equally'} -> "
                 f"{'+'.join(v['voters'][1]) or 'all, equally'}; valid track accuracy "
                 f"{_pair(v['valid_track_accuracy'])}")
    return "\n".join(lines)


def promote(new: Path, shipped: Path, backup: Path) -> list[str]:
    """Copy the models of ``new`` over ``shipped``: every changed file whole (beside, then renamed),
    the manifest last, so gtag never reads a manifest naming a file not yet there. The shipped
    versions of the files replaced go to ``backup`` first. Returns the names of the files changed."""
    shipped.mkdir(parents=True, exist_ok=True)
    changed = [n for n in model_files(new) if file_sha(shipped / n) != file_sha(new / n)]
    if changed:
        backup.mkdir(parents=True, exist_ok=True)
    for name in changed:
        if (shipped / name).is_file():
            shutil.copyfile(shipped / name, backup / name)
    for name in changed:  # model_files puts the manifest last
        _copy_atomic(new / name, shipped / name)
    return changed
