"""The taxonomy's agreement rule in a real run: the head's genre, held back for its probability alone,
is written where that genre's own MSD-tag scorer agrees enough; never past the head's other limits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gtag.models.runtime import load_models
from gtag.predict.pipeline import Predictor

from .conftest import FIXTURES, need, shipped_models_copy


def _models(tmp_path: Path, agree_min: float | None, max_unknown: float | None = None) -> Path:
    """The shipped models with musicnn unsure of everything (min_probability 0.9999, no second
    opinion) and, when ``agree_min`` is given, a Rock agreement rule from any head probability."""
    def edit(e: dict) -> None:
        if e["name"] == "musicnn":
            e["abstain"] = {"min_probability": 0.9999, "max_unknown": max_unknown, "max_distance": None}
            rock = e["taxonomy"]["nodes"]["Rock"]
            rock.pop("agree", None)
            if agree_min is not None:
                rock["agree"] = {"head_min_probability": 0.0, "min_probability": agree_min}

    return shipped_models_copy(tmp_path, edit)


@pytest.fixture
def rock(tmp_path) -> Path:
    """A real rock excerpt the shipped head calls rock, below its usual threshold."""
    dst = tmp_path / "lib" / "rock.wv"
    dst.parent.mkdir()
    shutil.copyfile(need(FIXTURES / "formats" / "rock.wv"), dst)
    return dst


@pytest.mark.parametrize("agree_min, max_unknown, written", [
    (0.0, None, True),  # the Rock scorer agrees: written, and said so
    (None, None, False),  # no agreement rule: the head's threshold stands
    (0.9999, None, False),  # the scorer not sure enough to agree
    (0.0, 0.0, False),  # held back as none of its genres: agreement cannot overrule that
])
def test_agreement_settles_only_a_genre_held_back_for_its_probability(tmp_path, rock, agree_min, max_unknown,
                                                                      written):
    predictor = Predictor(load_models(_models(tmp_path, agree_min, max_unknown), ["musicnn"], device="cpu",
                                      threads=1))
    pred = predictor.predict_file(rock)
    assert pred.genre == "rock" and predictor.abstain_reason(pred) is not None
    decision = predictor.decide(pred, "genre")
    assert (decision.path == ("Rock",)) is written
    assert (decision.source == "agree") is written
    if not written:
        assert decision.reason  # why nothing is written stays in the line and the report


def test_tag_says_the_tags_agreed(tmp_path, rock):
    from gtag.cli import main

    models = _models(tmp_path, 0.0)
    report = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["tag", "--dry-run", "--no-cache", "--jobs", "1", "--depth", "genre", "--models",
                                  str(models), "--report", str(report), str(rock.parent)])
    assert r.exit_code == 0, r.output
    assert "→ Rock" in r.output and "its MSD tags agree" in r.output
    [rec] = json.loads(report.read_text())
    assert rec["status"] == "would tag" and rec["written"] == ["Rock"] and rec["source"] == "agree"
