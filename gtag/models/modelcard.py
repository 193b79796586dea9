"""Model-card lines for the taxonomy's node scorers (`gtag models`, docs/taxonomy.md).

Pure formatting of a manifest's ``taxonomy`` block: every figure comes from `gtag-train taxonomy`,
measured on tracks the scorers never saw.
"""

from __future__ import annotations

from collections.abc import Mapping

from gtag.genres.taxonomy import Taxonomy

__all__ = ["taxonomy_card"]


def _pct(x) -> str:
    return f"{x:.0%}" if isinstance(x, (int, float)) else "–"


def taxonomy_card(block: Mapping, taxonomy: Taxonomy) -> list[str]:
    """Lines describing each node gtag writes past the vote, and the nodes left unmeasured."""
    nodes = block.get("nodes") or {}
    lines = [f"genres and styles from {block.get('input', 'MSD tags')} (held out: {block.get('measured_on', '?')}):",
             f"  {'node':28s} {'from':>5s}  {'real tracks covered':>19s}  {'right':>5s}  {'GTZAN wrong':>11s}  default"]
    for name, d in nodes.items():
        held = d.get("held_out") or {}
        lib, gtz = held.get("library") or {}, held.get("gtzan") or {}
        shown = " › ".join(taxonomy.path(name)) or name
        covered = f"{_pct(lib.get('coverage'))} of {lib.get('members', 0):g}"
        wrong = f"{gtz.get('wrong', 0):g} of {gtz.get('tracks', 0):g}"
        lines.append(f"  {shown:28s} {d.get('min_probability', 1):5.2f}  {covered:>19s}  {_pct(lib.get('precision')):>5s}  "
                     f"{wrong:>11s}  {'on' if d.get('default', True) else 'off'}")
    for name, d in nodes.items():
        agree = d.get("agree")
        if isinstance(agree, Mapping) and d.get("default", True):
            lines.append(f"  {name}: also where the vote names it from {agree.get('head_min_probability', 0):.2f} "
                         f"(below its own threshold) and this scorer is at {agree.get('min_probability', 0):.2f} or more")
    off = [u["node"] for u in block.get("unmeasured") or [] if isinstance(u, Mapping)]
    if off:
        lines.append(f"unmeasured (fewer than {block.get('min_real_tracks', 10)} real tracks to measure on; written only "
                     f"when enabled in the config): {', '.join(off)}")
    decision = block.get("decision") or {}
    parts = []
    for group, by in decision.items():
        if isinstance(by, Mapping) and isinstance(by.get("taxonomy"), Mapping):
            t, h = by["taxonomy"], by.get("head alone") or {}
            parts.append(f"{group} {_pct(t.get('right'))} right, {_pct(t.get('wrong'))} wrong "
                         f"(vote alone {_pct(h.get('right'))}, {_pct(h.get('wrong'))})")
    if parts:
        lines.append("whole decision on held-out tracks: " + "; ".join(parts))
    return lines
