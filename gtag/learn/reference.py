"""Music outside a learned model's genres: reference embeddings that `gtag learn` teaches as the
reject class ("none of these"), so a model learned on three genres abstains on a fourth instead of
calling it one of its three.

The set ships beside the models (``reference.npz``, arrays only, and ``reference.json``, what they
are): the shipped backbone's window embeddings of GTZAN tracks, written by `gtag-train reference`.
A learned genre is never taught apart from reference music the taxonomy puts in its own genre: a
library's "Alt. Rock" keeps GTZAN's rock clips out of its "none of these".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gtag import __version__
from gtag.genres.taxonomy import Taxonomy, default_taxonomy
from gtag.models.runtime import ModelError, sha256_file

REFERENCE_FORMAT = "gtag-reference-1"
REFERENCE_ARRAYS = "reference.npz"
REFERENCE_CARD = "reference.json"
OTHER = "(none of these)"  # the reject class's label inside a learned head; never written


@dataclass(frozen=True)
class Reference:
    """Reference tracks: each one's genre and its windows' embeddings."""

    genres: tuple[str, ...]  # one per track (GTZAN labels)
    windows: tuple[np.ndarray, ...]  # one (n, d) float32 array per track
    backbone: str  # the embedding graph's key (``gtag.learn.embed.Backbone.sha256``)
    card: dict[str, Any] = field(default_factory=dict)


def save_reference(folder: str | os.PathLike, genres: list[str], windows: list[np.ndarray], backbone: str,
                   card: dict[str, Any]) -> Path:
    """Write the two files atomically (each to a hidden temporary name first); returns the card's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(w) for w in windows], np.int32)
    tmp = folder / f".{REFERENCE_ARRAYS}.tmp"
    with open(tmp, "wb") as f:  # float16: a third of a megabyte per hundred tracks, same heads
        np.savez_compressed(f, embeddings=np.concatenate(windows).astype(np.float16), lengths=lengths)
    tmp.replace(folder / REFERENCE_ARRAYS)
    full = {"format": REFERENCE_FORMAT, "gtag_version": __version__, **card, "genres": list(genres), "backbone": backbone,
            "tracks": len(genres), "windows": int(lengths.sum()), "sha256": sha256_file(folder / REFERENCE_ARRAYS)}
    tmp = folder / f".{REFERENCE_CARD}.tmp"
    tmp.write_text(json.dumps(full, indent=2) + "\n")
    tmp.replace(folder / REFERENCE_CARD)
    return folder / REFERENCE_CARD


def load_reference(folder: str | os.PathLike, backbone: str) -> tuple[Reference | None, str]:
    """The reference set in ``folder`` for this backbone, or (None, why there is none). A set that
    is there but corrupt raises ModelError, as a corrupt model file does."""
    card_path, arrays = Path(folder) / REFERENCE_CARD, Path(folder) / REFERENCE_ARRAYS
    if not card_path.is_file():
        return None, f"no reference set in {folder} (gtag-train reference writes one)"
    try:
        card = json.loads(card_path.read_text())
        if card.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"format {card.get('format')!r}, expected {REFERENCE_FORMAT!r}")
        if not arrays.is_file() or sha256_file(arrays) != card["sha256"]:
            raise ValueError(f"{REFERENCE_ARRAYS} is missing or does not match its card")
        with np.load(arrays, allow_pickle=False) as z:
            emb, lengths = z["embeddings"].astype(np.float32), z["lengths"]
        genres = tuple(str(g) for g in card["genres"])
        if len(lengths) != len(genres) or int(lengths.sum()) != len(emb) or np.any(lengths < 1):
            raise ValueError("its tracks and windows do not add up")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"reference set {card_path}: {exc}") from None
    if card.get("backbone") != backbone:
        return None, "the reference set was computed by another backbone (gtag-train reference renews it)"
    windows = tuple(np.split(emb, np.cumsum(lengths)[:-1]))
    return Reference(genres, windows, backbone, card), ""


def same_genre(label: str, genre: str, taxonomy: Taxonomy) -> bool:
    """Whether the taxonomy puts a learned ``label`` and a reference ``genre`` in one top-level
    genre ("Alt. Rock" and rock); names it does not know are compared by spelling only."""
    a, b = taxonomy.genre_of(label), taxonomy.genre_of(genre)
    if a is None or b is None:
        return taxonomy.same(label, genre)
    return a == b


def outside_tracks(labels: tuple[str, ...], reference: Reference, taxonomy: Taxonomy) -> list[int]:
    """Indices of the reference tracks whose genre is none of ``labels``' genres: the reject class."""
    return [i for i, g in enumerate(reference.genres) if not any(same_genre(lab, g, taxonomy) for lab in labels)]


def reference_music(root: str | os.PathLike, backbone: str,
                    labels: tuple[str, ...]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The windows of the reference tracks the reject class learns from (those of genres outside
    ``labels``), and what a learned model's manifest says of them ("why" when there are none)."""
    ref, why = load_reference(root, backbone)
    if ref is None:
        return [], {"why": why}
    idx = outside_tracks(labels, ref, default_taxonomy())
    if not idx:
        return [], {"why": "every reference genre is one of yours"}
    return [ref.windows[i] for i in idx], {"tracks": len(idx), "genres": sorted({ref.genres[i] for i in idx}),
                                           "reference": ref.card.get("what", ""), "sha256": ref.card.get("sha256")}
