"""A small seeded fuzz run (tests/fuzz.py) in the slow tests: bit-flipped, truncated and crafted
copies of every shared format fixture keep gtag's contract for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzz
from .conftest import need


def test_corpus_is_reproducible(tmp_path: Path) -> None:
    need(fuzz.FIXTURES)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = fuzz.corpus(tmp_path / "a", 3, 12)
    b = fuzz.corpus(tmp_path / "b", 3, 12)
    assert [p.name for p in a] == [p.name for p in b]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    originals = {p.read_bytes() for p in fuzz.FIXTURES.iterdir() if p.is_file()}
    assert sum(p.read_bytes() not in originals for p in a) >= 10  # mutations, bar a rare no-op

@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_fuzzed_fixtures_keep_the_contract(seed: int, tmp_path: Path) -> None:
    need(fuzz.FIXTURES)
    findings = fuzz.run(seed, 60, keep=tmp_path / "corpus")
    assert findings == {}
