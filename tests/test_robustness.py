"""No crash survives (issue 17): a worker that dies, stop signals, a dead parent.

The signal tests run `gtag tag` as a real process (``python -m gtag.cli``) on a library of
generated WAVs with the tiny models, wait for a condition (a file reported, workers started)
rather than for a time, then signal it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gtag.cli import main
from gtag.run.workers import CRASH_HOOK_ENV, WorkerPool, describe_exit
from gtag.tags.reading import read_genres

from .test_tag_cli import make_lib, snapshot, temp_files

REPO = Path(__file__).resolve().parents[1]
POLL = 0.05
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes in /proc")


def _ps(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state in "ZX" else (int(ppid), state)


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            info = _ps(int(d.name))
            if info and info[0] == pid:
                out.add(int(d.name))
    return out


def _wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what}")


def _start(args: list, tmp_path: Path, **env) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.Popen([sys.executable, "-m", "gtag.cli", "tag", *map(str, args)], cwd=tmp_path,
                            stdout=out.open("w"), stderr=err.open("w"), env=full_env, start_new_session=True)
    return proc, out, err


@pytest.fixture
def long_lib(tmp_path: Path) -> Path:
    """Enough generated tracks that a -j2 run is still busy when a test signals it."""
    return make_lib(tmp_path / "lib", wavs={f"t{i:02d}.wav": 6 for i in range(40)})


# --- a worker that dies (F4) ------------------------------------------------------------------


def test_describe_exit() -> None:
    assert describe_exit(-11) == "analysis process crashed (signal 11, SIGSEGV)"
    assert describe_exit(-9) == "analysis process crashed (signal 9, SIGKILL)"
    assert describe_exit(3) == "analysis process exited unexpectedly (code 3)"


@pytest.mark.slow
def test_a_dead_worker_costs_one_file(tmp_path: Path, tiny_models: Path, monkeypatch) -> None:
    lib = make_lib(tmp_path / "lib", ["jazz.m4a", "classical.flac"], {f"w{i}.wav": 3 for i in range(6)})
    shutil.copyfile(lib / "jazz.m4a", lib / "crash.m4a")
    before = snapshot(lib)
    monkeypatch.setenv(CRASH_HOOK_ENV, "crash.m4a")  # the worker that gets it dies of SIGSEGV
    report = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "--force", "--jobs", "2",
                                  "--report", str(report), str(lib)], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert errors == [f"error: {lib / 'crash.m4a'}: analysis process crashed (signal 11, SIGSEGV)"]
    assert "Traceback" not in r.output
    recs = {Path(d["path"]).name: d for d in json.loads(report.read_text())}
    assert len(recs) == 9
    assert recs.pop("crash.m4a")["status"] == "failed"
    # Every other file, retried or not, was analysed and holds its genre ("unchanged": a fixture
    # that already had exactly the predicted genre).
    assert {d["status"] for d in recs.values()} <= {"tagged", "unchanged"}
    for name, d in recs.items():
        assert read_genres(lib / name) == d["written"]
    assert snapshot(lib)["crash.m4a"] == before["crash.m4a"]  # nothing damaged
    assert temp_files(lib) == []
    assert "summary" in r.stdout


# --- stop signals (F9, F5) ----------------------------------------------------------------------


@pytest.mark.parametrize("where, jobs", [("walk", "1"), ("model loading", "1"), ("model loading", "2")])
def test_ctrl_c_before_tagging_exits_130_with_a_summary(where: str, jobs: str, tmp_path: Path, tiny_models: Path,
                                                        monkeypatch) -> None:
    # With -j 2 the workers are already running when the models load: they are stopped too.
    import gtag.cli.app
    import gtag.run.library

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gtag.run.library if where == "walk" else gtag.cli.app, "walk" if where == "walk" else "load_models",
                        interrupted)
    lib = make_lib(tmp_path / "lib", wavs={"a.wav": 3, "b.wav": 3})
    before = set(threading.enumerate())
    r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", jobs, str(lib)])
    assert r.exit_code == 130
    assert "interrupted" in r.stderr and "Aborted" not in r.output and "Traceback" not in r.output
    assert "summary" in r.stdout
    assert read_genres(lib / "a.wav") == [] and read_genres(lib / "b.wav") == []
    assert [t for t in set(threading.enumerate()) - before if t.is_alive()] == []  # no pool left running


@pytest.mark.slow
def test_a_swallowed_ctrl_c_still_stops_the_run(tmp_path: Path, tiny_models: Path, monkeypatch) -> None:
    """F9: Ctrl-C during a library call that swallows KeyboardInterrupt (numba printing it as
    "ignored" during a compile) used to let the run go on and exit 0. Now the signal is recorded
    and the run stops after that file: exit 130, the rest untouched."""
    import gtag.predict.pipeline

    real = gtag.predict.pipeline.analyse_file
    calls = []

    def analyse_then_swallowed_ctrl_c(path, config):
        calls.append(path)
        if len(calls) == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler raises here, at once
            except KeyboardInterrupt:
                pass  # swallowed, as a careless library would
        return real(path, config)

    monkeypatch.setattr(gtag.predict.pipeline, "analyse_file", analyse_then_swallowed_ctrl_c)
    lib = make_lib(tmp_path / "lib", wavs={f"t{i}.wav": 3 for i in range(4)})
    report = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", "1",
                                  "--report", str(report), str(lib)])
    assert r.exit_code == 130, r.output
    assert len(calls) == 2  # nothing analysed after the signal
    assert [d["status"] for d in json.loads(report.read_text())] == ["tagged", "tagged"]
    assert [read_genres(lib / f"t{i}.wav") != [] for i in range(4)] == [True, True, False, False]
    assert "summary" in r.stdout


def test_a_ctrl_c_ignored_when_gtag_started_stays_ignored(tmp_path: Path, tiny_models: Path, monkeypatch) -> None:
    """A background job (`gtag tag &` in a script) starts with SIGINT ignored, so that a Ctrl-C meant
    for the foreground does not stop it: gtag tag keeps that, as learn and predict do, and tags
    every file; SIGTERM still has gtag's clean stop."""
    import gtag.predict.pipeline
    from gtag.run import signals

    real, calls = gtag.predict.pipeline.analyse_file, []

    def analyse_then_ctrl_c(path, config):
        calls.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        return real(path, config)

    monkeypatch.setattr(gtag.predict.pipeline, "analyse_file", analyse_then_ctrl_c)
    lib = make_lib(tmp_path / "lib", wavs={f"t{i}.wav": 3 for i in range(3)})
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        r = CliRunner().invoke(main, ["tag", "--models", str(tiny_models), "--no-cache", "-j", "1", str(lib)])
    finally:
        signal.signal(signal.SIGINT, old)
    assert r.exit_code == 0, r.output
    assert calls[0] == (signal.SIG_IGN, signals._handler)
    assert [read_genres(lib / f"t{i}.wav") != [] for i in range(3)] == [True, True, True]


def _first_file_done(out: Path):
    return lambda: "wrote)" in out.read_text()


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_mid_run_ends_cleanly(sig, code, tmp_path: Path, tiny_models: Path, long_lib: Path) -> None:
    proc, out, err = _start(["--models", tiny_models, "--no-cache", "-j", 2, long_lib], tmp_path)
    try:
        _wait_for(_first_file_done(out), 120, "the first tagged file")
        workers = _children(proc.pid)
        # forked from gtag itself: its own children, no fork server or resource tracker between
        assert len(workers) == 2
        assert not any(b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes() for p in workers)
        if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the whole process group
            os.killpg(proc.pid, sig)
        else:  # `timeout`, a service manager: the parent only
            proc.send_signal(sig)
        assert proc.wait(60) == code, err.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert "Traceback" not in stderr and ("interrupted" if code == 130 else "terminated") in stderr
    assert "summary" in out.read_text()
    _wait_for(lambda: not any(_ps(p) for p in workers), 30, "the workers to be gone")
    assert temp_files(long_lib) == []


def test_stopping_the_pool_waits_for_its_threads_and_workers(tmp_path: Path) -> None:
    # A stop that returned while the executor's manager thread was still closing its pipes let the
    # interpreter's exit hook write to a closed pipe: a traceback after "interrupted" (CI, 3.11).
    before = set(threading.enumerate())
    fifo = tmp_path / "blocks"
    os.mkfifo(fifo)
    pool = WorkerPool(1)
    pool.submit(open, str(fifo))  # open() of a FIFO with no writer blocks: a task that never ends
    _wait_for(lambda: any(p.name.isdigit() for p in Path(pool._slots).iterdir()), 60, "the task to start")
    workers = list(pool._procs.values())
    pool.stop()
    assert [t for t in set(threading.enumerate()) - before if t.is_alive()] == []
    assert not any(p.is_alive() for p in workers)


@pytest.mark.slow
@needs_proc
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path, tiny_models: Path, long_lib: Path) -> None:
    proc, out, err = _start(["--models", tiny_models, "--no-cache", "-j", 2, long_lib], tmp_path)
    left: set[int] = set()
    try:
        _wait_for(_first_file_done(out), 120, "the first tagged file")
        left = _children(proc.pid)
        assert len(left) >= 2  # two workers (and the resource tracker)
        proc.kill()
        proc.wait(10)
        _wait_for(lambda: not any(_ps(p) for p in left), 30, "the orphaned workers to exit")
    finally:
        for p in left:  # never leak a process, even when the test fails
            if _ps(p):
                os.kill(p, signal.SIGKILL)
    # Every file is whole: untouched or fully tagged. (A SIGKILL that lands mid-write can leave
    # the hidden temporary copy behind; the original is never touched before the atomic rename.)
    for f in sorted(long_lib.glob("t*.wav")):
        assert len(read_genres(f)) <= 1, f


# --- how the workers start ----------------------------------------------------------------------

_POOL_PROBE = """
import os, sys, threading, time
{before}
from gtag.run.workers import WorkerPool
from tests.worker_probe import parent_and_onnx_runtime

pool = WorkerPool(2, fork=True)
found = [pool.submit(parent_and_onnx_runtime, "x").result(60) for _ in range(4)]
print(pool.forked, all(ppid == os.getpid() for ppid, _ in found), all(ort for _, ort in found),
      "onnxruntime" in sys.modules)
pool.close()
"""


@needs_proc
@pytest.mark.parametrize("before, forked", [
    ("", True),  # gtag tag's case: one thread, ONNX Runtime not imported yet
    ("import onnxruntime", False),  # its import starts a thread; its sessions are not fork-safe
    ("threading.Thread(target=time.sleep, args=(30,), daemon=True).start()", False),
])
def test_workers_are_forked_only_from_a_process_of_one_thread_without_onnx_runtime(before: str, forked: bool) -> None:
    """`gtag tag --jobs N` forks its workers before it imports ONNX Runtime (they inherit its
    imports; no fork server imports them again); any other process gets the fork server's workers,
    which it does not parent. Workers load ONNX Runtime themselves either way; a forked one at once,
    while the parent loads its models."""
    out = subprocess.run([sys.executable, "-c", _POOL_PROBE.format(before=before)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    parent_ort = "True" if before.startswith("import onnxruntime") else "False"
    assert out.stdout.split() == [str(forked), str(forked), str(forked), parent_ort]


@pytest.mark.slow
@needs_proc
def test_a_dead_forked_worker_costs_one_file_in_a_real_run(tmp_path: Path, tiny_models: Path) -> None:
    """The same as test_a_dead_worker_costs_one_file, in a real `gtag tag -j 2` process, whose first
    workers are forked from it: after the crash the pool is rebuilt (from the fork server, since the
    process holds ONNX Runtime by then) and every other file is tagged."""
    lib = make_lib(tmp_path / "lib", ["jazz.m4a"], {f"w{i}.wav": 3 for i in range(6)})
    shutil.copyfile(lib / "jazz.m4a", lib / "crash.m4a")
    before = snapshot(lib)
    report = tmp_path / "r.json"
    proc, out, err = _start(["--models", tiny_models, "--no-cache", "--force", "-j", 2, "--report", report, lib],
                            tmp_path, **{CRASH_HOOK_ENV: "crash.m4a"})
    assert proc.wait(300) == 1, err.read_text()
    errors = [line for line in err.read_text().splitlines() if line.strip()]
    assert errors == [f"error: {lib / 'crash.m4a'}: analysis process crashed (signal 11, SIGSEGV)"]
    recs = {Path(d["path"]).name: d for d in json.loads(report.read_text())}
    assert recs.pop("crash.m4a")["status"] == "failed"
    assert len(recs) == 7 and {d["status"] for d in recs.values()} <= {"tagged", "unchanged"}
    for name, d in recs.items():
        assert read_genres(lib / name) == d["written"]
    assert snapshot(lib)["crash.m4a"] == before["crash.m4a"]
    assert temp_files(lib) == []
