"""The policy on one prediction, pure (no file read or written): which genres a file should hold,
or why none, for `gtag tag`, the Python API and the beets plugin alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gtag.config import GenrePolicy
from gtag.genres import refine
from gtag.predict.pipeline import Predictor
from gtag.predict.prediction import Prediction
from gtag.run.messages import low_confidence_reason, refusal_reason

from gtag.run.records import (
    SKIPPED_EXCLUDED,
    SKIPPED_LOW_CONFIDENCE,
    SKIPPED_UNCERTAIN,
    TAGGED,
    UNCHANGED,
    Record,
    TagOptions,
)
from gtag.tags import formats


def choose_genres(pred: Prediction, min_confidence: float, top_k: int,
                  policy: GenrePolicy | None = None) -> list[str]:
    """Labels to write: the top-k genres whose probability reaches ``min_confidence`` (none when
    even the best one does not: no tag is better than a guess), among those the config's
    whitelist and exclude list allow (probabilities are not renormalised)."""
    ranked = pred.top(len(pred.labels))
    if policy is not None:
        ranked = [(g, p) for g, p in ranked if policy.allowed(g)]
    return [g for g, p in ranked[:top_k] if p >= min_confidence]


@dataclass(frozen=True)
class Decision:
    """What the policy makes of one prediction for a file that holds ``existing`` genres."""

    status: str  # TAGGED (write ``genres``), UNCHANGED, or a skip: uncertain / low confidence / excluded
    genres: list[str]  # the genres the file should hold (display names); empty unless TAGGED/UNCHANGED
    chosen: list[str]  # gtag's own pick (genre first, then its style), before keeping what the file has
    reason: str | None = None  # why nothing is written (a skip)
    agreed: str | None = None  # the second-opinion model whose agreeing let the genre be written
    note: str | None = None  # what was kept or replaced of the file's own genres (gtag.genres.refine)
    genre: str | None = None  # the genre gtag hears (display name), for lines and reports
    confidence: float | None = None  # its probability: the vote's, or the node scorer's (from the tags)
    levels: tuple[str, ...] = ()  # the taxonomy path written, genre first (gtag.genres.hierarchy)
    source: str | None = None  # who named the genre: "head", "tags" or "head+tags"
    nodes: dict[str, float] = field(default_factory=dict)  # taxonomy node -> probability from the MSD tags


def node_name(policy: GenrePolicy, node: str) -> str:
    """The written name of a taxonomy node (the config's [names] may rename it)."""
    from gtag.genres.taxonomy import default_taxonomy

    n = default_taxonomy().nodes.get(node)
    return policy.node_name(node, n.gtzan if n is not None else None)


def node_allowed(policy: GenrePolicy, node: str) -> bool:
    """The config's whitelist / exclude list, asked of a taxonomy node (by its label or name)."""
    from gtag.genres.taxonomy import default_taxonomy

    n = default_taxonomy().nodes.get(node)
    if n is not None and n.gtzan and not policy.allowed(n.gtzan):
        return False
    return policy.allowed(node) and policy.allowed(node_name(policy, node))


def decide(predictor: Predictor, pred: Prediction, existing: list[str], opts: TagOptions,
           fmt: str = "") -> Decision:
    """The policy on one prediction (pure: no file read or written), for `gtag tag` and the beets
    plugin alike: with --min-confidence, the top-k allowed genres that reach it; else the genre >
    style decision (gtag.genres.hierarchy) where the models have a taxonomy, else the abstain rule; then
    the file's own genres kept, refined or replaced (gtag.genres.refine). ``fmt``: the container, whose
    room for values (ID3v2.3 without a separator: one) the result must fit."""
    explicit = opts.min_confidence is not None
    min_p = opts.min_confidence if explicit else predictor.min_probability(pred)
    genre, confidence = opts.policy.name(pred.genre), round(pred.confidence, 4)
    chosen = opts.policy.names_of(choose_genres(pred, min_p, opts.top_k, opts.policy))
    agreed, levels, source, nodes = None, (), None, {}
    tree = None
    if not explicit and predictor.abstain_rule is not None:
        tree = predictor.decide(pred, opts.depth, opts.policy.enable, lambda n: node_allowed(opts.policy, n))
    if tree is not None:  # genre > style, level by level
        nodes = {n: round(p, 4) for n, p in predictor.node_scores(pred).items()}
        if not tree.path:
            head = predictor.taxonomy_node(pred)
            if head is not None and not node_allowed(opts.policy, head) and predictor.abstain_reason(pred) is None:
                status, reason = no_genre(pred, opts, min_p)  # the config refused the genre it is sure of
                return Decision(status, [], [], reason, genre=genre, confidence=confidence, nodes=nodes)
            return Decision(SKIPPED_UNCERTAIN, [], [], tree.reason, genre=genre, confidence=confidence, nodes=nodes)
        levels, source = tuple(tree.path), tree.source
        genre, confidence = node_name(opts.policy, tree.path[0]), round(float(tree.confidence), 4)
        chosen = [node_name(opts.policy, n) for n in tree.path]
        agreed = predictor.agreed_by(pred) if tree.source != "tags" else None
    elif not explicit and predictor.abstain_rule is not None:
        reason = predictor.abstain_reason(pred)
        if reason:
            return Decision(SKIPPED_UNCERTAIN, [], [], reason, genre=genre, confidence=confidence)
        agreed = predictor.agreed_by(pred)
    if not chosen:
        status, reason = no_genre(pred, opts, min_p)
        return Decision(status, [], [], reason, agreed, genre=genre, confidence=confidence, nodes=nodes)
    one_value = len(formats.fit_genres(fmt, ["a", "b"], opts.separator)) < 2
    mode = refine.MERGE if opts.merge else refine.REPLACE if opts.replace else refine.REFINE
    kept = refine.decide(list(existing), chosen, mode, one_value)
    out = formats.fit_genres(fmt, kept.values, opts.separator) if fmt else list(kept.values)
    if kept.values == list(existing):
        out = list(existing)  # the file keeps what it has: nothing to write
    return Decision(UNCHANGED if list(existing) == out else TAGGED, out, chosen, None, agreed, kept.note or None,
                    genre, confidence, levels, source, nodes)


def fill_record(rec: Record, pred: Prediction, opts: TagOptions, min_confidence: float) -> None:
    """Copy what the report shows of ``pred`` into ``rec``: its genre, probabilities and picks."""
    rec.genre = opts.policy.name(pred.genre)
    rec.confidence = round(pred.confidence, 4)
    rec.probabilities = {lab: round(float(p), 4) for lab, p in zip(pred.labels, pred.probabilities)}
    rec.models = {n: {lab: round(float(x), 4) for lab, x in zip(pred.labels, p)} for n, p in pred.models.items()}
    rec.genres = opts.policy.names_of(choose_genres(pred, min_confidence, opts.top_k, opts.policy))


def no_genre(pred: Prediction, opts: TagOptions, min_probability: float) -> tuple[str, str]:
    """Status and reason of a prediction from which no genre is chosen: the config refused the top
    genre (and no allowed one reaches the bar), or the top genre is not probable enough."""
    refused = refusal_reason(pred.top(len(pred.labels)), min_probability, opts.policy)
    if refused is not None:
        return SKIPPED_EXCLUDED, refused
    return SKIPPED_LOW_CONFIDENCE, low_confidence_reason(opts.policy.name(pred.genre), pred.confidence,
                                                         min_probability)
