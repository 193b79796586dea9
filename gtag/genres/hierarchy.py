"""Genre > style decisions: the GTZAN head's vote and musicnn's MSD tags, level by level.

The shipped head knows GTZAN's ten genres; musicnn's MSD tag layer (Last.fm tags of a million
songs) hears more ("electronic", "alternative", "hard rock"). A *node scorer* (fitted by
`gtag-train taxonomy`, stored in the manifest's ``taxonomy`` block) turns the track's mean MSD tags
into the probability of one taxonomy node; its ``min_probability`` was chosen on held-out real
tracks. ``decide`` combines them:

1. genre level: the head's genre when its own abstain rule lets it be written, and every genre
   node whose scorer is sure. One genre: written. None: nothing (the head's reason). Two different
   ones ("Classical" from the head, "Electronic" from the tags): nothing, and the reason says so.
2. style level (``depth="style"``): the surest sure style of that genre (scorers of styles were
   fitted among tracks of their genre, so they are asked only once the genre is written).

A node that was not measured on enough held-out real tracks is written only when the user turns
it on (config ``enable``). Pure functions over plain values; nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gtag.genres.taxonomy import GENRE, STYLE, Taxonomy

__all__ = ["AGREE", "DEPTHS", "Decision", "NodeRules", "NodeScorer", "agreeing_node", "decide", "logit", "sure_nodes"]

DEPTHS = (GENRE, STYLE)
AGREE = "agree"  # a Decision's source: the head's genre, below its threshold, settled by the node's scorer
# An unmeasured node's default rule (it is written only where the user enables it): the mean of
# its own MSD tag over the windows reaches this. No held-out figure backs it; `gtag models` says so.
UNMEASURED_MIN_TAG = 0.5


def logit(p: np.ndarray | float, eps: float = 1e-4) -> np.ndarray:
    """log(p / (1 - p)) with p kept inside [eps, 1 - eps] (a sigmoid of exactly 0 or 1 is no evidence
    worth infinity)."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class NodeScorer:
    """P(node | track) = sigmoid(weights . (logit(tags) - mean) / scale + bias)."""

    node: str
    tags: tuple[str, ...]  # MSD tags read, in ``weights`` order
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    min_probability: float  # chosen on held-out real tracks (manifest ``chosen_on``)
    measured: bool = True  # False: no held-out figures (its own tag's mean decides)
    default: bool = True  # written without being enabled (measured, and right 90 % held out)
    # Agreement (manifest "agree"): where the genre head's top genre is this node's and it held it
    # back for its probability alone, the node settles it when the head is at least
    # ``agree_head_min`` and this scorer at least ``agree_min`` (both chosen on held-out tracks).
    agree_head_min: float | None = None
    agree_min: float | None = None

    def agrees(self, head_probability: float, p: float) -> bool:
        """Whether the head (at ``head_probability``) and this scorer (at ``p``) agree enough."""
        return (self.agree_min is not None and self.agree_head_min is not None
                and head_probability >= self.agree_head_min and p >= self.agree_min)

    def probability(self, msd: Mapping[str, float]) -> float | None:
        """The node's probability from a track's mean MSD tags (None: a tag it reads is missing)."""
        if any(t not in msd for t in self.tags):
            return None
        if not self.measured:  # the unmeasured rule: its own tag's mean
            return float(max(msd[t] for t in self.tags))
        z = (logit([msd[t] for t in self.tags]) - self.mean) / self.scale
        return float(1 / (1 + np.exp(-(float(z @ self.weights) + self.bias))))

    @classmethod
    def from_manifest(cls, node: str, d: Mapping) -> "NodeScorer":
        tags = tuple(d["tags"])
        arrays = [np.asarray(d[k], dtype=np.float64) for k in ("weights", "mean", "scale")]
        if any(a.shape != (len(tags),) for a in arrays) or not np.all(arrays[2] > 0):
            raise ValueError(f"taxonomy node {node}: weights, mean and scale must each have one value per tag")
        agree = d.get("agree") or {}
        return cls(node, tags, arrays[0], float(d["bias"]), arrays[1], arrays[2], float(d["min_probability"]),
                   default=bool(d.get("default", True)),
                   agree_head_min=float(agree["head_min_probability"]) if agree else None,
                   agree_min=float(agree["min_probability"]) if agree else None)

    @classmethod
    def unmeasured(cls, node: str, tags: tuple[str, ...]) -> "NodeScorer":
        zero = np.zeros(len(tags))
        return cls(node, tags, zero, 0.0, zero, zero + 1, UNMEASURED_MIN_TAG, measured=False, default=False)


@dataclass(frozen=True)
class NodeRules:
    """Every node gtag can score: measured scorers from the manifest, the taxonomy's other nodes
    with MSD evidence as unmeasured ones."""

    scorers: dict[str, NodeScorer]
    model: str = "musicnn"  # whose MSD tags the scorers read

    @classmethod
    def from_manifest(cls, block: Mapping, taxonomy: Taxonomy, tag_labels: tuple[str, ...],
                      model: str = "musicnn") -> "NodeRules":
        scorers: dict[str, NodeScorer] = {}
        for name, d in (block.get("nodes") or {}).items():
            node = taxonomy.find(name)
            if node is None:
                raise ValueError(f"taxonomy node {name!r} of the manifest is not in the taxonomy")
            scorers[node.name] = NodeScorer.from_manifest(node.name, d)
        for node in taxonomy.nodes.values():
            tags = tuple(t for t in node.msd if t in tag_labels)
            if node.name not in scorers and tags:
                scorers[node.name] = NodeScorer.unmeasured(node.name, tags)
        return cls(scorers, model)

    def scores(self, msd: Mapping[str, float]) -> dict[str, float]:
        """Each scorable node's probability for a track's mean MSD tags."""
        out = {}
        for name, s in self.scorers.items():
            p = s.probability(msd)
            if p is not None:
                out[name] = p
        return out


@dataclass(frozen=True)
class Decision:
    """What to write: ``path`` genre first (empty: nothing), with the reason when it is empty."""

    path: tuple[str, ...] = ()
    reason: str | None = None
    source: str = ""  # "head", "tags", "head+tags" or AGREE: who named the genre
    confidence: float | None = None  # of the genre written: the head's vote or the node's score


def agreeing_node(head_node: str | None, head_probability: float, scores: Mapping[str, float],
                  rules: NodeRules) -> str | None:
    """``head_node`` when its scorer's agreement rule settles a genre the head held back for its
    probability alone (the caller checks that the head's other limits passed), else None."""
    s = rules.scorers.get(head_node) if head_node is not None else None
    if s is None or not s.default or head_node not in scores:
        return None
    return head_node if s.agrees(head_probability, scores[head_node]) else None


def sure_nodes(scores: Mapping[str, float], rules: NodeRules, enabled: frozenset[str] = frozenset()) -> dict[str, float]:
    """The nodes whose scorer is sure (at its ``min_probability``): those written by default, and the
    others only where ``enabled`` names them."""
    out = {}
    for name, p in scores.items():
        s = rules.scorers[name]
        if (s.default or name in enabled) and p >= s.min_probability:
            out[name] = p
    return out


def decide(head_node: str | None, head_confidence: float, head_reason: str | None,
           sure: Mapping[str, float], taxonomy: Taxonomy, depth: str = STYLE,
           allowed=lambda name: True) -> Decision:
    """The genre (and style) to write; see the module docstring. ``head_node``: the taxonomy node of
    the head's voted genre; ``head_reason``: why the head's own rule would write nothing (None: it
    would write it); ``sure``: ``sure_nodes``; ``allowed``: the config's whitelist/exclude test."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(DEPTHS)}, not {depth!r}")
    sure = {n: p for n, p in sure.items() if allowed(n)}
    genres = {n: p for n, p in sure.items() if taxonomy.nodes[n].parent is None}
    named: dict[str, str] = {}
    if head_reason is None and head_node is not None and allowed(head_node):
        named[head_node] = "head"
    for n in genres:
        named[n] = "head+tags" if n in named else "tags"
    if not named:
        return Decision(reason=head_reason or "no genre is sure enough")
    if len(named) > 1:
        heard = " and ".join(f"{n} ({'its genre vote' if s == 'head' else 'its tags'})" for n, s in sorted(named.items()))
        return Decision(reason=f"hears both {heard}")
    ((genre, source),) = named.items()
    confidence = head_confidence if source != "tags" else genres[genre]
    styles = {n: p for n, p in sure.items() if taxonomy.nodes[n].parent == genre}
    if depth == GENRE or not styles:
        return Decision((genre,), None, source, confidence)
    style = max(styles, key=lambda n: (styles[n], n))
    return Decision((genre, style), None, source, confidence)
