"""Genre > style decisions: level by level, only where sure, nothing on a conflict."""

from __future__ import annotations

import numpy as np
import pytest

from gtag.genres.hierarchy import NodeRules, NodeScorer, decide, logit, sure_nodes
from gtag.genres.taxonomy import default_taxonomy

TAX = default_taxonomy()


@pytest.mark.parametrize("head, reason, sure, depth, path, source", [
    # the head alone, as before the taxonomy
    ("Rock", None, {}, "style", ("Rock",), "head"),
    # the head's genre and a sure style of it
    ("Rock", None, {"Alternative Rock": 0.9}, "style", ("Rock", "Alternative Rock"), "head"),
    ("Rock", None, {"Alternative Rock": 0.9}, "genre", ("Rock",), "head"),
    # the head unsure, the tags sure of a genre it does not know
    ("Classical", "below the 59% it needs", {"Electronic": 0.8}, "style", ("Electronic",), "tags"),
    ("Classical", "sounds like none of its genres", {"Electronic": 0.8, "Ambient": 0.7}, "style",
     ("Electronic", "Ambient"), "tags"),
    # both name the same genre
    ("Rock", None, {"Rock": 0.9}, "style", ("Rock",), "head+tags"),
    # a style is never written without its genre; a style of another genre is ignored
    ("Rock", None, {"Ambient": 0.99}, "style", ("Rock",), "head"),
    ("Rock", "uncertain", {"Alternative Rock": 0.99}, "style", (), ""),
    # the surest of two sure styles
    ("Rock", None, {"Alternative Rock": 0.8, "Hard Rock": 0.9}, "style", ("Rock", "Hard Rock"), "head"),
])
def test_decide_writes_level_by_level(head, reason, sure, depth, path, source):
    d = decide(head, 0.9, reason, sure, TAX, depth)
    assert d.path == path and d.source == source
    assert (d.reason is None) == bool(path)


def test_two_genres_heard_is_no_genre():
    d = decide("Classical", 0.95, None, {"Electronic": 0.8}, TAX)
    assert d.path == () and "Classical" in d.reason and "Electronic" in d.reason


def test_nothing_sure_keeps_the_heads_reason():
    d = decide("Rock", 0.5, "below the 59% it needs to be right 9 times in 10", {}, TAX)
    assert d.path == () and d.reason.startswith("below the 59%")


def test_the_config_can_exclude_a_genre_or_a_style():
    assert decide("Rock", 0.9, None, {"Alternative Rock": 0.9}, TAX, allowed=lambda n: n != "Alternative Rock").path == ("Rock",)
    d = decide("Classical", 0.3, "uncertain", {"Electronic": 0.9}, TAX, allowed=lambda n: n != "Electronic")
    assert d.path == ()


def test_confidence_is_the_head_vote_or_the_nodes_score():
    assert decide("Rock", 0.9, None, {}, TAX).confidence == 0.9
    assert decide(None, 0.2, "uncertain", {"Electronic": 0.7}, TAX).confidence == 0.7


def test_unknown_depth_is_refused():
    with pytest.raises(ValueError, match="depth"):
        decide("Rock", 0.9, None, {}, TAX, depth="subgenre")


def _scorer(node, tags, w, b, threshold, default=True):
    n = len(tags)
    return NodeScorer(node, tuple(tags), np.asarray(w, float), b, np.zeros(n), np.ones(n), threshold, default=default)


def test_a_scorer_is_a_logistic_regression_on_tag_logits():
    s = _scorer("Electronic", ["electronic", "rock"], [1.0, -1.0], 0.5, 0.5)
    msd = {"electronic": 0.8, "rock": 0.1}
    z = logit([0.8, 0.1]) @ np.array([1.0, -1.0]) + 0.5
    assert s.probability(msd) == pytest.approx(1 / (1 + np.exp(-z)))
    assert s.probability({"electronic": 0.8}) is None  # a tag it reads is missing


def test_nodes_off_by_default_need_enabling():
    rules = NodeRules({"Electronic": _scorer("Electronic", ["electronic"], [1], 0, 0.5),
                       "Pop": _scorer("Pop", ["pop"], [1], 0, 0.5, default=False),
                       "Ambient": NodeScorer.unmeasured("Ambient", ("ambient",))})
    scores = rules.scores({"electronic": 0.9, "pop": 0.9, "ambient": 0.9})
    assert set(sure_nodes(scores, rules)) == {"Electronic"}
    assert set(sure_nodes(scores, rules, frozenset({"Pop", "Ambient"}))) == {"Electronic", "Pop", "Ambient"}
    assert scores["Ambient"] == pytest.approx(0.9)  # unmeasured: its own tag's mean


def test_rules_from_a_manifest_block():
    block = {"nodes": {"electronica": {"tags": ["electronic"], "weights": [2.0], "bias": -1.0, "mean": [0.0],
                                       "scale": [1.0], "min_probability": 0.6}}}
    rules = NodeRules.from_manifest(block, TAX, ("electronic", "ambient", "House"))
    assert rules.scorers["Electronic"].measured  # found by its alias
    assert not rules.scorers["Ambient"].measured and not rules.scorers["House"].default
    with pytest.raises(ValueError, match="not in the taxonomy"):
        NodeRules.from_manifest({"nodes": {"Polka": block["nodes"]["electronica"]}}, TAX, ("electronic",))
    with pytest.raises(ValueError, match="one value per tag"):
        bad = dict(block["nodes"]["electronica"], weights=[1.0, 2.0])
        NodeRules.from_manifest({"nodes": {"Electronic": bad}}, TAX, ("electronic",))


@pytest.mark.parametrize("head_p, node_p, default, expected", [
    (0.45, 0.35, True, "Rock"),  # both past their agreement thresholds
    (0.35, 0.35, True, None),  # the head too unsure even for agreement
    (0.45, 0.25, True, None),  # the scorer too unsure
    (0.45, 0.35, False, None),  # a node off by default never settles anything
])
def test_the_heads_genre_is_settled_only_where_both_agree_enough(head_p, node_p, default, expected):
    from dataclasses import replace

    from gtag.genres.hierarchy import agreeing_node

    s = replace(_scorer("Rock", ["rock"], [1], 0, 0.7, default=default), agree_head_min=0.4, agree_min=0.3)
    rules = NodeRules({"Rock": s})
    assert agreeing_node("Rock", head_p, {"Rock": node_p}, rules) == expected
    assert agreeing_node("Pop", head_p, {"Rock": node_p}, rules) is None  # not the head's genre


def test_an_agreement_rule_is_read_from_the_manifest():
    d = {"tags": ["rock"], "weights": [1.0], "bias": 0.0, "mean": [0.0], "scale": [1.0], "min_probability": 0.7,
         "agree": {"head_min_probability": 0.4, "min_probability": 0.3}}
    rules = NodeRules.from_manifest({"nodes": {"Rock": d}}, TAX, ("rock",))
    s = rules.scorers["Rock"]
    assert (s.agree_head_min, s.agree_min) == (0.4, 0.3) and s.agrees(0.4, 0.3) and not s.agrees(0.39, 0.9)
    plain = NodeRules.from_manifest({"nodes": {"Rock": {k: v for k, v in d.items() if k != "agree"}}}, TAX, ("rock",))
    assert not plain.scorers["Rock"].agrees(0.99, 0.99)  # no rule: agreement never settles
