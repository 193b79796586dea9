"""Refine, never coarsen: what to write over the genres a file already has.

One pure function, ``decide``, used by `gtag tag` and the beets plugin alike. Three modes, named
after their flags:

- ``refine`` (``--force``): gtag's genres replace the file's, except that a value the file has
  that is the same genre or finer (a style of it, per the taxonomy with its aliases: "Alt. Rock" or
  "Hard Rock" under gtag's "Rock") is kept in its place, in the file's own spelling. A sibling or
  unrelated genre is replaced; a coarser one is refined ("Rock" becomes gtag's "Hard Rock").
- ``merge`` (``--merge``): the file's values stay, and each of gtag's that names another node is
  added (so the parent "Rock" goes beside "Alternative Rock").
- ``replace`` (``--replace``): gtag's genres, whatever the file had.

In a container that holds one genre (ID3v2.3 without a separator) the most specific value wins:
``merge`` then writes gtag's genre only where it refines the file's single value, and otherwise
keeps the file as it is, saying why nothing was added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gtag.genres.taxonomy import Taxonomy, default_taxonomy

__all__ = ["MERGE", "MODES", "REFINE", "REPLACE", "Decision", "decide"]

REFINE, MERGE, REPLACE = "refine", "merge", "replace"
MODES = (REFINE, MERGE, REPLACE)


@dataclass(frozen=True)
class Decision:
    """The values to write (equal to ``existing``: write nothing) and why, in one line."""

    values: list[str]
    kept: list[str] = field(default_factory=list)  # the file's values kept over gtag's
    replaced: list[str] = field(default_factory=list)  # the file's values gtag's replace
    added: list[str] = field(default_factory=list)  # gtag's values written
    note: str = ""


def _deepest(names: Sequence[str], tax: Taxonomy) -> str:
    """The most specific of ``names`` (the first of the deepest): a style before its genre."""
    return max(names, key=lambda n: (len(tax.ancestors(n)), -names.index(n)))


def _join(names: Sequence[str]) -> str:
    return ", ".join(names)


def decide(existing: Sequence[str], heard: Sequence[str], mode: str = REFINE, one_value: bool = False,
           taxonomy: Taxonomy | None = None) -> Decision:
    """What to write into a file holding ``existing`` when gtag hears ``heard`` (best first).

    ``one_value``: the container keeps one genre (ID3v2.3 without a separator)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    tax = taxonomy or default_taxonomy()
    existing, heard = list(existing), list(heard)
    if not heard:
        return Decision(existing, kept=existing)
    if not existing or mode == REPLACE:
        values = [_deepest(heard, tax)] if one_value else heard
        gone = [e for e in existing if not any(tax.same(e, v) for v in values)]
        return Decision(values, replaced=gone, added=values,
                        note=f"replaced {_join(gone)} (--replace)" if gone else "")
    if mode == MERGE:
        return _merge(existing, heard, one_value, tax)
    return _refine(existing, heard, one_value, tax)


def _refine(existing: list[str], heard: list[str], one_value: bool, tax: Taxonomy) -> Decision:
    out: list[str] = []
    kept_finer: list[tuple[str, str]] = []
    for g in heard:
        # heard may be a path, genre first ("Rock", "Hard Rock"): a file's style is kept under the
        # deepest node gtag names, so its "Alt. Rock" is a sibling of "Hard Rock", not finer than "Rock"
        deeper = any(tax.is_finer(h, g) for h in heard)
        covering = [e for e in existing if tax.same(e, g) or (not deeper and tax.is_finer(e, g))]
        if not covering:
            if not any(tax.same(g, o) for o in out):
                out.append(g)
            continue
        for e in covering:
            if e not in out:
                out.append(e)
                if not tax.same(e, g):
                    kept_finer.append((e, g))
    if one_value and len(out) > 1:
        if all(v in existing for v in out):
            out = list(existing)  # the file's own values, one stored value: write nothing
        else:
            out = [_deepest(out, tax)]  # one genre fits: the most specific one
    kept = [e for e in existing if e in out]
    replaced = [e for e in existing if e not in out]
    added = [v for v in out if v not in existing]
    parts = [f"kept {e}: finer than {g}" for e, g in kept_finer if e in out]
    refined = [e for e in replaced if any(tax.is_finer(a, e) for a in added)]
    if refined:
        parts.append(f"refined {_join(refined)} to {_join(added)}")
    others = [e for e in replaced if e not in refined]
    if others:
        parts.append(f"replaced {_join(others)}: not {_join(heard)} or a style of it")
    return Decision(out, kept, replaced, added, "; ".join(parts))


def _merge(existing: list[str], heard: list[str], one_value: bool, tax: Taxonomy) -> Decision:
    new = [g for g in heard if not any(tax.same(e, g) for e in existing)]
    dedup: list[str] = []
    for g in new:
        if not any(tax.same(g, d) for d in dedup):
            dedup.append(g)
    if not dedup:
        there = [e for e in existing if any(tax.same(e, g) for g in heard)]
        return Decision(existing, kept=existing, note=f"nothing to add: the file has {_join(there)}")
    if not one_value:
        return Decision(existing + dedup, kept=existing, added=dedup)
    # One genre fits: the most specific value wins; the file's own is never dropped for a coarser one.
    best = _deepest(dedup, tax)
    if len(existing) == 1 and tax.is_finer(best, existing[0]):
        return Decision([best], replaced=existing, added=[best],
                        note=f"refined {existing[0]} to {best}: the tag holds one genre")
    dedup = [best]
    one = "the tag holds one genre (ID3v2.3 without a separator)"
    if len(existing) == 1 and tax.is_finer(existing[0], dedup[0]):
        note = f"{dedup[0]} not added: {one}, and the file's {existing[0]} is finer"
    else:
        note = f"{dedup[0]} not added: {one}, and --merge keeps the file's {_join(existing)}"
    return Decision(existing, kept=existing, note=note)
