"""The local worker pool of `gtag tag`: worker processes that survive nothing they should not.

- A worker that dies (a decoder or kernel segfault, the kernel's OOM killer) breaks a
  ProcessPoolExecutor for good. ``WorkerPool.post_mortem`` says which file(s) the dead worker was
  analysing (each worker notes its current file in a slot file) and how it died; the tagger then
  reports that file, starts a fresh pool and resubmits the others once.
- Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the parent decides (it stops
  the pool and prints its summary); a worker must not print a KeyboardInterrupt traceback.
- A worker whose parent is gone (SIGKILL, a crash) exits by itself: a watchdog thread polls
  ``os.getppid()``. (PR_SET_PDEATHSIG is not used: it fires when the *thread* that started the
  worker exits, and the executor starts workers from its own threads.)
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

# Test-only hook: a worker asked to analyse a file of this name kills itself with SIGSEGV, as a
# crashing decoder would. Unset in normal use.
CRASH_HOOK_ENV = "GTAG_TEST_CRASH_FILE"
PARENT_POLL_SECONDS = 0.5

_SLOTS: str | None = None  # this worker's slot folder (set by the initializer)
_CRASH_FILE: str | None = None  # test hook (CRASH_HOOK_ENV in the parent): crash on this file name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _watch_parent(parent_pid: int, gtag_pid: int) -> None:
    """Exit when gtag is gone. A spawned worker's parent is gtag itself; a fork-server worker's
    parent is the fork server, which outlives a killed gtag while its workers hold its liveness
    pipe, so gtag's own pid is watched as well."""
    def watch() -> None:
        while os.getppid() == parent_pid and _alive(gtag_pid):
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)  # the parent is gone: nobody will read what this worker computes

    threading.Thread(target=watch, name="gtag-parent-watchdog", daemon=True).start()


def _init_worker(gtag_pid: int, slots: str, crash_file: str | None = None, preload: tuple[str, ...] = ()) -> None:
    global _SLOTS, _CRASH_FILE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # a closed terminal hangs up its whole process group: the parent decides
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _SLOTS = slots
    # Handed over, not read from os.environ: a fork-server worker has the server's environment.
    _CRASH_FILE = crash_file
    _watch_parent(os.getppid(), gtag_pid)
    for name in preload:  # while the parent is still loading its models, before the first file
        importlib.import_module(name)


def run_task(fn, path, *args):
    """Run ``fn(path, *args)`` in a worker, with ``path`` noted in this worker's slot meanwhile."""
    slot = Path(_SLOTS) / str(os.getpid()) if _SLOTS else None
    if slot is not None:
        tmp = slot.with_suffix(".tmp")
        tmp.write_bytes(os.fsencode(path))  # bytes: a name that is not UTF-8 (b"\xff") is kept as it is
        os.replace(tmp, slot)
    try:
        if _CRASH_FILE and Path(path).name == _CRASH_FILE:
            os.kill(os.getpid(), signal.SIGSEGV)
        return fn(path, *args)
    finally:
        if slot is not None:
            slot.unlink(missing_ok=True)


def describe_exit(exitcode: int | None) -> str:
    """How a worker ended, for the file's error line."""
    if exitcode is None:
        return "analysis process crashed"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "?"
        return f"analysis process crashed (signal {-exitcode}, {name})"
    return f"analysis process exited unexpectedly (code {exitcode})"


# The slot folders of worker pools, in the temp folder; each holds an OWNER file naming its run.
SLOTS_PREFIX = "gtag-workers-"
OWNER_FILE = "OWNER"
# A slot folder without an OWNER file (an older gtag's) is removed once this old.
STALE_SLOTS_SECONDS = 3600.0


def _boot_and_start(pid: int) -> tuple[str, str]:
    """(boot id, start time of ``pid`` in clock ticks since boot): with the host and the pid, what
    names one process for good (a pid is reused, a pid with its start time is not). Empty strings
    where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        return boot, start
    except (OSError, IndexError):
        return "", ""


def owner_record(pid: int | None = None) -> str:
    """What a slot folder's OWNER file says: host, boot id, pid and its start time."""
    pid = os.getpid() if pid is None else pid
    return " ".join([socket.gethostname() or "-", *(v or "-" for v in _boot_and_start(pid)), str(pid)])


def owner_alive(record: str) -> bool:
    """Whether the run an OWNER record names may still be running: True unless provably gone (this
    host, this boot, and its pid is gone or now another process). Another host's run is alive."""
    try:
        host, boot, start, pid_text = record.split()
        pid = int(pid_text)
    except ValueError:
        return True  # not a record gtag wrote: not provably dead
    if host != (socket.gethostname() or "-"):
        return True
    now_boot, now_start = _boot_and_start(pid)
    if boot != "-" and now_boot and boot != now_boot:
        return False  # written before a reboot
    if not _alive(pid):
        return False
    return start == "-" or not now_start or start == now_start


def remove_dead_slot_folders(folder: str | None = None) -> list[Path]:
    """Remove the slot folders that killed runs (kill -9 of gtag) left in the temp folder: those
    whose OWNER is provably gone at once, those without one (an older gtag's) once an hour old. A
    live run's folder, and anything not a real folder of this user, is left alone."""
    removed = []
    root = Path(folder or tempfile.gettempdir())
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith(SLOTS_PREFIX)]
    except OSError:
        return []
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
            if not e.is_dir(follow_symlinks=False) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
                continue
            try:
                dead = not owner_alive((Path(e.path) / OWNER_FILE).read_text())
            except FileNotFoundError:
                dead = time.time() - st.st_mtime >= STALE_SLOTS_SECONDS
            if dead:
                shutil.rmtree(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


# What a worker needs before its first file, imported once by the fork server (see worker_context).
WORKER_PRELOAD = ["gtag.predict", "soundfile", "soxr"]


# What an early-forked worker imports first (see WorkerPool): what it needs after the fork.
FORK_PRELOAD = ("onnxruntime",)


def fork_is_safe() -> bool:
    """Whether this process may be forked plainly, workers and all: on Linux, while it runs one thread
    and has not imported ONNX Runtime. A fork copies only the calling thread, so a lock another
    thread held stays locked in the child; ONNX Runtime starts a thread when it is imported, and its
    sessions hold thread pools. Native threads count too (read from /proc, not ``threading``)."""
    if not sys.platform.startswith("linux") or "onnxruntime" in sys.modules:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def worker_context():
    """The multiprocessing context of `--jobs` workers started where ``fork_is_safe`` is not (a pool
    rebuilt after a crash: gtag holds ONNX Runtime sessions and their threads by then, and ORT is not
    fork-safe). On Linux, a fork server: a fresh
    process, started as spawn starts one, imports WORKER_PRELOAD once (numpy, the decoders, gtag; not
    ONNX Runtime, which gtag imports only to load a model), and each worker is forked from it, so
    workers do not each pay those imports again. Elsewhere (macOS's system libraries are not fork-safe
    either, Windows has no fork), spawn."""
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


class WorkerPool:
    """A ProcessPoolExecutor that can say who died, and be stopped at once.

    ``fork=True`` asks for the cheapest start: where ``fork_is_safe`` (gtag tag creates its pool
    before it imports ONNX Runtime), every worker is forked from this process at once, and inherits
    its imports (numpy, the decoders, gtag) instead of a fork server importing them all again:
    on 2 cores that server's ~0.4 s of CPU competed with the parent's own start. Otherwise, and for
    every pool a ``restart`` makes (the parent holds ONNX Runtime by then), ``worker_context``."""

    def __init__(self, jobs: int, fork: bool = False):
        self.jobs = max(1, jobs)
        self._slots = tempfile.mkdtemp(prefix=SLOTS_PREFIX)
        # Who made it: a later run removes it at once if this one is killed (remove_dead_slot_folders).
        (Path(self._slots) / OWNER_FILE).write_text(owner_record())
        self._procs: dict[int, multiprocessing.Process] = {}
        self._closed = False
        self.forked = fork and fork_is_safe()
        self._pool = self._start(self.forked)

    def _start(self, fork: bool = False) -> ProcessPoolExecutor:
        # A plain fork only while fork_is_safe: once the parent holds ONNX Runtime sessions and their
        # threads, a forked child that creates sessions of its own can crash (ORT is not fork-safe).
        ctx = multiprocessing.get_context("fork") if fork else worker_context()
        pool = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker,
                                   initargs=(os.getpid(), self._slots, os.environ.get(CRASH_HOOK_ENV),
                                             FORK_PRELOAD if fork else ()))
        if fork:
            # With fork, the executor forks every worker at its first submit, from the thread that
            # submits, before it starts its manager thread: now, while this process is one thread.
            pool.submit(int)
            self._procs.update(pool._processes or {})
        return pool

    def submit(self, fn, path, *args) -> Future:
        fut = self._pool.submit(run_task, fn, path, *args)
        self._procs.update(getattr(self._pool, "_processes", None) or {})  # to read exit codes later
        return fut

    def post_mortem(self) -> dict[str, str]:
        """After the pool broke: the files that dead workers were analysing, each with how its
        worker ended. Waits for the broken pool to be torn down; call ``restart`` next."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        found: dict[str, tuple[int, int | None]] = {}
        for slot in Path(self._slots).iterdir():
            if slot.suffix == ".tmp" or not slot.name.isdigit():
                continue
            pid = int(slot.name)
            proc = self._procs.get(pid)
            found[os.fsdecode(slot.read_bytes())] = (pid, proc.exitcode if proc is not None else None)
            slot.unlink(missing_ok=True)
        # The executor terminates (SIGTERM) the surviving workers of a broken pool: their files
        # are victims, not causes, unless no worker died of anything else.
        term = -signal.SIGTERM
        causes = {p: code for p, (_, code) in found.items() if code != term}
        if not causes:
            causes = {p: code for p, (_, code) in found.items()}
        return {p: describe_exit(code) for p, code in causes.items()}

    def restart(self) -> None:
        self._procs.clear()
        self._pool = self._start()

    def stop(self) -> None:
        """Stop now: cancel what is queued, kill running workers, wait until they are gone. Does
        nothing once the pool is closed or stopped."""
        if self._closed:
            return
        self._closed = True
        # shutdown(wait=False) forgets the manager thread and the processes, so take them first:
        # a later shutdown(wait=True) would not wait, and a manager thread still closing its wake-up
        # pipe while the interpreter exits makes concurrent.futures' atexit hook print an
        # "OSError: Bad file descriptor" traceback (CPython 3.11).
        manager = getattr(self._pool, "_executor_manager_thread", None)
        procs = list(self._procs.values()) + list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            try:
                if p.is_alive():
                    p.kill()
            except (OSError, ValueError, AttributeError):
                pass
        if manager is not None and manager.is_alive():
            manager.join(timeout=30)  # bounded: a stop must never hang the exit
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._slots, ignore_errors=True)

    def close(self) -> None:
        """Let the workers finish what was submitted, then end them (nothing once closed or stopped)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._slots, ignore_errors=True)
