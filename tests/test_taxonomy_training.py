"""`gtag-train taxonomy`'s choices on small made-up held-out data: thresholds and the agreement rule."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from training.taxonomy import TARGET_PRECISION, choose_agreement  # noqa: E402


def _decisions():
    # eligible library decisions: members score 0.4-0.8, two non-members 0.25 and 0.35; one GTZAN
    # non-member at 0.3 with a head at 0.32 (below the 0.35 floor)
    node_p = np.array([0.4, 0.5, 0.6, 0.7, 0.8, 0.25, 0.35, 0.3, 0.9])
    head_p = np.array([0.5, 0.5, 0.45, 0.5, 0.55, 0.5, 0.5, 0.32, 0.5])
    member = np.array([1, 1, 1, 1, 1, 0, 0, 0, 1], bool)
    domain = np.array(["library"] * 7 + ["gtzan", "library"])
    eligible = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0], bool)  # the last was written by the head anyway
    return head_p, node_p, eligible, member, domain


def test_agreement_adds_only_what_is_right_often_enough():
    head_p, node_p, eligible, member, domain = _decisions()
    floor, t = choose_agreement(head_p, node_p, eligible, member, domain)
    added = eligible & (head_p >= floor) & (node_p >= t)
    assert added.sum() == 5 and member[added].all()  # every member, no non-member
    assert t > 0.35  # the stricter of the pairs that add as many


def test_no_pair_when_agreement_adds_nothing_right():
    head_p, node_p, eligible, member, domain = _decisions()
    assert choose_agreement(head_p, node_p, eligible, np.zeros_like(member), domain) is None


def test_a_wrong_addition_in_either_set_counts():
    head_p, node_p, eligible, member, domain = _decisions()
    head_p[7] = 0.9  # the GTZAN non-member now passes any floor: its 0.3 must stay below the threshold
    floor, t = choose_agreement(head_p, node_p, eligible, member, domain)
    added = eligible & (head_p >= floor) & (node_p >= t)
    gtzan = added & (domain == "gtzan")
    assert not gtzan.any() or member[gtzan].mean() >= TARGET_PRECISION
