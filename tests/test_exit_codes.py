"""One table of exit codes, one set of words: the same file fails alike in `gtag tag`, `gtag predict`,
`gtag learn` and the report; a path without audio says so; a skip names the rule that applied."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gtag.cli import main
from gtag.config import GenrePolicy
from gtag.exitcodes import MEANINGS, Exit
from gtag.run.messages import file_failure, folders_without_audio, refusal_reason

from .test_tag_cli import gtag_tag, make_lib  # noqa: F401  (gtag_tag: fixture)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "exit-codes.md"


def test_the_docs_table_is_the_code_table() -> None:
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \| (.+) \|$", DOCS.read_text(encoding="utf-8"), re.M)
    assert [(int(c), n, m) for c, n, m in rows] == [(e.value, e.name, MEANINGS[e]) for e in Exit]
    # the numbers scripts already test keep their meaning
    assert (Exit.OK, Exit.FAILED, Exit.USAGE, Exit.NO_MODELS, Exit.INTERRUPTED, Exit.TERMINATED) == (0, 1, 2, 3, 130, 143)


# --- the same failure, the same words --------------------------------------------------------------

BROKEN = {
    "empty.mp3": (b"", "empty file"),
    "text.mp3": (b"this is a text file, not audio\n" * 50, "unreadable or corrupt audio file ("),
    "text.flac": (b"fLaC but not really" * 20, "unreadable or corrupt audio file ("),
}


def _error_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:") and name in line]


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_file_reads_the_same_in_every_command(name: str, tmp_path: Path, tiny_models: Path,
                                                       gtag_tag, monkeypatch) -> None:  # noqa: F811
    content, words = BROKEN[name]
    lib = make_lib(tmp_path / "lib", wavs={"ok.wav": 3})
    path = lib / name
    path.write_bytes(content)

    tag = gtag_tag(lib)
    assert tag.code == Exit.FAILED
    [tag_line] = _error_lines(tag.stderr, name)
    assert tag_line.startswith(f"error: {path}: {words}")
    assert f"error: {tag.rec(name)['error']}" == tag_line  # the report says what the terminal said

    predict = CliRunner().invoke(main, ["predict", "--models", str(tiny_models), str(path)])
    assert predict.exit_code == Exit.FAILED
    [predict_line] = _error_lines(predict.stderr, name)
    assert predict_line.split(" (")[0] == tag_line.split(" (")[0]  # same words; the reader's detail may differ

    monkeypatch.setenv("GTAG_CACHE", str(tmp_path / "cache.sqlite3"))
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "learned"))
    learn = CliRunner().invoke(main, ["learn", str(lib), "--name", "x"])
    assert learn.exit_code == Exit.FAILED  # and nothing learnable from one file
    assert _error_lines(learn.stderr, name) == [tag_line]


def test_the_file_itself_comes_before_the_readers_words(tmp_path: Path) -> None:
    empty = tmp_path / "a.mp3"
    empty.write_bytes(b"")
    assert file_failure(empty, OSError("can't sync to MPEG frame")) == f"{empty}: empty file"
    assert file_failure(tmp_path / "gone.mp3", OSError("x")) == f"{tmp_path / 'gone.mp3'}: no such file"
    (tmp_path / "link.mp3").symlink_to(tmp_path / "gone.mp3")
    assert file_failure(tmp_path / "link.mp3", OSError("x")).endswith(": broken symbolic link")
    real = tmp_path / "b.mp3"
    real.write_bytes(b"\xff" * 100)
    assert file_failure(real, ValueError(f"{real}: too short to classify")) == f"{real}: too short to classify"
    assert file_failure(real, ValueError("too short")) == f"{real}: too short"


# --- no audio files --------------------------------------------------------------------------------


def test_a_folder_without_audio_says_so_and_exits_4(tmp_path: Path, gtag_tag, monkeypatch) -> None:  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no music here")
    run = gtag_tag(empty)
    assert run.code == Exit.NO_AUDIO == 4
    assert run.stderr.strip() == f"error: no audio files found under {empty}"
    assert "summary" not in run.stdout and run.report == []  # no empty table; the report is this run's
    # beside a folder with music: one note, and the music is tagged
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    run = gtag_tag(empty, lib)
    assert run.code == Exit.OK, run.stderr
    assert f"note: {empty}: no audio files found" in run.stderr
    assert run.statuses() == {"a.wav": "tagged"}
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "learned"))
    learn = CliRunner().invoke(main, ["learn", str(empty)])
    assert learn.exit_code == Exit.NO_AUDIO and "no audio files found" in learn.stderr


def test_folders_without_audio_are_named_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    files = [a / "sub" / "x.mp3"]
    assert folders_without_audio([a, b, a / "sub", tmp_path / "x.mp3"], files) == [b]
    assert folders_without_audio([b, b], []) == [b]  # the same folder twice: one note


# --- the rule that applied -------------------------------------------------------------------------


def test_refusal_names_the_list() -> None:
    ranked = [("disco", 0.49), ("pop", 0.22), ("rock", 0.1)]
    exclude = GenrePolicy(exclude=frozenset({"disco"}))
    assert refusal_reason(ranked, 0.3, exclude) == ("Disco 49% is on the config's exclude list; the best allowed "
                                                    "genre, Pop 22%, is below the 30% a written genre needs")
    only = GenrePolicy(only=frozenset({"rock"}))
    assert refusal_reason(ranked, 0.3, only).startswith("Disco 49% is not on the config's only list; the best "
                                                        "allowed genre, Rock 10%")
    assert refusal_reason(ranked, 0.3, GenrePolicy()) is None  # nothing refused: a low confidence


def test_a_skip_names_the_rule_that_applied(tmp_path: Path, gtag_tag) -> None:  # noqa: F811
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    probe = gtag_tag("--dry-run", "--min-confidence", "0", lib).rec("a.wav")
    top = probe["genre"]
    bar = probe["confidence"] + 0.01  # nothing reaches it, the top genre included
    config = tmp_path / "gtag.toml"
    config.write_text(f'exclude = ["{top}"]\nmin_confidence = {bar}\n')
    run = gtag_tag("--dry-run", "--config", config, lib)
    rec = run.rec("a.wav")
    assert rec["status"] == "skipped: excluded by config"
    assert rec["reason"].startswith(f"{top} {probe['confidence']:.0%} is on the config's exclude list")
    assert f"excluded by config ({rec['reason']})" in run.stdout and "low confidence" not in run.stdout
    # the same bar without the exclusion: a low confidence, and it says so
    run = gtag_tag("--dry-run", "--min-confidence", bar, lib)
    rec = run.rec("a.wav")
    assert rec["status"] == "skipped: low confidence"
    assert rec["reason"].startswith(f"{top} ") and "is below the" in rec["reason"]
    assert f"low confidence ({rec['reason']})" in run.stdout
