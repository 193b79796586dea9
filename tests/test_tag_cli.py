"""`gtag tag` end to end, through click's CliRunner, with the tiny ONNX models of conftest.

Every library is a temporary folder of copies of the shared real-music fixtures (copied with
``shutil.copyfile``: the fixtures are read-only and ``copy``/``copy2`` would keep that mode) plus
generated WAVs.  test_tags.py already covers each container's tag round trip and write_genres'
own safety; here the subject is the command: walking, policy, reports, exit codes, cache, resume.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from gtag import __version__
from gtag.audio.decode import SAMPLE_RATE
from gtag.cli import main
from gtag.config import GenrePolicy
from gtag.predict.prediction import Prediction
from gtag.run.decision import choose_genres
from gtag.run.library import walk
from gtag.run.records import DISPLAY_NAMES
from gtag.tags import tempfiles, writing

display_name = GenrePolicy().name  # what gtag writes for a label, without a config file
from gtag.tags.reading import read_extra, read_genres
from gtag.tags.writing import write_genres

from .conftest import FIXTURES, GENRES, need, write_wav
from .test_tags import audio_fingerprint

FORMATS = FIXTURES / "formats"
GENERATED = "generated.wav"
# Every file of the shared formats folder, with the format and tag container gtag reports for it.
EXPECTED_FORMAT = {
    "blues_v23_untagged.mp3": "mp3/id3v2.3",
    "blues_v24_tagged.mp3": "mp3/id3v2.4",
    "classical.aiff": "aiff/id3v2.4",
    "classical.flac": "flac/vorbis",
    "classical.wav": "wav/id3v2.4",
    "hiphop.wma": "wma/asf",
    "jazz.m4a": "m4a/mp4",  # AAC
    "jazz_alac.m4a": "m4a/mp4",  # ALAC
    "metal.ogg": "ogg/vorbis",
    "metal.opus": "opus/vorbis",
    "rock.wv": "wv/ape",
    GENERATED: "wav/id3v2.4",  # written by soundfile: no tag chunk at all
}
UNTAGGED = ["blues_v23_untagged.mp3", "classical.aiff", "classical.wav", "hiphop.wma", "jazz.m4a", "metal.ogg"]
RECORD_KEYS = {"path", "status", "format", "genre", "confidence", "existing", "written", "probabilities",
               "models", "cached"}


# --- helpers -------------------------------------------------------------------------------------


def noise(seconds: float, seed: int = 0, amplitude: float = 0.05) -> np.ndarray:
    """Low-amplitude noise with a tone in it: cheap to generate and to analyse."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    y = amplitude * rng.standard_normal(n, dtype=np.float32) + 0.1 * np.sin(2 * np.pi * (220 + 40 * seed) * t)
    return y.astype(np.float32)


def make_lib(folder: Path, fixtures=(), wavs: dict[str, float] | None = None) -> Path:
    """A library folder of fixture copies and generated WAVs ({name: seconds})."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in fixtures:
        shutil.copyfile(need(FORMATS / name), folder / name)
    for i, (name, seconds) in enumerate((wavs or {}).items()):
        write_wav(folder / name, noise(seconds, seed=i + 1))
    return folder


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, mode and mtime of every file under root, hidden ones included."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode,
                                             st.st_mtime_ns)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(root: Path) -> list[str]:
    return [f for _, _, files in os.walk(root) for f in files if f.startswith(tempfiles.TEMP_PREFIX)]


@dataclass
class Run:
    result: Result
    report: list[dict]

    @property
    def code(self) -> int:
        return self.result.exit_code

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def stderr(self) -> str:
        return self.result.stderr

    def rec(self, name: str) -> dict:
        [r] = [r for r in self.report if Path(r["path"]).name == name]
        return r

    def statuses(self) -> dict[str, str]:
        return {Path(r["path"]).name: r["status"] for r in self.report}


@pytest.fixture
def gtag_tag(tiny_models: Path, tmp_path: Path):
    """Run `gtag tag` with the tiny models, a cache in tmp_path, one job and a JSON report."""
    cache = tmp_path / "cache.sqlite3"
    n = Counter()

    def run(*args, use_cache_option: bool = True, env: dict | None = None) -> Run:
        n["runs"] += 1
        report = tmp_path / f"report{n['runs']}.json"
        argv = ["tag", "--models", str(tiny_models), "--jobs", "1", "--report", str(report)]
        if use_cache_option:
            argv += ["--cache", str(cache)]
        result = CliRunner().invoke(main, argv + [str(a) for a in args], env=env, catch_exceptions=False)
        data = json.loads(report.read_text()) if report.exists() else []
        return Run(result, data)

    run.cache = cache
    return run


# --- end to end, one format at a time ------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED_FORMAT))
def test_tags_every_supported_format(name: str, tmp_path: Path, gtag_tag) -> None:
    mediafile = pytest.importorskip("mediafile")
    if name == GENERATED:
        lib = make_lib(tmp_path / "lib", wavs={name: 6})
    else:
        lib = make_lib(tmp_path / "lib", [name])
    path = lib / name
    if read_genres(path):
        # A genre the models never give, so that --force must really replace it (the fixture's own
        # genre could be what the tiny models predict, and an unchanged file is not written).
        write_genres(path, ["Polka"])
    audio_before = audio_fingerprint(path)

    run = gtag_tag("--force", lib)
    assert run.code == 0, run.stderr
    [rec] = run.report
    assert rec["path"] == str(path)
    assert rec["status"] == "tagged"
    assert rec["format"] == EXPECTED_FORMAT[name]
    assert rec["genre"] in DISPLAY_NAMES.values()
    assert rec["written"] == [rec["genre"]]
    assert read_genres(path) == rec["written"]
    assert mediafile.MediaFile(path).genres == rec["written"]
    if audio_before is not None:
        assert audio_fingerprint(path) == audio_before
    assert f"{name}: " in run.stdout and "wrote" in run.stdout
    assert temp_files(lib) == []


# --- dry run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True], ids=["default", "force"])
def test_dry_run_changes_nothing_and_reports_everything(force: bool, tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", sorted(k for k in EXPECTED_FORMAT if k != GENERATED), {GENERATED: 5})
    files = list(walk([lib]))
    before = snapshot(lib)
    flags = ["--force"] if force else []

    dry = gtag_tag("--dry-run", *flags, lib)
    assert dry.code == 0, dry.stderr
    assert snapshot(lib) == before  # no byte, mode or mtime changed, no file added
    assert "dry run: nothing was written" in dry.stdout
    assert [r["path"] for r in dry.report] == [str(p) for p in files]
    for rec in dry.report:
        if rec["existing"] and not force:
            assert rec["status"] == "skipped: has genre" and rec["written"] == []
        else:
            assert rec["written"] == [rec["genre"]]
            assert rec["status"] == ("unchanged" if rec["existing"] == rec["written"] else "would tag")
    assert any(r["status"] == "would tag" for r in dry.report)

    # The dry run said what a real run does.
    real = gtag_tag(*flags, lib)
    assert real.code == 0, real.stderr
    for d, r in zip(dry.report, real.report):
        assert r["status"] == {"would tag": "tagged"}.get(d["status"], d["status"])
        assert read_genres(Path(d["path"])) == (d["written"] or d["existing"])


# --- policy --------------------------------------------------------------------------------------


def test_file_with_a_genre_is_skipped(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", ["blues_v24_tagged.mp3", "blues_v23_untagged.mp3"], {"a.wav": 4})
    tagged_before = sha(lib / "blues_v24_tagged.mp3")
    run = gtag_tag(lib)
    assert run.code == 0, run.stderr
    assert run.statuses() == {"a.wav": "tagged", "blues_v23_untagged.mp3": "tagged",
                              "blues_v24_tagged.mp3": "skipped: has genre"}
    skipped = run.rec("blues_v24_tagged.mp3")
    assert skipped["existing"] == ["Blues"] and skipped["written"] == []
    assert skipped["probabilities"] == {} and skipped["genre"] is None  # not even analysed
    assert sha(lib / "blues_v24_tagged.mp3") == tagged_before


@pytest.mark.parametrize("flag", ["--force", "--overwrite"])
def test_force_retags_files_with_a_genre(flag: str, tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", ["blues_v24_tagged.mp3", "classical.flac"])
    run = gtag_tag(flag, lib)
    assert run.code == 0, run.stderr
    for rec in run.report:
        assert rec["existing"] and rec["written"] == [rec["genre"]]
        assert rec["status"] == ("unchanged" if rec["existing"] == rec["written"] else "tagged")
        assert read_genres(Path(rec["path"])) == rec["written"]


def test_min_confidence_writes_nothing_below_it(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", ["blues_v23_untagged.mp3", "classical.flac"], {"a.wav": 4})
    before = snapshot(lib)
    run = gtag_tag("--force", "--min-confidence", "0.99", lib)
    assert run.code == 0, run.stderr  # a skip is not a failure
    assert snapshot(lib) == before
    assert "low confidence" in run.stdout
    for rec in run.report:
        assert rec["status"] == "skipped: low confidence"
        assert rec["written"] == [] and rec["genre"] in DISPLAY_NAMES.values() and rec["confidence"] < 0.99

    # The threshold itself is enough (>=): just below the file's confidence writes, just above does not.
    conf = run.rec("a.wav")["confidence"]  # rounded to 4 digits in the report
    assert gtag_tag("--min-confidence", conf + 0.0002, lib / "a.wav").report[0]["status"] == "skipped: low confidence"
    assert gtag_tag("--min-confidence", conf - 0.0002, lib / "a.wav").report[0]["status"] == "tagged"


def test_top_k_writes_several_genres(tmp_path: Path, gtag_tag) -> None:
    mediafile = pytest.importorskip("mediafile")
    lib = make_lib(tmp_path / "lib", ["blues_v23_untagged.mp3", "metal.ogg", "jazz.m4a"], {"a.wav": 4})
    run = gtag_tag("--top-k", "2", lib)
    assert run.code == 0, run.stderr
    for rec in run.report:
        assert "genres" in rec and "genre" not in rec
        path = Path(rec["path"])
        ranked = sorted(rec["probabilities"], key=lambda lab: -rec["probabilities"][lab])
        assert rec["status"] == "tagged"
        assert rec["genres"] == [display_name(lab) for lab in ranked[:2]]
        # ID3v2.3 keeps the top genre only (no reader but mutagen splits a '/'-joined value).
        assert rec["written"] == (rec["genres"][:1] if path.suffix == ".mp3" else rec["genres"])
        assert read_genres(path) == rec["written"]
        assert mediafile.MediaFile(path).genres == rec["written"]

    # With a threshold between the first and second genre's probability only the first is kept.
    rec = run.rec("a.wav")
    p1, p2 = sorted(rec["probabilities"].values(), reverse=True)[:2]
    again = gtag_tag("--force", "--top-k", "2", "--min-confidence", (p1 + p2) / 2, lib / "a.wav")
    assert again.report[0]["written"] == again.report[0]["genres"] == rec["genres"][:1]
    assert read_genres(lib / "a.wav") == rec["genres"][:1]


@pytest.mark.parametrize(
    ("probs", "min_confidence", "top_k", "expected"),
    [
        ([0.1, 0.5, 0.3, 0.1], 0.0, 1, ["jazz"]),
        ([0.1, 0.5, 0.3, 0.1], 0.0, 2, ["jazz", "rock"]),
        ([0.1, 0.5, 0.3, 0.1], 0.3, 3, ["jazz", "rock"]),  # exactly at the threshold is kept
        ([0.1, 0.5, 0.3, 0.1], 0.31, 3, ["jazz"]),
        ([0.1, 0.5, 0.3, 0.1], 0.6, 2, []),  # not even the best: write nothing
        ([0.1, 0.5, 0.3, 0.1], 0.0, 10, ["jazz", "rock", "blues", "pop"]),  # k > labels; ties in label order
        ([0.25, 0.25, 0.25, 0.25], 0.25, 2, ["blues", "jazz"]),
    ],
)
def test_choose_genres(probs, min_confidence, top_k, expected) -> None:
    pred = Prediction(path="x.flac", labels=("blues", "jazz", "rock", "pop"), probabilities=np.array(probs),
                      models={}, window_starts=np.zeros(0), window_genres=[], duration=30.0, truncated=False)
    assert choose_genres(pred, min_confidence, top_k) == expected


# --- reports -------------------------------------------------------------------------------------


@pytest.fixture
def mixed_lib(tmp_path: Path) -> Path:
    """An untagged mp3, a flac with a genre, a text file named .mp3 and a generated WAV."""
    lib = make_lib(tmp_path / "lib", ["blues_v23_untagged.mp3", "classical.flac"], {"z.wav": 4})
    (lib / "notes.mp3").write_text("not audio\n" * 40)
    return lib


def test_json_report(mixed_lib: Path, tmp_path: Path, gtag_tag) -> None:
    out = tmp_path / "out.json"
    run = gtag_tag("--report", out, mixed_lib)  # the last --report wins
    assert run.code == 1
    report = json.loads(out.read_text())
    assert isinstance(report, list)
    assert [r["path"] for r in report] == [str(p) for p in walk([mixed_lib])]
    by_name = {Path(r["path"]).name: r for r in report}
    assert {n: r["status"] for n, r in by_name.items()} == {
        "blues_v23_untagged.mp3": "tagged", "classical.flac": "skipped: has genre", "notes.mp3": "failed",
        "z.wav": "tagged"}
    for name, rec in by_name.items():
        assert set(rec) == RECORD_KEYS | ({"error"} if rec["status"] == "failed" else set())
    for name in ("blues_v23_untagged.mp3", "z.wav"):
        rec = by_name[name]
        probs = rec["probabilities"]
        assert set(probs) == set(GENRES) and sum(probs.values()) == pytest.approx(1, abs=1e-3)
        assert set(rec["models"]) == {"feat", "mel"}
        assert all(set(m) == set(GENRES) for m in rec["models"].values())
        best = max(probs, key=probs.get)
        assert rec["genre"] == display_name(best) and rec["confidence"] == pytest.approx(probs[best], abs=1e-4)
        assert rec["written"] == [rec["genre"]] and rec["existing"] == [] and rec["cached"] is False
    assert by_name["classical.flac"]["existing"] == ["Classical"]
    failed = by_name["notes.mp3"]
    assert str(mixed_lib / "notes.mp3") in failed["error"] and failed["written"] == []
    assert f"report: {out}" in run.stdout


def test_csv_report(mixed_lib: Path, tmp_path: Path, gtag_tag) -> None:
    out = tmp_path / "out.csv"
    run = gtag_tag("--report", out, mixed_lib)
    assert run.code == 1
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    labels = sorted(GENRES)
    assert header == ["path", "status", "format", "genre", "genres", "confidence", "existing", "written", "cached",
                      "error", "reason"] + [f"p_{lab}" for lab in labels] + [f"{m}_{lab}" for m in ("feat", "mel")
                                                                       for lab in labels]
    assert [r[0] for r in body] == [str(p) for p in walk([mixed_lib])]
    rows_by_name = {Path(r[0]).name: dict(zip(header, r)) for r in body}
    wav = rows_by_name["z.wav"]
    assert wav["status"] == "tagged" and wav["genre"] in DISPLAY_NAMES.values()
    assert wav["written"] == wav["genres"] == wav["genre"] and wav["cached"] == "0" and wav["error"] == ""
    assert sum(float(wav[f"p_{lab}"]) for lab in labels) == pytest.approx(1, abs=1e-3)
    assert float(wav["confidence"]) == max(float(wav[f"p_{lab}"]) for lab in labels)
    assert rows_by_name["classical.flac"]["existing"] == "Classical"
    assert rows_by_name["classical.flac"]["p_jazz"] == ""
    notes = rows_by_name["notes.mp3"]
    assert notes["status"] == "failed" and "notes.mp3" in notes["error"] and notes["confidence"] == ""


def test_report_needs_a_known_extension(tmp_path: Path, tiny_models: Path) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--report", str(tmp_path / "r.txt"), str(lib)])
    assert r.exit_code == 2 and "must end in .json or .csv" in r.stderr


# --- bad inputs ----------------------------------------------------------------------------------


BAD = {
    "corrupt.flac": "corrupt",
    "notes.mp3": "",
    "empty.mp3": "",
    "short.wav": "too short",
    "readonly.ogg": "read-only",
}


@pytest.mark.parametrize("jobs", [1, 2])
def test_bad_files_fail_alone(jobs: int, tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", ["jazz.m4a", "metal.ogg"], {"good.wav": 4})
    rng = np.random.default_rng(7)
    (lib / "corrupt.flac").write_bytes(rng.bytes(8192))
    (lib / "notes.mp3").write_text("these are not the droids you are looking for\n" * 20)
    (lib / "empty.mp3").write_bytes(b"")
    write_wav(lib / "short.wav", noise(0.5))
    (lib / "metal.ogg").rename(lib / "readonly.ogg")
    (lib / "readonly.ogg").chmod(0o444)  # refused by mode bits even when the tests run as root
    before = snapshot(lib)

    run = gtag_tag("--jobs", jobs, lib)
    assert run.code == 1
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == len(BAD), run.stderr
    for name, reason in BAD.items():
        [line] = [line for line in errors if name in line]
        assert line.startswith("error: ") and reason in line
        rec = run.rec(name)
        assert rec["status"] == "failed" and name in rec["error"] and reason in rec["error"]
        assert rec["written"] == []
        assert snapshot(lib)[name] == before[name]  # bytes, mode and mtime
    for name in ("jazz.m4a", "good.wav"):
        assert name not in run.stderr
        assert run.rec(name)["status"] == "tagged"
        assert read_genres(lib / name) == run.rec(name)["written"]
    assert stat.S_IMODE((lib / "readonly.ogg").stat().st_mode) == 0o444
    assert temp_files(lib) == []


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_dry_run_says_a_read_only_file_would_fail(what: str, tmp_path: Path, gtag_tag) -> None:
    # A dry run is the preview of the real run: "would write" on a file the real run refuses misleads.
    lib = make_lib(tmp_path / "lib", wavs={"good.wav": 4})
    make_lib(lib / "locked", wavs={"song.wav": 4})
    locked = lib / "locked" / "song.wav"
    (locked if what == "file" else locked.parent).chmod(0o555 if what == "folder" else 0o444)
    try:
        before = snapshot(lib)
        dry = gtag_tag("--dry-run", "--no-cache", lib)
        assert snapshot(lib) == before
        real = gtag_tag("--no-cache", lib)
    finally:
        locked.parent.chmod(0o755)
    for run in (dry, real):
        rec = run.rec("song.wav")
        assert rec["status"] == "failed" and "read-only" in rec["error"] and rec["written"] == []
        assert run.code == 1 and "read-only" in run.stderr
        # the genre it would have written is still shown, so a read-only library can be previewed
        [line] = [line for line in run.stderr.splitlines() if "song.wav" in line]
        assert f"gtag hears {rec['genre']}" in line and rec["genre"]
    assert dry.rec("good.wav")["status"] == "would tag" and real.rec("good.wav")["status"] == "tagged"
    assert dry.rec("song.wav")["error"] == real.rec("song.wav")["error"]


@pytest.mark.parametrize("args, says", [
    (["--model", "musicn"], "unknown model(s) ['musicn']"),
    (["--models", "no-such-learned-model"], "no model learned under that name"),
    (["--models", "{empty}"], "no manifest.json in"),
])
def test_a_wrong_model_is_one_line_before_the_library_is_walked(args, says, tmp_path: Path, monkeypatch) -> None:
    # A large library takes a while to walk: a typo in --model must not wait for it.
    from click.testing import CliRunner

    from gtag.cli import main
    from gtag.run import library

    walked = []
    monkeypatch.setattr(library, "walk", lambda paths: walked.append(paths) or iter(()))
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path / "learned"))
    (tmp_path / "empty").mkdir()
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    argv = ["tag", "--dry-run", "--no-cache", *[a.format(empty=tmp_path / "empty") for a in args], str(lib)]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 3, result.output
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ") and says in line
    assert walked == []


def test_only_good_files_exit_0(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", ["jazz.m4a"], {"a.wav": 3, "b.wav": 2})
    run = gtag_tag(lib)
    assert run.code == 0 and run.stderr == ""
    assert set(run.statuses().values()) == {"tagged"}


def test_names_with_brackets_are_printed_as_they_are(tmp_path: Path, gtag_tag) -> None:
    # Rich markup must not eat "[live]" from a file name, in the normal lines or the error lines.
    lib = make_lib(tmp_path / "lib", wavs={"song [live].wav": 3})
    (lib / "bad [bonus].mp3").write_text("not audio")
    run = gtag_tag(lib)
    assert run.code == 1
    assert "song [live].wav: — → " in run.stdout
    assert "bad [bonus].mp3" in run.stderr


def test_very_long_track(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"mix.wav": 300})  # five minutes
    run = gtag_tag(lib)
    assert run.code == 0, run.stderr
    assert run.report[0]["status"] == "tagged"
    assert read_genres(lib / "mix.wav") == run.report[0]["written"]


# --- cache and resume ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "env"])
def test_second_run_comes_from_the_cache(how: str, tmp_path: Path, gtag_tag, monkeypatch) -> None:
    lib = make_lib(tmp_path / "lib", ["blues_v23_untagged.mp3", "classical.flac", "jazz.m4a"], {"a.wav": 4})
    db = tmp_path / "env-cache.sqlite3" if how == "env" else gtag_tag.cache
    kw = {"use_cache_option": False, "env": {"GTAG_CACHE": str(db)}} if how == "env" else {}

    first = gtag_tag("--force", lib, **kw)
    assert first.code == 0, first.stderr
    assert db.is_file()
    assert not any(r["cached"] for r in first.report)

    def no_analysis(*args, **kwargs):
        raise AssertionError("a cached file was analysed again")

    monkeypatch.setattr("gtag.run.tagger.analyse_file", no_analysis)
    second = gtag_tag("--force", lib, **kw)
    assert second.code == 0, second.stderr
    assert all(r["cached"] for r in second.report)
    assert set(second.statuses().values()) == {"unchanged"}  # the tags already say it
    for a, b in zip(first.report, second.report):
        assert (a["path"], a["genre"], a["probabilities"], a["models"]) == (b["path"], b["genre"],
                                                                               b["probabilities"], b["models"])

    monkeypatch.undo()
    third = gtag_tag("--force", "--no-cache", lib, **kw)
    assert not any(r["cached"] for r in third.report)


@pytest.mark.parametrize("where", ["before_write", "during_write"])
def test_interrupted_run_resumes(where: str, tmp_path: Path, gtag_tag, monkeypatch) -> None:
    lib = make_lib(tmp_path / "lib", UNTAGGED)
    files = list(walk([lib]))
    assert [p.name for p in files] == UNTAGGED
    before = {p.name: sha(p) for p in files}
    calls: list = []

    if where == "before_write":
        real_write = writing.write_genres

        def write_genres_then_ctrl_c(path, genres, extra=None, **kwargs):
            calls.append(path)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real_write(path, genres, extra, **kwargs)

        monkeypatch.setattr(writing, "write_genres", write_genres_then_ctrl_c)
    else:  # with the tagged temporary copy made, just before it would replace the original
        real_verify = writing._verify

        def verify_then_ctrl_c(*args, **kwargs):
            calls.append(args)
            if len(calls) == 3:
                assert temp_files(lib)  # the copy exists right now
                raise KeyboardInterrupt
            return real_verify(*args, **kwargs)

        monkeypatch.setattr(writing, "_verify", verify_then_ctrl_c)

    run = gtag_tag(lib)
    assert run.code == 130
    assert "interrupted" in run.stderr
    assert [r["status"] for r in run.report] == ["tagged", "tagged"]  # the report keeps what was done
    for p, rec in zip(files[:2], run.report):
        assert read_genres(p) == rec["written"] and rec["written"]
    for p in files[2:]:
        assert sha(p) == before[p.name], p.name
    assert temp_files(lib) == []

    monkeypatch.undo()
    resumed = gtag_tag(lib)
    assert resumed.code == 0, resumed.stderr
    assert [r["status"] for r in resumed.report] == ["skipped: has genre"] * 2 + ["tagged"] * (len(files) - 2)
    # The file being written when the run stopped had its prediction saved: no second analysis.
    assert [r["cached"] for r in resumed.report[2:]] == [True] + [False] * (len(files) - 3)
    counts = Counter(resumed.statuses().values())
    assert counts == {"skipped: has genre": 2, "tagged": len(files) - 2}
    assert all(read_genres(p) for p in files)
    assert temp_files(lib) == []


# --- parallel jobs -------------------------------------------------------------------------------


def test_jobs_2_gives_the_same_report_as_jobs_1(tmp_path: Path, gtag_tag) -> None:
    # Files decoded by libsndfile and by PyAV, with and without a genre, and two failures.
    lib = make_lib(tmp_path / "lib", ["blues_v24_tagged.mp3", "classical.flac", "hiphop.wma", "jazz_alac.m4a",
                                      "metal.opus", "rock.wv"], {GENERATED: 4})
    (lib / "notes.mp3").write_text("not audio\n")
    write_wav(lib / "short.wav", noise(0.5))
    one = gtag_tag("--dry-run", "--force", "--no-cache", "--jobs", "1", lib)
    two = gtag_tag("--dry-run", "--force", "--no-cache", "--jobs", "2", lib)
    assert one.code == two.code == 1
    assert one.report == two.report
    assert one.stderr == two.stderr
    assert Counter(one.statuses().values())["failed"] == 2


# --- extra fields --------------------------------------------------------------------------------


def test_write_confidence(tmp_path: Path, gtag_tag) -> None:
    names = ["classical.flac", "blues_v23_untagged.mp3"]
    lib = make_lib(tmp_path / "lib", names)
    plain = gtag_tag("--force", lib)
    assert plain.code == 0, plain.stderr
    for name in names:
        assert read_extra(lib / name, "GTAG_CONFIDENCE") is None

    # The files now hold the predicted genre; asking for the confidence must still write it.
    run = gtag_tag("--force", "--write-confidence", lib)
    assert run.code == 0, run.stderr
    for name in names:
        rec = run.rec(name)
        assert rec["status"] == "tagged"
        assert float(read_extra(lib / name, "GTAG_CONFIDENCE")) == pytest.approx(rec["confidence"], abs=6e-4)
        assert read_extra(lib / name, "GTAG_SOURCE") == f"gtag {__version__} (feat+mel)"
        assert read_genres(lib / name) == rec["written"]

    # Once everything is there, a re-run has nothing to do.
    before = snapshot(lib)
    again = gtag_tag("--force", "--write-confidence", lib)
    assert set(again.statuses().values()) == {"unchanged"}
    assert snapshot(lib) == before


@pytest.mark.parametrize(
    "cpus, available, expected",
    [
        (8, 64 * 2**30, 8),  # plenty of memory: one worker per CPU
        (64, 16 * 2**30, 21),  # a big box with little memory: as many workers as it holds
        (4, 100 * 2**20, 1),  # almost no memory: still one
        (0, None, 1),  # unknown CPUs and memory
        (6, None, 6),  # no /proc/meminfo (macOS, Windows): CPUs only
    ],
)
def test_default_jobs_respect_cpus_and_memory(cpus, available, expected):
    from gtag.run.jobs import plan_jobs

    assert plan_jobs(cpus, available) == expected


def test_default_jobs_on_this_machine_is_usable():
    from gtag.run.jobs import default_jobs

    n = default_jobs()
    assert 1 <= n <= (os.cpu_count() or 1)
