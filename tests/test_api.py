"""gtag's Python API (gtag.api, docs/api.md) with the shipped models on real short clips."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from .conftest import FIXTURES, SHARED, need

BLUES = FIXTURES / "formats" / "blues_v23_untagged.mp3"
CLASSICAL = FIXTURES / "formats" / "classical.flac"
ELECTRONIC = SHARED / "library" / "music" / "electronic" / "3.mp3"  # outside GTZAN: its MSD tags name it
UNSURE = SHARED / "library" / "music" / "electronic" / "41.mp3"  # neither the vote nor the tags are sure


@pytest.fixture(scope="module")
def predictor():
    from gtag.api import load_predictor

    return load_predictor(threads=1)


def test_import_gtag_is_light_and_the_api_loads_on_first_use():
    code = ("import sys, gtag; light = 'numpy' not in sys.modules and 'onnxruntime' not in sys.modules; "
            "gtag.TagOptions; print(light, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_decide_follows_gtag_tag_rules(predictor):
    from gtag.api import GenrePolicy, TagOptions

    pred = predictor.predict(need(BLUES))
    assert pred.genre == "blues"
    opts = TagOptions()
    assert (predictor.decide(pred, [], opts).status, predictor.decide(pred, [], opts).genres) == ("tagged", ["Blues"])
    assert predictor.decide(pred, ["Blues"], opts).status == "unchanged"
    merged = predictor.decide(pred, ["hip hop"], replace(opts, merge=True))
    assert merged.genres == ["hip hop", "Blues"] and merged.chosen == ["Blues"]
    assert predictor.decide(pred, [], replace(opts, min_confidence=0.99)).status == "skipped: low confidence"
    renamed = replace(opts, policy=GenrePolicy(names={"blues": "Delta Blues"}))
    assert predictor.decide(pred, [], renamed).genres == ["Delta Blues"]
    assert predictor.heard(pred, replace(opts, top_k=2))[0] == "Blues"


def test_a_genre_outside_gtzan_comes_from_the_msd_tags(predictor):
    decision = predictor.decide(predictor.predict(need(ELECTRONIC)))
    assert decision.status == "tagged" and decision.genres == ["Electronic"] and decision.source == "tags"


def test_an_uncertain_track_gets_no_genre_but_is_heard(predictor):
    pred = predictor.predict(need(UNSURE))
    decision = predictor.decide(pred)
    assert decision.status == "skipped: uncertain" and decision.genres == [] and decision.reason
    assert predictor.heard(pred)  # what it heard is still there to show


def test_predict_many_keeps_order_and_fails_a_bad_file_alone(predictor, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio" * 100)
    good = tmp_path / "classical.flac"
    shutil.copyfile(need(CLASSICAL), good)
    predictor.jobs = 2  # worker processes
    try:
        out = list(predictor.predict_many([need(BLUES), bad, good]))
    finally:
        predictor.jobs = 1
    assert [p for p, _ in out] == [str(BLUES), str(bad), str(good)]
    assert out[0][1].genre == "blues" and isinstance(out[1][1], Exception) and out[2][1].genre == "classical"


def test_a_prediction_survives_a_round_trip(predictor):
    import json

    from gtag.api import prediction_from_dict, prediction_to_dict

    pred = predictor.predict(need(CLASSICAL))
    back = prediction_from_dict(json.loads(json.dumps(prediction_to_dict(pred, windows=False))))
    assert predictor.decide(back) == predictor.decide(pred)


def test_models_that_cannot_load_are_one_model_error(tmp_path):
    from gtag.api import ModelError, load_predictor

    with pytest.raises(ModelError):
        load_predictor(models_dir=tmp_path / "none")


def test_the_readme_example_does_what_it_says(tmp_path, monkeypatch):
    """README's "In Python" block, run on a real blues clip: each ``expr  # value`` line holds."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("### In Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copy(need(BLUES), tmp_path / "blues.mp3")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    checked = 0
    for line in block.splitlines():
        code, _, comment = line.partition("#")
        if code.strip() and re.fullmatch(r"\s*[\w.,() ]+", code) and "=" not in code and "import" not in code:
            assert repr(eval(code.strip(), scope)) == comment.strip(), line  # noqa: S307 (our README)
            checked += 1
        elif code.strip():
            exec(code, scope)  # noqa: S102
    assert checked == 2
