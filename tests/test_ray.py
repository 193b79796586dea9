"""--backend ray tags a folder exactly as the local backend does (same report)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from gtag.cli import main

from .conftest import FIXTURES, need

pytest.importorskip("ray")


def test_ray_backend_matches_local_backend(tmp_path, tiny_models):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("blues_v23_untagged.mp3", "classical.flac", "jazz.m4a", "metal.ogg"):
        shutil.copyfile(need(FIXTURES / "formats" / name), lib / name)
    (lib / "broken.mp3").write_text("not audio")
    reports = {}
    for backend in ("local", "ray"):
        copy = tmp_path / backend
        shutil.copytree(lib, copy)
        report = tmp_path / f"{backend}.json"
        args = ["tag", str(copy), "--models", str(tiny_models), "--no-cache", "--force", "--jobs", "2",
                "--backend", backend, "--report", str(report)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output  # broken.mp3 fails in both
        records = json.loads(report.read_text())
        for r in records:  # compare paths relative to each copy
            r["path"] = r["path"].replace(str(copy), "LIB")
            if r.get("error"):
                r["error"] = r["error"].replace(str(copy), "LIB")
        reports[backend] = records
    assert reports["ray"] == reports["local"]
    assert sum(r["status"] in ("tagged", "unchanged") for r in reports["ray"]) == 4
