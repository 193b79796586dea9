"""Hostile inputs and faults (issue 13): files that are not files, streams that do not end, files
changed under gtag's feet, swapped temporary copies, malformed configuration. Each test names the
finding (F1...F11) it closes; each fails on the code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gtag.audio import decode as audio
from gtag.audio.decode import SAMPLE_RATE, AudioLoadError, load_audio
from gtag.cli import main
from gtag.models.runtime import load_models
from gtag.output import one_line
from gtag.predict.pipeline import Predictor
from gtag.run.library import not_regular, walk
from gtag.run.records import SKIPPED_NOT_REGULAR, TagOptions
from gtag.run.tagger import Tagger
from gtag.tags import formats, tempfiles
from gtag.tags import writing as tags_writing
from gtag.tags.formats import TagError
from gtag.tags.reading import read_genres
from gtag.tags.tempfiles import remove_stale_temp_files
from gtag.tags.writing import write_genres

from .conftest import write_wav
from .test_tag_cli import gtag_tag, make_lib, noise, sha, temp_files  # noqa: F401 (fixture)


@pytest.fixture
def alarm():
    """Fail instead of hanging: a test that would block (a FIFO opened) gets SIGALRM."""

    def on_alarm(signum, frame):
        raise TimeoutError("blocked: gtag opened something it should not have")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _odd_files(folder: Path) -> dict[str, Path]:
    """A FIFO named .mp3 and a symlink to /dev/zero named .wav (F1, F2)."""
    folder.mkdir(parents=True, exist_ok=True)
    fifo, zero = folder / "x.mp3", folder / "z.wav"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", zero)
    return {"x.mp3": fifo, "z.wav": zero}


# --- F1, F2: regular files only ------------------------------------------------------------------


def test_not_regular_names_the_kind_without_opening(tmp_path: Path, alarm) -> None:
    odd = _odd_files(tmp_path)
    write_wav(tmp_path / "a.wav", noise(2))
    assert not_regular(odd["x.mp3"]) == "a FIFO"
    assert not_regular(odd["z.wav"]) == "a character device"
    assert not_regular(tmp_path / "a.wav") is None
    assert not_regular(tmp_path) == "a folder"
    # walk yields the audio names so that the tagger can report them; it opens nothing.
    assert [p.name for p in walk([tmp_path])] == ["a.wav", "x.mp3", "z.wav"]
    for p in odd.values():
        with pytest.raises(AudioLoadError, match="not a regular file"):
            load_audio(p)
        with pytest.raises(TagError, match="not a regular file"):
            read_genres(p)


def test_fifo_and_dev_zero_cost_one_line_each(tmp_path: Path, gtag_tag, alarm) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 4})
    _odd_files(lib)
    run = gtag_tag(lib)
    assert run.code == 0, run.stderr
    assert run.statuses() == {"a.wav": "tagged", "x.mp3": SKIPPED_NOT_REGULAR, "z.wav": SKIPPED_NOT_REGULAR}
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, run.stderr
    assert "x.mp3: a FIFO" in run.stderr and "z.wav: a character device" in run.stderr
    assert read_genres(lib / "a.wav") == run.rec("a.wav")["written"]


def test_fifo_and_dev_zero_are_cheap(tmp_path: Path, tiny_models: Path, alarm) -> None:
    odd = _odd_files(tmp_path / "lib")
    tagger = Tagger(Predictor(load_models(tiny_models, device="cpu")), TagOptions(jobs=1))
    tracemalloc.start()
    t0 = time.perf_counter()
    records = list(tagger.run(list(odd.values())))
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r.status for r in records] == [SKIPPED_NOT_REGULAR] * 2
    assert elapsed < 2.0 and peak < 50e6, (elapsed, peak)


def _remove_deep(top: str) -> None:
    """Remove a chain of nested folders without recursion (shutil.rmtree, and so pytest's own
    clean-up of old temporary folders, would hit the recursion limit on it)."""
    chain, p = [], top
    while os.path.isdir(p):
        chain.append(p)
        entries = list(os.scandir(p))
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                os.unlink(e.path)
        dirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        assert len(dirs) <= 1, dirs
        if not dirs:
            break
        p = dirs[0]
    for p in reversed(chain):
        os.rmdir(p)


def test_very_deep_folders_are_walked_without_recursion(tmp_path: Path) -> None:
    depth = 1200  # beyond Python's default recursion limit of 1000
    top = str(tmp_path / "deep")
    deep = top
    try:
        for _ in range(depth):  # os.makedirs would recurse too
            deep += "/d"
            os.makedirs(deep) if deep == top + "/d" else os.mkdir(deep)
        Path(deep, "song.mp3").write_bytes(b"")
        Path(top, "top.mp3").write_bytes(b"")
        assert [len(p.relative_to(top).parts) for p in walk([top])] == [depth + 1, 1]
    finally:
        _remove_deep(top)


# --- F3: files of undeclared length --------------------------------------------------------------


def _flac(path: Path, seconds: float, sr: int = 8000, declared: bool = True) -> Path:
    """A tone of ``seconds`` as FLAC; without ``declared`` its STREAMINFO says "length unknown"
    (total_samples 0), as an encoder writing to a pipe leaves it."""
    with sf.SoundFile(str(path), "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        t = np.arange(60 * sr) / sr
        minute = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for _ in range(int(seconds // 60)):
            f.write(minute)
    if not declared:
        with open(path, "r+b") as f:
            f.seek(8 + 13)  # "fLaC", the block header, then 13 bytes into STREAMINFO
            low = f.read(1)[0] & 0xF0
            f.seek(8 + 13)
            f.write(bytes([low, 0, 0, 0, 0]))  # the 36-bit total_samples field
    return path


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_undeclared_length_flac_is_bounded_like_a_declared_one(tmp_path: Path) -> None:
    seconds = 1800  # three times what gtag analyses
    declared = _flac(tmp_path / "declared.flac", seconds)
    undeclared = _flac(tmp_path / "undeclared.flac", seconds, declared=False)
    assert sf.info(str(undeclared)).frames != sf.info(str(declared)).frames  # the header really lies
    a, peak_declared = _peak(lambda: load_audio(declared))
    b, peak_undeclared = _peak(lambda: load_audio(undeclared))
    for decoded in (a, b):
        assert decoded.samples.size <= audio.MAX_ANALYSED_SECONDS * SAMPLE_RATE
        # (at the end of an undeclared stream libsndfile may drop the last read block: 2 s here)
        assert decoded.truncated and decoded.duration == pytest.approx(seconds, abs=2.1)
    assert b.samples.size >= audio.MAX_ANALYSED_SECONDS / 2 * SAMPLE_RATE
    assert peak_undeclared <= 1.2 * peak_declared, (peak_undeclared, peak_declared)


def test_undeclared_length_mka_is_bounded(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    path = tmp_path / "long.mka"
    sr, seconds = 8000, 1500
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("flac", rate=sr, layout="mono")  # FLAC: no bitrate to guess a length by
        t = np.arange(sr) / sr
        second = (3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None, :]
        for i in range(seconds):
            frame = av.AudioFrame.from_ndarray(second, format="s16", layout="mono")
            frame.sample_rate, frame.pts = sr, i * sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    # What a muxer writing to a pipe leaves: no Duration element (made a Void one of the same
    # size) and no DURATION tag.
    data = bytearray(path.read_bytes())
    i = data.find(b"\x44\x89")
    n = 3 + (data[i + 2] & 0x7F)
    data[i:i + n] = bytes([0xEC, 0x80 | (n - 2)]) + bytes(n - 2)
    path.write_bytes(bytes(data).replace(b"DURATION", b"XURATION"))
    with av.open(str(path)) as c:
        assert not c.duration  # no declared length
    decoded, peak = _peak(lambda: load_audio(path))
    assert decoded.samples.size <= audio.MAX_ANALYSED_SECONDS * SAMPLE_RATE
    assert decoded.truncated and decoded.duration == pytest.approx(seconds, abs=1)
    # Decoding the whole 25 minutes at 22,050 Hz takes 265 MB (chunks and their concatenation).
    assert peak < 90e6, peak


@pytest.mark.parametrize("seconds", [45, 600, 601, 1799, 5000])
def test_spread_keeps_evenly_spaced_blocks_in_bounded_memory(seconds: int) -> None:
    rate = 100  # samples hold their own index: what was kept shows where it came from
    spread = audio._Spread(rate, 600.0)
    rng = np.random.default_rng(seconds)
    y = np.arange(seconds * rate, dtype=np.float32)
    i = 0
    while i < y.size:
        n = int(rng.integers(1, 5000))
        spread.add(y[i:i + n])
        i += n
        assert sum(k.size for k in spread.kept) <= 600 * rate
    kept = spread.samples()
    assert spread.seen == y.size
    if seconds <= 600:
        np.testing.assert_array_equal(kept, y)
        return
    block = 30 * rate
    assert 300 * rate <= kept.size <= 600 * rate
    starts = kept[::block]
    assert np.all(kept.reshape(-1, block) - starts[:, None] == np.arange(block))  # whole blocks
    gaps = np.diff(starts)
    assert np.all(gaps == gaps[0]) and starts[0] == 0  # evenly spread from the start


# --- F6: a file changed during its analysis ------------------------------------------------------


def test_file_replaced_during_analysis_is_not_tagged_nor_cached(tmp_path: Path, gtag_tag, monkeypatch) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 4, "b.wav": 3})
    new = write_wav(tmp_path / "new.wav", noise(5, seed=9))
    new_sha = sha(new)
    real = Predictor.predict_file

    def predict_then_replace(self, path):
        pred = real(self, path)
        if Path(path).name == "a.wav" and new.exists():
            os.replace(new, path)  # another program saves a new version meanwhile
        return pred

    monkeypatch.setattr(Predictor, "predict_file", predict_then_replace)
    run = gtag_tag(lib)
    assert run.statuses() == {"a.wav": "skipped: changed during analysis", "b.wav": "tagged"}
    assert run.code == 0
    assert "a.wav: changed during analysis" in run.stderr
    assert sha(lib / "a.wav") == new_sha and read_genres(lib / "a.wav") == []
    # The next run analyses the new content: nothing was cached under its key.
    again = gtag_tag(lib)
    assert again.rec("a.wav")["status"] == "tagged" and again.rec("a.wav")["cached"] is False


def test_write_refuses_a_file_that_is_not_the_analysed_version(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", noise(2))
    st = path.stat()
    analysed = (st.st_dev, st.st_ino, st.st_size - 1, st.st_mtime_ns)
    before = sha(path)
    with pytest.raises(formats.FileChanged, match="changed since it was analysed"):
        write_genres(path, ["Jazz"], expect=analysed)
    assert sha(path) == before
    write_genres(path, ["Jazz"], expect=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    assert read_genres(path) == ["Jazz"]


# --- F7, F8: the temporary copy ------------------------------------------------------------------


def test_swapped_temporary_copy_touches_nothing_else(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "lib").mkdir()
    path = write_wav(tmp_path / "lib" / "a.wav", noise(2))
    path.chmod(0o664)
    victim = tmp_path / "elsewhere" / "secret"
    victim.parent.mkdir()
    victim.write_bytes(b"root's own")
    victim.chmod(0o600)
    before = sha(path)
    real_verify = tags_writing._verify

    def verify_then_swap(spec, original, tmp, *args):
        real_verify(spec, original, tmp, *args)
        name = Path(getattr(tmp, "name", tmp))  # the folder's owner swaps the name for a symlink
        os.unlink(name)
        os.symlink(victim, name)

    monkeypatch.setattr(tags_writing, "_verify", verify_then_swap)
    with pytest.raises(TagError, match="replaced by another program"):
        write_genres(path, ["Jazz"])
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600 and victim.read_bytes() == b"root's own"
    assert not path.is_symlink() and sha(path) == before
    assert temp_files(path.parent) == []


def test_unrenamable_temporary_copy_is_reported(tmp_path: Path, monkeypatch) -> None:
    path = write_wav(tmp_path / "a.wav", noise(2))
    before = sha(path)
    real_unlink = Path.unlink

    def failing_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    def failing_unlink(self, missing_ok=False):
        if self.name.startswith(tempfiles.TEMP_PREFIX):
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", failing_replace)
    monkeypatch.setattr(Path, "unlink", failing_unlink)
    with pytest.raises(TagError) as info:
        write_genres(path, ["Jazz"])
    msg = str(info.value)
    assert "the original is untouched" in msg and "could not be removed" in msg and "\n" not in msg
    assert sha(path) == before
    monkeypatch.undo()
    [left] = temp_files(tmp_path)
    # A later run removes it, and only that: at once, since no write holds it locked any more
    # (issue 29; it was left for an hour before).
    old = time.time() - 2 * 3600
    (tmp_path / ".gtag-notmine.txt").write_text("a user's file")
    os.utime(tmp_path / ".gtag-notmine.txt", (old, old))
    os.symlink(path, tmp_path / ".gtag-abcdefgh.wav")
    assert remove_stale_temp_files(tmp_path, dry_run=True) == [tmp_path / left]
    assert (tmp_path / left).exists()
    assert remove_stale_temp_files(tmp_path) == [tmp_path / left]
    assert not (tmp_path / left).exists() and (tmp_path / ".gtag-notmine.txt").exists()
    assert (tmp_path / ".gtag-abcdefgh.wav").is_symlink() and sha(path) == before


def test_tag_run_removes_stale_temporary_copies(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    stale, fresh = lib / ".gtag-k2j4h5g6.wav", lib / ".gtag-a1b2c3d4.wav"
    for p in (stale, fresh):
        p.write_bytes(b"RIFF half a copy")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    run = gtag_tag(lib)
    assert run.code == 0
    assert not stale.exists() and fresh.exists()
    assert f"removed {stale}" in run.stderr


# --- F10: configuration inputs -------------------------------------------------------------------


def _manifest_cases() -> dict[str, object]:
    def entry(**kw):
        def edit(m):
            m["models"][0].update(kw)
            return m
        return edit

    def drop(key):
        def edit(m):
            del m["models"][0][key]
            return m
        return edit

    return {
        "top level a list": lambda m: [m],
        "models not a list": lambda m: {**m, "models": {"a": 1}},
        "entry not an object": lambda m: {**m, "models": ["feat"]},
        "name not a string": entry(name=7),
        "labels a string": entry(labels="blues"),
        "duplicate labels": entry(labels=["rock"] * 10),
        # "Alt. Rock" is an alias of Alternative Rock in gtag's taxonomy: one genre split in two
        "two labels, one genre": entry(labels=["blues", "classical", "country", "disco", "hiphop", "jazz", "metal",
                                               "Alt. Rock", "reggae", "Alternative Rock"]),
        "window 0": entry(window_seconds=0),
        "window 2 s": entry(window_seconds=2.0),
        "hop 0": entry(hop_seconds=0),
        "hop a string": entry(hop_seconds="1.5"),
        "hop nan": entry(hop_seconds=float("nan")),
        "sample rate a string": entry(sample_rate="22050"),
        "weight negative": entry(weight=-1),
        "cpu_variant a string": entry(cpu_variant="x.onnx"),
        "msd_labels not a list": entry(msd_labels=5),
        "metrics a list": entry(metrics=[]),
        "file escapes the folder": entry(file="../../etc/passwd"),
        "no sha256": drop("sha256"),
        "duplicate names": lambda m: {**m, "models": m["models"] + [m["models"][0]]},
        "deep nesting": lambda m: "[" * 100_000 + "]" * 100_000,
        "not UTF-8": lambda m: b"\xff\xfe{}",
    }


@pytest.mark.parametrize("case", list(_manifest_cases()))
def test_malformed_manifest_exits_3(case: str, tiny_models: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    manifest = tiny_models / "manifest.json"
    data = _manifest_cases()[case](json.loads(manifest.read_text()))
    if isinstance(data, bytes):
        manifest.write_bytes(data)
    else:
        manifest.write_text(data if isinstance(data, str) else json.dumps(data))
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    before = sha(lib / "a.wav")
    commands = [["tag", "--no-cache", "-j", "1", str(lib)], ["predict", str(lib / "a.wav")], ["models"]]
    if case == "window 2 s":  # a valid manifest, for models gtag cannot feed: listing them is fine
        commands.pop()
    for argv in commands:
        result = CliRunner().invoke(main, [argv[0], "--models", str(tiny_models), *argv[1:]], catch_exceptions=False)
        assert result.exit_code == 3, (argv[0], result.output)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "Traceback" not in result.output
    assert sha(lib / "a.wav") == before


def _not_sqlite(p: Path) -> Path:
    p.write_text("x\n" * 100)
    return p


def _folder(p: Path) -> Path:
    p.mkdir()
    return p


def _under_a_file(p: Path) -> Path:
    p.write_text("a file")
    return p / "cache.sqlite3"


@pytest.mark.parametrize("make", [_not_sqlite, _folder, _under_a_file])
@pytest.mark.parametrize("how", ["option", "env"])
def test_unusable_cache_is_a_clear_error(make, how: str, tmp_path: Path, gtag_tag) -> None:
    cache = make(tmp_path / "c.db")
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    before = sha(lib / "a.wav")
    if how == "option":
        run = gtag_tag("--cache", cache, lib, use_cache_option=False)
    else:
        run = gtag_tag(lib, use_cache_option=False, env={"GTAG_CACHE": str(cache)})
    assert run.code == 2, run.stderr
    if make is _folder and how == "option":  # click refuses it, as for any file option
        assert "is a directory" in run.stderr
    else:
        [line] = run.stderr.strip().splitlines()
        assert line.startswith("error: ") and "--no-cache" in line
    assert sha(lib / "a.wav") == before


def test_old_cache_schema_is_rebuilt_and_bad_rows_are_misses(tmp_path: Path, gtag_tag) -> None:
    from gtag.run.cache import APPLICATION_ID

    db = sqlite3.connect(gtag_tag.cache)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # gtag's own cache (issue 29: only then)
    db.execute("CREATE TABLE predictions (path TEXT PRIMARY KEY, result TEXT)")  # of another layout
    db.execute("INSERT INTO predictions VALUES ('x', 'y')")
    db.commit()
    db.close()
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3, "b.wav": 3})
    run = gtag_tag("--dry-run", lib)
    assert run.code == 0, run.stderr
    db = sqlite3.connect(gtag_tag.cache)
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == 2
    db.execute("UPDATE predictions SET result = 'not json' WHERE path LIKE '%a.wav'")
    db.execute("UPDATE predictions SET result = '{\"labels\": 3}' WHERE path LIKE '%b.wav'")
    db.commit()
    db.close()
    again = gtag_tag("--dry-run", lib)
    assert again.code == 0, again.stderr
    assert [r["cached"] for r in again.report] == [False, False]
    assert [r["status"] for r in again.report] == ["would tag"] * 2


def test_report_into_a_missing_folder_is_refused_before_any_file(tmp_path: Path, tiny_models: Path) -> None:
    from click.testing import CliRunner

    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    before = sha(lib / "a.wav")
    result = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", "1",
                                       "--report", str(tmp_path / "nodir" / "r.json"), str(lib)])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert sha(lib / "a.wav") == before


def test_non_utf8_names_in_reports(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    odd = os.fsdecode(bytes(lib) + b"/caf\xe9.wav")  # Latin-1 é: not UTF-8
    os.rename(lib / "a.wav", odd)
    run = gtag_tag(lib)  # its JSON report escapes the name
    assert run.code == 0, run.stderr
    [rec] = run.report
    assert rec["path"].endswith("caf\udce9.wav") and rec["status"] == "tagged"
    report = tmp_path / "r.csv"
    again = gtag_tag("--dry-run", "--report", report, lib)  # the CSV keeps its bytes
    assert again.code == 0, again.stderr
    assert b"caf\xe9.wav" in report.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- F11 -----------------------------------------------------------------------------------------


def test_newline_in_a_name_keeps_one_line(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib")
    (lib / "bad\nname.mp3").write_text("not audio")
    run = gtag_tag(lib)
    assert run.code == 1
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("error: ") and "bad\\nname.mp3" in line
    assert one_line("a\r\nb\x1b[31m") == "a\\r\\nb\\x1b[31m"


@pytest.mark.parametrize("value", ["nan", "NaN", "-0.1", "1.5", "inf"])
def test_min_confidence_must_be_a_probability(value: str, tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    run = gtag_tag("--min-confidence", value, lib)
    assert run.code == 2 and "--min-confidence" in run.stderr


def test_permission_denied_is_not_called_corrupt(tmp_path: Path, monkeypatch) -> None:
    import mutagen

    path = write_wav(tmp_path / "a.wav", noise(2))

    def denied(*args, **kwargs):
        try:
            raise PermissionError(13, "Permission denied", str(path))
        except PermissionError as exc:
            raise mutagen.MutagenError(exc) from exc

    monkeypatch.setattr(mutagen, "File", denied)
    with pytest.raises(TagError, match="permission denied") as info:
        read_genres(path)
    assert "corrupt" not in str(info.value)


@pytest.mark.parametrize("level", [0.0, 1e-4])  # digital silence, and hiss at -80 dBFS
def test_silence_gets_no_genre(level: float, tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"music.wav": 3})
    rng = np.random.default_rng(0)
    sf.write(str(lib / "quiet.wav"), (level * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32),
             SAMPLE_RATE, subtype="FLOAT")
    before = sha(lib / "quiet.wav")
    run = gtag_tag(lib)
    assert run.code == 0, run.stderr
    assert run.statuses() == {"music.wav": "tagged", "quiet.wav": "skipped: silent"}
    assert run.rec("quiet.wav")["written"] == [] and sha(lib / "quiet.wav") == before


def test_dry_run_predicts_the_wav_size_limit(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"big.wav": 3, "ok.wav": 3})
    with open(lib / "big.wav", "r+b") as f:
        f.seek(4)
        f.write((0xFFFFFFF0).to_bytes(4, "little"))  # the header claims almost 4 GB
    dry = gtag_tag("--dry-run", lib)
    assert dry.statuses() == {"big.wav": "failed", "ok.wav": "would tag"}
    assert "4 GB" in dry.rec("big.wav")["error"] and dry.code == 1
    real = gtag_tag(lib)
    assert real.statuses() == dry.statuses() | {"ok.wav": "tagged"}


@pytest.mark.parametrize("n_labels", [3, 7])
def test_msd_labels_that_do_not_match_the_tag_output_exit_3(n_labels: int, tiny_models: Path, tmp_path: Path) -> None:
    """A model with a tag output of 5 scores whose manifest lists another number of tag names: refused
    when loaded (exit 3), not on the first file."""
    onnx = pytest.importorskip("onnx")
    from click.testing import CliRunner
    from onnx import TensorProto, helper, numpy_helper

    from gtag.models.runtime import sha256_file

    from .conftest import GENRES

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((57, 10)).astype(np.float32), "W")
    wt = numpy_helper.from_array(rng.standard_normal((57, 5)).astype(np.float32), "WT")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("MatMul", ["features", "WT"], ["msd_tags"])],
        "tagged", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 57])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
         helper.make_tensor_value_info("msd_tags", TensorProto.FLOAT, ["batch", 5])], [w, wt])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tiny_models / "tagged.onnx").write_bytes(model.SerializeToString())
    manifest = json.loads((tiny_models / "manifest.json").read_text())
    entry = dict(manifest["models"][0], name="tagged", file="tagged.onnx", labels=list(GENRES),
                 sha256=sha256_file(tiny_models / "tagged.onnx"), msd_labels=[f"t{i}" for i in range(n_labels)])
    manifest["models"] = [entry]
    (tiny_models / "manifest.json").write_text(json.dumps(manifest))
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    result = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", "1", str(lib)],
                                catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert "msd_labels lists" in result.stderr and read_genres(lib / "a.wav") == []
