"""gtag tag --from-report: a reviewed dry-run report written as edited, rows changed since refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mutagen
from click.testing import CliRunner

from gtag.cli import main
from gtag.tags.reading import read_genres

from .test_tag_cli import gtag_tag, make_lib, sha  # noqa: F401  (gtag_tag is a fixture)
from .test_undo import _set_originals


def test_a_reviewed_report_is_written_as_edited(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    names = ["classical.flac", "jazz.m4a", "metal.opus", "rock.wv"]
    lib = make_lib(tmp_path / "lib", names)
    for n in names:
        _set_originals(lib / n)
    report = tmp_path / "review.csv"
    run = gtag_tag("--dry-run", "--replace", "--min-confidence", "0", "--report", report, lib)
    assert run.code == 0, run.stderr
    with report.open(newline="") as f:
        rows = list(csv.DictReader(f))
    head = list(rows[0])
    by_name = {Path(r["path"]).name: r for r in rows}
    by_name["classical.flac"]["written"] = "Shoegaze;Rock"  # the reviewer's correction
    proposed = by_name["jazz.m4a"]["written"].split(";")  # accepted as proposed
    del by_name["metal.opus"]  # rejected: that row is not applied
    untouched = sha(lib / "metal.opus")
    audio = mutagen.File(lib / "rock.wv")
    audio["Genre"] = ["Krautrock"]  # changed by hand after the report
    audio.save()
    with report.open("w", newline="") as f:
        w = csv.DictWriter(f, head)
        w.writeheader()
        w.writerows(by_name.values())

    dry = CliRunner().invoke(main, ["tag", "--from-report", str(report), "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 1 and dry.stdout.count("(would write)") == 2
    assert read_genres(lib / "classical.flac") == ["Polka", "polka", "Ska"]

    result = CliRunner().invoke(main, ["tag", "--from-report", str(report)], catch_exceptions=False)
    assert result.exit_code == 1  # one row refused
    assert read_genres(lib / "classical.flac") == ["Shoegaze", "Rock"]
    assert read_genres(lib / "jazz.m4a") == proposed
    assert sha(lib / "metal.opus") == untouched
    [refused] = result.stderr.strip().splitlines()
    assert "rock.wv" in refused and "changed since the report" in refused and "Krautrock" in refused
    assert read_genres(lib / "rock.wv") == ["Krautrock"]
    # Written through the undo journal like any other write.
    undo = CliRunner().invoke(main, ["undo", str(lib)], catch_exceptions=False)
    assert undo.exit_code == 0, undo.stderr
    assert read_genres(lib / "classical.flac") == ["Polka", "polka", "Ska"]


def test_a_report_that_is_not_one_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"not": "a list"}))
    result = CliRunner().invoke(main, ["tag", "--from-report", str(bad)])
    assert result.exit_code == 2 and "not a gtag report" in result.stderr
    result = CliRunner().invoke(main, ["tag", "--from-report", str(bad), str(tmp_path)])
    assert result.exit_code == 2 and "give no PATHS" in result.stderr
