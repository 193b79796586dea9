"""The genre > style taxonomy: which names gtag knows, how they nest, and which spellings are one.

The data lives in ``gtag/data/taxonomy.toml`` (or a file of the same shape); this module reads and
checks it and answers the questions the rest of gtag asks: which node a written name is (any alias,
any spelling), a node's parent and ancestors, whether one name is finer than another. Pure lookups
after loading; ``TaxonomyError`` names the file and the fault in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gtag.genres.names import normalise

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULT_TAXONOMY", "GENRE", "STYLE", "Node", "Taxonomy", "TaxonomyError", "default_taxonomy",
           "load_taxonomy", "parse_taxonomy"]

DEFAULT_TAXONOMY = Path(__file__).resolve().parent.parent / "data" / "taxonomy.toml"
GENRE, STYLE = "genre", "style"  # the two levels `--depth` names
_FIELDS = {"name", "parent", "aliases", "gtzan", "msd", "mtt", "source"}


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used (unreadable, a cycle, a style without a parent...)."""


@dataclass(frozen=True)
class Node:
    """One genre (``parent`` None) or style."""

    name: str
    parent: str | None = None
    aliases: tuple[str, ...] = ()
    gtzan: str | None = None  # the GTZAN label the shipped head predicts for it
    msd: tuple[str, ...] = ()  # musicnn's MSD tags that are evidence for it
    mtt: tuple[str, ...] = ()
    source: str = ""

    @property
    def level(self) -> str:
        return GENRE if self.parent is None else STYLE


class Taxonomy:
    """Nodes by name, with every spelling of every alias pointing at its node."""

    def __init__(self, nodes: Iterable[Node], source: str = "taxonomy"):
        self.nodes: dict[str, Node] = {}
        self._key: dict[str, str] = {}
        for node in nodes:
            if node.name in self.nodes:
                raise TaxonomyError(f"{source}: node {node.name!r} is listed twice")
            self.nodes[node.name] = node
        for node in self.nodes.values():
            for spelling in (node.name, *node.aliases):
                key = normalise(spelling)
                if not key:
                    raise TaxonomyError(f"{source}: node {node.name!r} has an empty alias")
                other = self._key.setdefault(key, node.name)
                if other != node.name:
                    raise TaxonomyError(f"{source}: {spelling!r} names both {other!r} and {node.name!r}")
        for node in self.nodes.values():
            if node.parent is not None and node.parent not in self.nodes:
                raise TaxonomyError(f"{source}: style {node.name!r} has no parent {node.parent!r} in the taxonomy")
        for node in self.nodes.values():
            seen = [node.name]
            parent = node.parent
            while parent is not None:
                if parent in seen:
                    raise TaxonomyError(f"{source}: cycle {' > '.join([*seen, parent])}")
                seen.append(parent)
                parent = self.nodes[parent].parent
        self.by_gtzan = {n.gtzan: n.name for n in self.nodes.values() if n.gtzan}

    def find(self, name: str) -> Node | None:
        """The node ``name`` spells, in any alias or spelling (None: not a node of this taxonomy)."""
        hit = self._key.get(normalise(name))
        return self.nodes[hit] if hit else None

    def ancestors(self, name: str) -> list[str]:
        """The node's parents, nearest first ([] for a genre or an unknown name)."""
        node = self.find(name)
        out: list[str] = []
        while node is not None and node.parent is not None:
            out.append(node.parent)
            node = self.nodes[node.parent]
        return out

    def path(self, name: str) -> list[str]:
        """Genre first, down to the node itself ([] for an unknown name)."""
        node = self.find(name)
        return [*reversed(self.ancestors(name)), node.name] if node else []

    def genre_of(self, name: str) -> str | None:
        """The top-level genre of a node (itself for a genre; None: unknown)."""
        path = self.path(name)
        return path[0] if path else None

    def same(self, a: str, b: str) -> bool:
        """Whether two names spell one node (or, unknown to the taxonomy, one normalised word)."""
        na, nb = self.find(a), self.find(b)
        if na is not None or nb is not None:
            return na is nb
        return normalise(a) == normalise(b)

    def is_finer(self, name: str, than: str) -> bool:
        """Whether ``name`` is a strict descendant of ``than`` ("Alt. Rock" is finer than "rock")."""
        node = self.find(than)
        return node is not None and node.name in self.ancestors(name)

    def children(self, name: str) -> list[str]:
        node = self.find(name)
        return [n.name for n in self.nodes.values() if node is not None and n.parent == node.name]

    def genres(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.parent is None]


def parse_taxonomy(data: Mapping, source: str = "taxonomy") -> Taxonomy:
    """A Taxonomy from parsed TOML (``[[node]]`` tables); TaxonomyError on any fault."""
    rows = data.get("node")
    if not isinstance(rows, list) or not rows:
        raise TaxonomyError(f"{source}: no [[node]] tables")
    nodes = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise TaxonomyError(f"{source}: node {i} is not a table")
        unknown = sorted(set(row) - _FIELDS)
        if unknown:
            raise TaxonomyError(f"{source}: node {i} has unknown field {unknown[0]!r}")
        name = row.get("name")
        if not isinstance(name, str) or not name.strip():
            raise TaxonomyError(f"{source}: node {i} has no name")

        def strings(key: str) -> tuple[str, ...]:
            value = row.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise TaxonomyError(f"{source}: node {name!r}: {key} must be a list of names")
            return tuple(v.strip() for v in value)

        parent = row.get("parent")
        if parent is not None and (not isinstance(parent, str) or not parent.strip()):
            raise TaxonomyError(f"{source}: node {name!r}: parent must be a node's name")
        gtzan = row.get("gtzan")
        if gtzan is not None and not isinstance(gtzan, str):
            raise TaxonomyError(f"{source}: node {name!r}: gtzan must be a label")
        nodes.append(Node(name.strip(), parent.strip() if parent else None, strings("aliases"), gtzan,
                          strings("msd"), strings("mtt"), str(row.get("source", ""))))
    return Taxonomy(nodes, source)


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read and check a taxonomy file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise TaxonomyError(f"taxonomy {path}: cannot read ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaxonomyError(f"taxonomy {path}: not valid TOML ({exc})") from exc
    return parse_taxonomy(data, f"taxonomy {path}")


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """The shipped taxonomy (read once per process)."""
    return load_taxonomy(DEFAULT_TAXONOMY)
