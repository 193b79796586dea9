"""The shipped taxonomy and the rules every taxonomy file must keep."""

from __future__ import annotations

import pytest

from gtag.taxonomy import TaxonomyError, default_taxonomy, load_taxonomy, parse_taxonomy

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
