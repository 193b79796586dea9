import numpy as np
import pytest

from gtag.models import vote


def test_track_probabilities_average_windows():
    p = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    assert vote.track_probabilities(p) == pytest.approx([0.6, 0.4])


def test_track_probabilities_needs_windows():
    with pytest.raises(ValueError):
        vote.track_probabilities(np.zeros((0, 3)))


def test_align_reorders_by_label():
    p = np.array([0.1, 0.2, 0.7])
    assert vote.align(p, ["a", "b", "c"], ["c", "a", "b"]).tolist() == [0.7, 0.1, 0.2]
    with pytest.raises(ValueError):
        vote.align(p, ["a", "b", "c"], ["a", "b", "x"])


@pytest.mark.parametrize(
    "weights, expected",
    [
        (None, [0.5, 0.5]),  # equal weights
        ({"m1": 3.0, "m2": 1.0}, [0.75, 0.25]),  # weights shift the vote
        ({"m1": 0.0, "m2": 1.0}, [0.0, 1.0]),  # a zero weight silences a model
        ({"m1": 0.0, "m2": 0.0}, [0.5, 0.5]),  # models picked by hand outside the ensemble vote equally
    ],
)
def test_combine_weights(weights, expected):
    labels, p = vote.combine(
        {"m1": np.array([1.0, 0.0]), "m2": np.array([1.0, 0.0])[::-1]},
        {"m1": ["rock", "jazz"], "m2": ["rock", "jazz"]},
        weights,
    )
    assert labels == ("rock", "jazz") and p == pytest.approx(expected)


def test_combine_aligns_models_with_different_label_orders():
    labels, p = vote.combine(
        {"a": np.array([0.8, 0.2]), "b": np.array([0.2, 0.8])},
        {"a": ["rock", "jazz"], "b": ["jazz", "rock"]},
    )
    assert labels == ("rock", "jazz") and p == pytest.approx([0.8, 0.2])


def test_combine_rejects_bad_weights():
    with pytest.raises(ValueError):
        vote.combine({"a": np.array([1.0])}, {"a": ["x"]}, {"a": -1.0})


def test_top_k_orders_and_breaks_ties_by_label_order():
    assert vote.top_k(["a", "b", "c"], np.array([0.4, 0.4, 0.2]), 2) == [("a", 0.4), ("b", 0.4)]
    assert vote.top_k(["a", "b"], np.array([0.3, 0.7]), 1) == [("b", 0.7)]


@pytest.mark.parametrize(
    "starts, other, expected",
    [
        ([0, 1.5, 3, 4.5, 6], [0, 3, 6], [0, 0, 1, 1, 2]),  # a tie goes to the earlier window
        ([0, 1.5, 3], [0, 3, 6], [0, 0, 1]),
        ([0, 1, 2, 3], [0], [0, 0, 0, 0]),  # one window covers everything
        ([0, 3], [0, 1.5, 3], [0, 2]),  # coarser grid onto finer: exact matches
        ([7.0], [0, 3, 6], [2]),  # past the last window: the last
    ],
)
def test_nearest_windows(starts, other, expected):
    got = vote.nearest_windows(np.array(starts), np.array(other))
    assert got.tolist() == expected


def test_nearest_windows_needs_windows():
    with pytest.raises(ValueError):
        vote.nearest_windows(np.array([0.0]), np.array([]))
