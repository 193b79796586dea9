"""Hostile libraries, round 3 (issue 29): names, permissions, pipes, foreign files and signals end
in one clear line, with nothing lost or left behind. Each test names the case (C1...C11) it
closes; each fails on the code before the fix. Most run `gtag tag` as a real process, as a user
would: what is at stake is the process's own standard streams, signals and exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gtag.cli import main
from gtag.tags.reading import read_genres
from gtag.tags.writing import write_genres

from .conftest import FIXTURES, GENRES, need, write_wav
from .test_robustness import _children, _first_file_done, _ps, _wait_for, needs_proc
from .test_tag_cli import gtag_tag, make_lib, noise, sha, temp_files  # noqa: F401 (fixture)
from .test_tags import audio_fingerprint

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}


def _gtag(args: list, cwd: Path, stdout=subprocess.PIPE, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    """`gtag tag ARGS` as a real process; its output as bytes."""
    return subprocess.run([sys.executable, "-m", "gtag.cli", "tag", *map(os.fsdecode, map(os.fspath, args))],
                          cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, env=_env(**env), timeout=timeout)


def _statuses(report: Path) -> dict[str, str]:
    return {Path(d["path"]).name: d["status"] for d in json.loads(report.read_text())}


# --- C1: a name that is not UTF-8; control characters in names -----------------------------------


def test_a_name_that_is_not_utf8_is_tagged_by_workers_and_shown_escaped(tmp_path: Path, tiny_models: Path) -> None:
    lib = make_lib(tmp_path / "lib", ["metal.ogg"])
    # Latin-1 bytes (\xff), then U+009B (a terminal's CSI) and U+202E (right-to-left override).
    odd = os.fsencode(lib) + b"/caf\xff\xc2\x9b\xe2\x80\xae.ogg"
    shutil.copyfile(lib / "metal.ogg", odd)
    report = tmp_path / "r.json"
    run = _gtag(["--models", tiny_models, "--no-cache", "-j", "2", "--report", report, lib], tmp_path)
    stdout, stderr = run.stdout.decode("utf-8", "replace"), run.stderr.decode("utf-8", "replace")
    assert run.returncode == 0, stderr
    assert sorted(_statuses(report).values()) == ["tagged", "tagged"]
    assert read_genres(os.fsdecode(odd)) != []
    assert "caf\\xff\\x9b\\u202e.ogg: " in stdout
    assert "\x9b" not in stdout + stderr and "\u202e" not in stdout + stderr


# --- C2: folders that cannot be listed ------------------------------------------------------------


def _beyond_path_max(root: Path) -> Path:
    """Folders nested until the path is longer than PATH_MAX, with a WAV at the bottom (made
    through descriptors: no call can name the deepest ones by their full path)."""
    fd = os.open(root, os.O_RDONLY)
    parts = []
    try:
        while len(os.fsencode(root)) + sum(len(p) + 1 for p in parts) < 4300:
            name = f"d{len(parts):02d}" + "x" * 200
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            parts.append(name)
        wav = os.open("deep.wav", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        with open(wav, "wb") as f:
            f.write((FIXTURES / "formats" / "classical.wav").read_bytes())
    finally:
        os.close(fd)
    return root.joinpath(*parts)


def test_unreadable_folders_are_named_counted_and_fail_the_run(tmp_path: Path, gtag_tag, monkeypatch) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    locked = lib / "locked"
    locked.mkdir()
    write_wav(locked / "b.wav", noise(3))
    _beyond_path_max(lib)
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root lists any folder: the refusal a user meets is played by os.scandir
        real = os.scandir

        def scandir(path="."):
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        run = gtag_tag(lib)
    finally:
        locked.chmod(0o755)
    assert run.code == 1, run.stderr
    skipped = [line for line in run.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and f"skipped: {locked}: permission denied, folder not read" in skipped
    assert any(line.endswith(": file name too long, folder not read") for line in skipped)
    statuses = [r["status"] for r in run.report]
    assert sorted(statuses) == ["skipped: unreadable", "skipped: unreadable", "tagged"]
    assert "skipped: unreadable" in run.stdout  # the summary counts them


# --- C3: standard output that cannot be written; SIGHUP -------------------------------------------


def test_a_full_stdout_loses_the_lines_not_the_run(tmp_path: Path, tiny_models: Path) -> None:
    lib = make_lib(tmp_path / "lib", ["metal.ogg", "classical.aiff"], {"a.wav": 3})
    report = tmp_path / "r.json"
    with open("/dev/full", "w") as full:
        run = _gtag(["--models", tiny_models, "--no-cache", "-j", "1", "--report", report, lib], tmp_path, stdout=full)
    stderr = run.stderr.decode()
    assert run.returncode == 1 and "Traceback" not in stderr, stderr
    assert set(_statuses(report).values()) == {"tagged"} and len(_statuses(report)) == 3
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: standard output could not be written (No space left on device)")
    assert temp_files(lib) == []


def test_a_closed_pipe_stops_the_run_quietly_between_files(tmp_path: Path, tiny_models: Path) -> None:
    lib = make_lib(tmp_path / "lib", wavs={f"t{i}.wav": 3 for i in range(6)})
    before = {p.name: sha(p) for p in lib.iterdir()}
    report = tmp_path / "r.json"
    argv = [sys.executable, "-m", "gtag.cli", "tag", "--models", str(tiny_models), "--no-cache", "-j", "1",
            "--report", str(report), str(lib)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    assert proc.wait(180) == 141, stderr
    assert stderr == ""
    done = _statuses(report)
    assert 1 <= len(done) < 6 and set(done.values()) == {"tagged"}
    for p in lib.iterdir():  # each file tagged and reported, or untouched
        assert (p.name in done) == (sha(p) != before[p.name]) == (read_genres(p) != [])
    assert temp_files(lib) == []


@pytest.mark.slow
@needs_proc
def test_sighup_stops_like_sigterm(tmp_path: Path, tiny_models: Path) -> None:
    lib = make_lib(tmp_path / "lib", wavs={f"t{i:02d}.wav": 6 for i in range(40)})
    out, err, report = tmp_path / "out.txt", tmp_path / "err.txt", tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "gtag.cli", "tag", "--models", str(tiny_models), "--no-cache",
                             "-j", "2", "--report", str(report), str(lib)], cwd=tmp_path, stdout=out.open("w"),
                            stderr=err.open("w"), env=_env(), start_new_session=True)
    try:
        _wait_for(_first_file_done(out), 120, "the first tagged file")
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGHUP)  # a closed terminal hangs up its whole process group
        assert proc.wait(60) == 129, err.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err.read_text() and "hung up:" in err.read_text()
    assert "summary" in out.read_text()
    assert 1 <= len(json.loads(report.read_text())) < 40
    _wait_for(lambda: not any(_ps(p) for p in workers), 30, "the workers to be gone")
    assert temp_files(lib) == []


# --- C4: a --cache that is another program's database --------------------------------------------


def _beets_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, path BLOB, genre TEXT)")
    db.execute("CREATE TABLE predictions (id INTEGER, value TEXT)")  # a table of the same name, not gtag's
    db.execute("INSERT INTO items VALUES (1, x'2f6d75736963', 'Jazz')")
    db.execute("INSERT INTO predictions VALUES (1, 'theirs')")
    db.commit()
    db.close()


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_foreign_database_as_cache_is_refused_untouched(tmp_path: Path, gtag_tag, dry_run: bool) -> None:
    _beets_db(gtag_tag.cache)
    before = sha(gtag_tag.cache)
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    run = gtag_tag(*(["--dry-run"] if dry_run else []), lib)
    assert run.code == 2, run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"error: cache {gtag_tag.cache} is not a gtag cache") and "--no-cache" in line
    assert sha(gtag_tag.cache) == before and read_genres(lib / "a.wav") == []
    assert not Path(f"{gtag_tag.cache}-wal").exists()
    db = sqlite3.connect(gtag_tag.cache)
    assert db.execute("SELECT value FROM predictions").fetchall() == [("theirs",)]


def test_an_unmarked_cache_of_an_older_gtag_keeps_working(tmp_path: Path, gtag_tag) -> None:
    from gtag.run.cache import APPLICATION_ID, EMBED_SCHEMA, SCHEMA

    db = sqlite3.connect(gtag_tag.cache)  # what gtag tag and gtag learn made before the mark
    db.execute(SCHEMA)
    db.execute(EMBED_SCHEMA)
    db.execute("INSERT INTO embeddings VALUES ('c', 'b', 1, 1, x'0000')")
    db.commit()
    db.close()
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    assert gtag_tag("--dry-run", lib).code == 0
    again = gtag_tag("--dry-run", lib)
    assert again.code == 0 and [r["cached"] for r in again.report] == [True]
    db = sqlite3.connect(gtag_tag.cache)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 1


# --- C5: a config file that is not UTF-8 TOML, nested too deeply; two labels to one name ----------


@pytest.mark.parametrize("content", [
    b'separator = "caf\xe9"\n',  # Latin-1
    b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n",
], ids=["latin1", "deep-arrays", "deep-tables"])
def test_a_config_that_is_not_utf8_toml_is_one_line(tmp_path: Path, gtag_tag, content: bytes) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(content)
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    run = gtag_tag("--config", config, lib)
    assert run.code == 2
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"error: config {config}: not valid TOML (")
    assert read_genres(lib / "a.wav") == []


def test_two_labels_named_alike_are_written_once(tmp_path: Path, gtag_tag) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[names]\n" + "".join(f'{g} = "Blues"\n' for g in GENRES))
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3})
    run = gtag_tag("--config", config, "--top-k", "3", "--min-confidence", "0", lib)
    assert run.code == 0, run.stderr
    assert run.rec("a.wav")["written"] == ["Blues"] and read_genres(lib / "a.wav") == ["Blues"]


# --- C6: what a killed run leaves behind ---------------------------------------------------------

_HOLDER = """
import os, sys, time
from pathlib import Path
from gtag.tags import tempfiles
from gtag.run.workers import WorkerPool
pool = WorkerPool(1)
temps = []
fd, _ = tempfiles._temp_copy(Path(sys.argv[1]), sys.argv[1], temps)
os.write(fd, b"half a copy")
print(pool._slots, temps[0], flush=True)
time.sleep(120)
"""


@needs_proc
def test_a_killed_runs_leftovers_go_at_once_a_live_runs_stay(tmp_path: Path, tiny_models: Path) -> None:
    lib = make_lib(tmp_path / "lib", ["metal.ogg"], {"a.wav": 2, "b.wav": 2})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    holders = [subprocess.Popen([sys.executable, "-c", _HOLDER, str(lib / name)], stdout=subprocess.PIPE,
                                env=_env(TMPDIR=str(tmp)), text=True) for name in ("a.wav", "b.wav")]
    try:
        (dead_slots, dead_copy), (live_slots, live_copy) = [h.stdout.readline().split() for h in holders]
        holders[0].kill()  # kill -9: a write and a worker pool stopped dead
        holders[0].wait(10)
        files_before = sorted(os.listdir(lib))
        run = _gtag(["--models", tiny_models, "--no-cache", "-j", "1", lib], tmp_path, TMPDIR=str(tmp))
        stderr = run.stderr.decode()
        assert run.returncode == 0, stderr
        assert not Path(dead_copy).exists() and not Path(dead_slots).exists()
        assert f"removed {dead_copy}, a temporary copy" in stderr
        assert Path(live_copy).exists() and Path(live_slots).is_dir()  # a live run's are never touched
        assert sorted(os.listdir(lib)) == sorted(set(files_before) - {Path(dead_copy).name})
    finally:
        for h in holders:
            h.kill()
            h.wait(10)
    # Once its owner is gone too, the next run removes the other's.
    assert _gtag(["--models", tiny_models, "--no-cache", "-j", "1", lib], tmp_path, TMPDIR=str(tmp)).returncode == 0
    assert temp_files(lib) == [] and [p for p in tmp.iterdir() if p.name.startswith("gtag-workers-")] == []


# --- C7: terminal encodings ----------------------------------------------------------------------


@pytest.mark.parametrize("env", [
    {"PYTHONIOENCODING": "ascii"},
    {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
], ids=["PYTHONIOENCODING=ascii", "LC_ALL=C"])
def test_an_ascii_terminal_gets_ascii(tmp_path: Path, tiny_models: Path, env: dict) -> None:
    lib = make_lib(tmp_path / "lib", ["metal.ogg"], {"caf\u00e9.wav": 2})
    run = _gtag(["--models", tiny_models, "--no-cache", "-j", "1", lib], tmp_path, **env)
    stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 0 and "Traceback" not in stderr, stderr
    stdout = run.stdout.decode("ascii")  # every byte ASCII
    assert f"{lib / 'metal.ogg'}: - -> " in stdout
    assert f"{lib}/caf\\xe9.wav: - -> " in stdout
    assert "summary" in stdout


# --- C8: an mp3's APEv2 and ID3v1 tags -----------------------------------------------------------

_V1 = (b"TAG" + b"V1 Title".ljust(30, b"\0") + b"V1 Artist".ljust(30, b"\0") + b"V1 Album".ljust(30, b"\0")
       + b"1999" + b"V1 comment".ljust(28, b"\0") + b"\0\x05" + bytes([8]))  # genre 8: Jazz


def _three_containers(src: Path, dst: Path, v2_genre: bool = True, v1: bool = True) -> Path:
    """An mp3 with ID3v2 (genre Jazz, no title), APEv2 (genre Jazz, a title) and ID3v1 (title,
    comment, genre Jazz), as taggers of the 2000s left them."""
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3, TCON

    shutil.copyfile(src, dst)
    tags_ = ID3(dst)
    tags_.delall("TIT2")
    tags_.delall("TCON")
    if v2_genre:
        tags_.add(TCON(encoding=3, text=["Jazz"]))
    tags_.save(dst, v1=0, v2_version=tags_.version[1])
    ape = APEv2()
    ape["Title"] = "APE title"
    ape["Genre"] = "Jazz"
    ape.save(dst)
    if v1:
        with open(dst, "ab") as f:
            f.write(_V1)
    return dst


@pytest.mark.parametrize("name", ["blues_v23_untagged.mp3", "blues_v24_tagged.mp3"])
def test_an_mp3s_ape_and_id3v1_tags_follow_the_new_genre(tmp_path: Path, name: str) -> None:
    from mutagen.apev2 import APEv2

    path = _three_containers(need(FIXTURES / "formats" / name), tmp_path / name)
    audio = audio_fingerprint(path)
    write_genres(path, ["Blues"])
    assert read_genres(path) == ["Blues"]
    ape = APEv2(path)
    assert list(ape["Genre"]) == ["Blues"] and str(ape["Title"]) == "APE title"
    v1 = path.read_bytes()[-128:]
    assert v1[:3] == b"TAG" and v1[127] == 0  # genre 0: Blues
    assert v1[3:33].rstrip(b"\0") == b"V1 Title" and v1[97:125].rstrip(b"\0") == b"V1 comment" and v1[126] == 5
    assert audio_fingerprint(path) == audio


def test_an_ape_only_genre_is_a_genre_the_file_has(tmp_path: Path, gtag_tag) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    # No ID3v1 either: mutagen would read its genre into TCON.
    path = _three_containers(need(FIXTURES / "formats" / "blues_v24_tagged.mp3"), lib / "a.mp3", v2_genre=False, v1=False)
    assert read_genres(path) == ["Jazz"]
    run = gtag_tag(lib)
    assert run.rec("a.mp3")["status"] == "skipped: has genre"


# --- C9: manifest values out of range ------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("hop_seconds", 1e-9), ("window_seconds", 1e-9), ("window_seconds", -3.0), ("window_seconds", 0),
    ("max_batch", 10**12), ("hop_seconds", 1e9),
])
def test_manifest_values_out_of_range_are_refused(tmp_path: Path, tiny_models: Path, field: str, value) -> None:
    manifest = tiny_models / "manifest.json"
    data = json.loads(manifest.read_text())
    data["models"][0][field] = value
    manifest.write_text(json.dumps(data))
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", "1", str(lib)])
    assert r.exit_code == 3, r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"'{field}' must be" in line


# --- C10: sparse files ---------------------------------------------------------------------------


def test_a_sparse_file_stays_sparse(tmp_path: Path) -> None:
    path = tmp_path / "holes.flac"
    shutil.copyfile(need(FIXTURES / "formats" / "classical.flac"), path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + 16 * 2**20)  # 16 MB of holes after the stream
    size, blocks = path.stat().st_size, path.stat().st_blocks
    if blocks * 512 > 4 * 2**20:
        pytest.skip("this filesystem does not keep holes")
    head = hashlib.sha256(path.read_bytes()[-16 * 2**20:]).hexdigest()
    write_genres(path, ["Rock"])
    assert read_genres(path) == ["Rock"] and path.stat().st_size == size
    assert path.stat().st_blocks * 512 < 4 * 2**20
    assert hashlib.sha256(path.read_bytes()[-16 * 2**20:]).hexdigest() == head


# --- C11: --jobs above the file count; a huge genre value in a line ------------------------------


def test_no_more_workers_than_files(tmp_path: Path, tiny_models: Path, monkeypatch) -> None:
    from gtag.run import workers

    started: list[int] = []

    def spy(self, jobs, fork=False):
        started.append(jobs)
        raise KeyboardInterrupt  # what it would start is the point: stop there (as Ctrl-C would)

    monkeypatch.setattr(workers.WorkerPool, "__init__", spy)
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2, "b.wav": 2})
    r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", "8", str(lib)])
    assert r.exit_code == 130, r.output
    assert started == [2]


def test_a_dry_run_shortens_a_huge_genre_in_its_line(tmp_path: Path, gtag_tag) -> None:
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 2})
    write_genres(lib / "a.wav", ["x" * 100_000])
    run = gtag_tag("--dry-run", "--force", "--min-confidence", "0", lib)
    assert run.code == 0, run.stderr
    [line] = [line for line in run.stdout.splitlines() if "a.wav" in line]
    assert len(line) < 1000 and "(99,800 more characters)" in line
    assert run.rec("a.wav")["existing"] == ["x" * 100_000]  # the report keeps it whole


# --- C3 and C7 on a real terminal: the progress bar proxies sys.stdout ---------------------------


@needs_proc
def test_a_run_on_a_terminal_ends(tmp_path: Path, tiny_models: Path) -> None:
    """On a terminal rich shows a progress bar and points sys.stdout at a proxy of the console;
    output guarded against lost writes must not write back through it (a run looped forever)."""
    import pty
    import select

    lib = make_lib(tmp_path / "lib", ["metal.ogg"], {"a.wav": 2})
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gtag.cli", "tag", "--models", str(tiny_models), "--no-cache",
                             "-j", "1", str(lib)], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            env=_env(TERM="xterm"), start_new_session=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(5) == 0, seen.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(master)
    text = seen.decode("utf-8", "replace")
    assert "summary" in text and "Traceback" not in text
    assert read_genres(lib / "a.wav") != []
