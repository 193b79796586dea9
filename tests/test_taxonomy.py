"""The shipped taxonomy and the rules every taxonomy file must keep."""

from __future__ import annotations

import pytest

from gtag.genres.taxonomy import TaxonomyError, default_taxonomy, load_taxonomy, parse_taxonomy

TAX = default_taxonomy()


@pytest.mark.parametrize("label", ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop",
                                   "reggae", "rock"])
def test_every_gtzan_label_is_a_node(label):
    assert label in TAX.by_gtzan


@pytest.mark.parametrize("spelling, node", [
    ("Alt. Rock", "Alternative Rock"), ("alternative", "Alternative Rock"), ("ALT-ROCK", "Alternative Rock"),
    ("Hip Hop", "Hip-Hop"), ("rap", "Hip-Hop"), ("R&B", "Soul"), ("Chill-out", "Downtempo"),
    ("electronica", "Electronic"), ("Prog Rock", "Progressive Rock"), ("Électronic", "Electronic"),
])
def test_aliases_and_spellings_name_one_node(spelling, node):
    assert TAX.find(spelling).name == node


@pytest.mark.parametrize("finer, coarser, expected", [
    ("Alt. Rock", "Rock", True), ("Hard Rock", "rock", True), ("Ambient", "Electronic", True),
    ("Rock", "Alternative Rock", False), ("Rock", "Rock", False), ("Ambient", "Rock", False),
    ("Polka", "Rock", False), ("Heavy Metal", "Metal", True),
])
def test_is_finer(finer, coarser, expected):
    assert TAX.is_finer(finer, coarser) is expected


def test_paths_go_genre_first():
    assert TAX.path("chill") == ["Electronic", "Downtempo"]
    assert TAX.genre_of("Alt Rock") == "Rock"
    assert TAX.path("Polka") == [] and TAX.genre_of("Polka") is None


def test_the_genres_the_msd_and_mtt_layers_name_are_there():
    assert {"Electronic", "Folk", "Soul", "Funk", "Country", "New Age", "World", "Hip-Hop"} <= set(TAX.genres())
    for style in ("Alternative Rock", "Indie Rock", "Hard Rock", "Punk", "Classic Rock", "Progressive Rock"):
        assert TAX.find(style).parent == "Rock"
    for style in ("Ambient", "House", "Techno", "Electro", "Dance", "Downtempo", "Drum and Bass"):
        assert TAX.find(style).parent == "Electronic"
    assert TAX.find("Opera").parent == TAX.find("Choral").parent == "Classical"


def test_every_node_says_where_it_comes_from():
    assert all(n.source for n in TAX.nodes.values())


@pytest.mark.parametrize("nodes, message", [
    ([{"name": "A", "parent": "B"}, {"name": "B", "parent": "A"}], "cycle"),
    ([{"name": "A", "parent": "A"}], "cycle"),
    ([{"name": "Shoegaze", "parent": "Indie"}], "no parent"),
    ([{"name": "A"}, {"name": "B", "aliases": ["a"]}], "names both"),
    ([{"name": "A"}, {"name": "A"}], "twice"),
    ([{"name": "A", "colour": "red"}], "unknown field"),
    ([{"name": ""}], "no name"),
    ([{"name": "A", "aliases": "B"}], "list of names"),
])
def test_a_broken_taxonomy_is_one_clear_error(nodes, message):
    with pytest.raises(TaxonomyError, match=message):
        parse_taxonomy({"node": nodes})


@pytest.mark.parametrize("content", [b"[[node]]\nname = \"A\"\nparent = \"A\"\n", b"\xff\xfe not toml", b"x = 1\n"])
def test_a_broken_taxonomy_file_names_the_file(tmp_path, content):
    path = tmp_path / "tax.toml"
    path.write_bytes(content)
    with pytest.raises(TaxonomyError, match="tax.toml"):
        load_taxonomy(path)


def test_the_model_card_shows_each_node_its_figures_and_the_agreement_rule():
    from gtag.models.modelcard import taxonomy_card

    held = {"library": {"coverage": 0.25, "members": 41, "precision": 0.97}, "gtzan": {"wrong": 0.3, "tracks": 28}}
    block = {"nodes": {"Alternative Rock": {"min_probability": 0.76, "held_out": held, "default": True},
                       "Rock": {"min_probability": 0.7, "held_out": held, "default": True,
                                "agree": {"head_min_probability": 0.4, "min_probability": 0.3}},
                       "Pop": {"min_probability": 0.73, "held_out": held, "default": False}},
             "unmeasured": [{"node": "House"}], "decision": {"rock": {"taxonomy": {"right": 0.7, "wrong": 0.0},
                                                                       "head alone": {"right": 0.59, "wrong": 0.0}}}}
    lines = taxonomy_card(block, TAX)
    row = next(ln for ln in lines if "Rock › Alternative Rock" in ln)
    assert "0.76" in row and "25% of 41" in row and "97%" in row and row.endswith("on")
    assert next(ln for ln in lines if ln.strip().startswith("Pop")).endswith("off")
    assert any("Rock: also where the vote names it from 0.40" in ln and "0.30" in ln for ln in lines)
    assert not any(ln.strip().startswith("Pop:") for ln in lines)  # an off node's rule is not shown
    assert any("House" in ln and "unmeasured" in ln for ln in lines)
    assert lines[-1] == "whole decision on held-out tracks: rock 70% right, 0% wrong (vote alone 59%, 0%)"
