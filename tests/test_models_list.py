"""`gtag models`: the shipped models and every model learned with `gtag learn`, for people and scripts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gtag.cli import main
from gtag.exitcodes import Exit
from gtag.models.runtime import default_models_dir, read_manifest

from .conftest import GENRES


def _learned(tiny_models: Path, root: Path, name: str, weight: float = 1.0) -> Path:
    """A learned model as `gtag learn` leaves it: a folder NAME with one manifest entry, its metrics
    and what it was learned from (the tiny model stands in for the ONNX file)."""
    folder = root / name
    shutil.copytree(tiny_models, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = dict(manifest["models"][1], name=name, weight=weight,
                 metrics={"cv_track": {"tracks": 40, "accuracy": 0.825, "balanced_accuracy": 0.8}},
                 abstain={"min_probability": 0.55, "coverage": 0.7, "precision": 0.9},
                 training={"data": "gtag learn", "paths": ["/music/mine"], "tracks": 40, "artists": 12},
                 exported="2026-12-07T06:00:00Z")
    manifest["models"] = [entry]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _models(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["models", *args], env=env)


def test_lists_shipped_and_learned_models_alike_in_json(tmp_path: Path, tiny_models: Path, monkeypatch) -> None:
    root = tmp_path / "learned"
    monkeypatch.setenv("GTAG_USER_MODELS", str(root))
    mine = _learned(tiny_models, root, "mine")
    (root / "not a name!").mkdir()  # --models could not name it: not listed
    r = _models("--json")
    assert r.exit_code == Exit.OK, r.output
    cat = json.loads(r.stdout)
    assert cat["learned_folder"] == str(root)
    shipped, learned = cat["collections"]
    assert shipped["source"] == "shipped" and shipped["folder"] == str(default_models_dir())
    specs = read_manifest(default_models_dir())
    assert [m["name"] for m in shipped["models"]] == [s.name for s in specs]
    for m, s in zip(shipped["models"], specs):
        assert m["weight"] == s.weight and m["votes"] == (s.weight > 0) and m["labels"] == list(s.labels)
        assert m["metrics"]["valid_accuracy"] == s.metrics["valid_track"]["accuracy"]
        assert m["size_bytes"] == (default_models_dir() / s.file).stat().st_size
    assert learned["source"] == "learned" and learned["name"] == "mine" and learned["folder"] == str(mine)
    assert learned["use"] == "gtag tag --models mine PATH"
    [m] = learned["models"]
    assert m["labels"] == list(reversed(GENRES)) and m["votes"] is True
    assert m["metrics"] == {"cv_accuracy": 0.825, "cv_balanced_accuracy": 0.8, "cv_tracks": 40,
                            "abstain_min_probability": 0.55, "abstain_coverage": 0.7, "abstain_precision": 0.9}
    assert learned["learned_from"] == {"paths": ["/music/mine"], "tracks": 40, "artists": 12}

    text = _models(env={"COLUMNS": "80"})
    assert text.exit_code == Exit.OK
    assert f"learned model mine in {mine}" in text.stdout.replace("\n", " ")
    assert "use: gtag tag --models mine PATH" in text.stdout
    assert "learned 2026-12-07T06:00:00Z from /music/mine (40 tracks, 12 artists)" in text.stdout
    row = next(line for line in text.stdout.splitlines() if line.split()[:1] == ["mine"])
    assert "0.825" in row and "1.00" in row


def test_one_learned_model_by_name_and_a_broken_one(tmp_path: Path, tiny_models: Path, monkeypatch) -> None:
    root = tmp_path / "learned"
    monkeypatch.setenv("GTAG_USER_MODELS", str(root))
    _learned(tiny_models, root, "mine")
    broken = _learned(tiny_models, root, "broken")
    (broken / "manifest.json").write_text("{not json")
    r = _models("--models", "mine", "--json")
    assert r.exit_code == Exit.OK, r.output
    [col] = json.loads(r.stdout)["collections"]
    assert (col["source"], col["name"]) == ("learned", "mine")
    # a learned model gtag cannot read is named with its error; the others are still listed
    r = _models("--json")
    assert r.exit_code == Exit.NO_MODELS
    by_name = {c["name"]: c for c in json.loads(r.stdout)["collections"]}
    assert "invalid JSON" in by_name["broken"]["error"] and by_name["mine"]["models"]
    r = _models()
    assert r.exit_code == Exit.NO_MODELS and "invalid JSON" in r.stderr and "learned model mine" in r.stdout
    assert _models("--models", "nosuch").exit_code == Exit.NO_MODELS


def test_without_learned_models_it_says_how_to_make_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "none"))
    r = _models()
    assert r.exit_code == Exit.OK
    assert "no learned models in" in r.stdout and "gtag learn PATH --name NAME" in r.stdout
    assert [c["source"] for c in json.loads(_models("--json").stdout)["collections"]] == ["shipped"]


@pytest.mark.parametrize("training, lines", [
    ({"taxonomy": {"Alt. Rock": ["Rock", "Alternative Rock"], "Classical": ["Classical"], "Vaporwave": []},
      "none_of_these": {"tracks": 352, "genres": ["blues", "jazz"], "library_tracks": 7,
                        "library_genres": {"Electro Rock": 5, "Hard Rock": 2}}},
     ["in gtag's taxonomy: Alt. Rock = Rock › Alternative Rock; Classical; Vaporwave (not a node)",
      "none of these: 352 reference tracks (blues, jazz) and 7 of the library's own tracks (Electro Rock, Hard Rock)"]),
    ({"none_of_these": {"why": "no reference set in /m (gtag-train reference writes one)"}},
     ["none of these: not taught (no reference set in /m (gtag-train reference writes one))"]),
    # a manifest a person edited: odd shapes still give a line each, not a traceback
    ({"taxonomy": {"Rock": "Rock"}, "none_of_these": {"tracks": 3, "genres": "jazz"}},
     ["in gtag's taxonomy: Rock (not a node)", "none of these: 3 reference tracks"]),
])
def test_a_learned_model_shows_its_place_in_the_taxonomy_and_its_none_of_these(
        tmp_path: Path, tiny_models: Path, monkeypatch, training: dict, lines: list[str]) -> None:
    root = tmp_path / "learned"
    monkeypatch.setenv("GTAG_USER_MODELS", str(root))
    folder = _learned(tiny_models, root, "mine")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"][0]["training"].update(training)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    r = _models("--models", "mine", env={"COLUMNS": "200"})
    assert r.exit_code == Exit.OK, r.output
    shown = [" ".join(line.split()) for line in r.stdout.splitlines()]
    assert [line for line in shown if line.startswith(("in gtag's taxonomy", "none of these"))] == lines
