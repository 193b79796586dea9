"""gtag learn's "none of these": the reference set it teaches as a reject class, which of its
tracks count as outside a library's genres, and a learned head that abstains on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gtag.genres.taxonomy import default_taxonomy
from gtag.learn.learner import cross_validate
from gtag.learn.reference import (
    REFERENCE_ARRAYS,
    REFERENCE_CARD,
    Reference,
    load_reference,
    outside_tracks,
    same_genre,
    save_reference,
)
from gtag.models.runtime import ModelError


@pytest.mark.parametrize(("label", "genre", "same"), [
    ("Alt. Rock", "rock", True),          # a style and its genre
    ("Alternative Rock", "metal", False),  # Metal is a genre of its own
    ("Heavy Metal", "metal", True),
    ("Electronic", "disco", False),
    ("Classical Music", "classical", True),
    ("Rap", "hiphop", True),              # an alias
    ("Soundtrack", "jazz", False),        # unknown to the taxonomy: spelling only
    ("blues", "blues", True),
])
def test_a_learned_genre_is_never_taught_apart_from_its_own_genre(label, genre, same):
    assert same_genre(label, genre, default_taxonomy()) is same


def test_the_reject_class_is_the_reference_genres_outside_the_library():
    ref = Reference(("rock", "jazz", "metal", "classical", "jazz"), tuple(np.zeros((1, 2)) for _ in range(5)), "k")
    assert outside_tracks(("Alternative Rock", "Classical"), ref, default_taxonomy()) == [1, 2, 4]


def _ref(tmp_path, backbone="graph-key"):
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 1, 2)]
    save_reference(tmp_path, ["jazz", "blues", "rock"], windows, backbone, {"what": "test"})
    return windows


def test_the_reference_set_round_trips_without_pickle(tmp_path):
    windows = _ref(tmp_path)
    ref, why = load_reference(tmp_path, "graph-key")
    assert why == "" and ref.genres == ("jazz", "blues", "rock") and ref.card["what"] == "test"
    for got, want in zip(ref.windows, windows):
        np.testing.assert_allclose(got, want, atol=2e-3)  # stored as float16
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_no_reference_or_another_backbones_is_no_reject_class_with_its_reason(tmp_path):
    assert load_reference(tmp_path, "k") == (None, f"no reference set in {tmp_path} (gtag-train reference writes one)")
    _ref(tmp_path)
    ref, why = load_reference(tmp_path, "another graph")
    assert ref is None and "another backbone" in why


@pytest.mark.parametrize("damage", ["arrays", "card", "count"])
def test_a_damaged_reference_set_is_a_model_error(tmp_path, damage):
    _ref(tmp_path)
    card = json.loads((tmp_path / REFERENCE_CARD).read_text())
    if damage == "arrays":
        (tmp_path / REFERENCE_ARRAYS).write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "card":
        (tmp_path / REFERENCE_CARD).write_text("{")
    else:
        card["genres"] = card["genres"][:2]
        (tmp_path / REFERENCE_CARD).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="reference set"):
        load_reference(tmp_path, "graph-key")


def _clusters(rng, centre, tracks, windows=6, spread=1.0):
    return [centre + spread * rng.normal(size=(windows, len(centre))) for _ in range(tracks)]


def test_a_head_with_the_reject_class_abstains_on_music_outside_its_genres():
    """Three genres learned, a fourth (the reference's) held out: without the reject class the rule
    still tags most of it; with it, hardly any, and the library's own tracks keep their tags."""
    rng = np.random.default_rng(1)
    d = 12
    centres = [np.eye(d)[i] * 4 for i in range(3)]
    # near genre "a", apart along a direction none of the three uses: not far enough for the distance
    # rule, and the softmax over three genres calls it "a" with confidence
    outside_centre = centres[0] + np.eye(d)[5] * 1.5
    embs = [w for c in centres for w in _clusters(rng, c, 18)]
    y = np.repeat(np.arange(3), 18)
    groups = [f"artist{i // 2}" for i in range(len(y))]
    other = _clusters(rng, outside_centre, 40)
    labels = ("a", "b", "c")
    plain = cross_validate(embs, y, groups, labels, C=0.05)
    taught = cross_validate(embs, y, groups, labels, C=0.05, other=other)
    assert "outside" not in plain and taught["outside"]["tracks"] == 40
    assert taught["outside"]["tagged"] <= 0.1
    assert taught["abstain"]["coverage"] >= 0.85 and taught["abstain"]["precision"] >= 0.9
    assert "max_unknown" in taught["abstain"] and "max_unknown" not in plain["abstain"]
    # the rule without the reject class, on the same outside music, tags most of it
    from gtag.models import head as heads

    x, yy, gg = heads.stack_tracks(embs, y, np.arange(len(y)))
    h = heads.calibrate(heads.fit_head(x, yy, gg, labels, C=0.05), plain["temperature"])
    ab = plain["abstain"]
    tagged = [h.predict_proba(o).mean(axis=0).max() >= ab["min_probability"]
              and h.distances(o).mean() <= ab["max_distance"] for o in other]
    assert np.mean(tagged) >= 0.8
