"""Safe use of librosa's numba kernels: a gtag-owned on-disk cache, written by one process at a time.

Why (issue 17): librosa compiles its kernels with numba and ``cache=True``, so by default numba
reads and writes compiled code next to librosa's source (``site-packages/librosa/**/__pycache__``).
numba's cache has no cross-process locking: ``IndexDataCacheFile.save`` loads the index, picks a
data file name, writes the index, then the data, each step atomic on its own but not the whole
(numba#4807, #10128). A fresh install's first ``gtag tag`` starts N worker processes that all
import librosa and compile and save the same entries at the same moment. A cache that a run like
that left behind (kept in ``shared/notes/numba-cache-crash``) made every later process that called
``librosa.estimate_tuning`` die with SIGSEGV until someone deleted it; the race was seen 4 times in
4 fresh installs, then 0 in 8 tries, so no fix may depend on timing. (What we could establish from
those files: the index is well formed and maps each signature to a data file that holds code of
that very signature, so the index/data mix-up that the save sequence above allows is not what broke
those files; on this project's AMD build machine the same files, re-keyed to its CPU, did not
crash. We did not pin the mechanism down further, hence a defence that does not depend on it.)

The defence, by construction:

1. gtag points numba at a cache folder of its own (``NUMBA_CACHE_DIR``, set before librosa is
   imported, inherited by worker processes), keyed by the numba, librosa and Python versions.
   librosa's in-tree cache, whoever wrote it and however broken, is never read again.
2. Every read and write of numba's cache in a gtag process holds a lock on a file in that folder
   (``fcntl.flock``: shared to read, exclusive to write), so no process ever reads an index or
   data file that another is half-way through updating, and two saves never interleave.
3. The first import of librosa (which compiles its eager kernels) runs under the exclusive lock
   until a marker says it has been done once: one process compiles and writes, the others wait
   and then load what it wrote. Nothing here depends on timing.

When numba's internals are not the ones this was written against (the lock wraps
``IndexDataCacheFile.save``/``load``), or the cache folder cannot be created or locked (no
``fcntl``, read-only home), each process gets a private temporary cache folder instead: slower
(every process compiles once) but still never shared.

Everything that imports librosa in gtag and its training goes through ``import_librosa()``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

LOCK_NAME = ".gtag-numba.lock"
_state: dict = {"dir": None, "mode": None}
_guard = threading.RLock()  # one process-wide lock state: nested acquisitions must not deadlock
_held = {"depth": 0, "exclusive": False, "fd": None}


def _version(dist: str) -> str:
    from importlib import metadata  # ~10 ms of imports, needed only when librosa is

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def default_cache_dir() -> Path:
    """The user cache folder for numba's compiled code, one per numba/librosa/Python version."""
    from platformdirs import user_cache_dir

    key = f"numba-{_version('numba')}_librosa-{_version('librosa')}_py{sys.version_info[0]}{sys.version_info[1]}"
    return Path(user_cache_dir("gtag")) / "numba" / key


def _numba_as_expected() -> bool:
    try:
        from numba.core import caching, config
    except ImportError:
        return False
    cls = getattr(caching, "IndexDataCacheFile", None)
    return (hasattr(config, "CACHE_DIR") and cls is not None
            and all(callable(getattr(cls, m, None)) for m in ("save", "load")))


@contextlib.contextmanager
def cache_lock(exclusive: bool):
    """Hold the cross-process lock of the cache folder (re-entrant within a process; a shared hold
    is upgraded to exclusive only at the outermost level, never nested)."""

    with _guard:
        if _held["depth"]:
            if exclusive and not _held["exclusive"]:
                raise RuntimeError("numba cache lock: cannot upgrade a shared hold")  # never happens
            _held["depth"] += 1
            try:
                yield
            finally:
                _held["depth"] -= 1
            return
        fd = _locked_fd(exclusive)
        try:
            _held.update(depth=1, exclusive=exclusive, fd=fd)
            try:
                yield
            finally:
                _held.update(depth=0, exclusive=False, fd=None)
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def lock_path(cache_dir: str | os.PathLike) -> Path:
    """The lock file of a cache folder: beside it, not in it, so that deleting the folder (which the
    README allows) does not delete the lock other processes hold."""
    d = Path(cache_dir)
    return d.parent / f"{LOCK_NAME}-{d.name}"


def _locked_fd(exclusive: bool) -> int:
    """A descriptor of the lock file, flocked. Retries when the file was deleted or replaced while
    we waited: a lock on a file nobody else can open any more would exclude nobody."""
    import fcntl

    path = lock_path(_state["dir"])
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            mine = os.fstat(fd)
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None
            if named is not None and (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino):
                Path(_state["dir"]).mkdir(parents=True, exist_ok=True)  # deleted meanwhile: numba writes here
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _patch_numba() -> None:
    """Make numba's index+data updates and reads atomic across processes (see the module doc)."""
    from numba.core import caching

    cls = caching.IndexDataCacheFile
    if getattr(cls, "_gtag_locked", False):
        return
    save, load = cls.save, cls.load

    def locked_save(self, key, data):
        with cache_lock(exclusive=True):
            return save(self, key, data)

    def locked_load(self, key):
        with cache_lock(exclusive=False):
            return load(self, key)

    cls.save, cls.load = locked_save, locked_load
    cls._gtag_locked = True


def _private_dir() -> str:
    d = tempfile.mkdtemp(prefix="gtag-numba-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def _point_numba_at(path: str) -> None:
    os.environ["NUMBA_CACHE_DIR"] = path  # inherited by worker processes; read by numba's config
    if "numba" in sys.modules or "numba.core.config" in sys.modules:
        from numba.core import config

        config.CACHE_DIR = path  # numba already imported: its config was read before


def prepare() -> str:
    """Point numba at gtag's cache (or a private one) and lock its cache; idempotent. Returns the
    mode: "shared" (the locked user cache folder) or "private" (a per-process temporary folder).
    Must run before librosa is imported."""
    with _guard:
        if _state["mode"]:
            return _state["mode"]
        mode, path = "private", None
        if _numba_as_expected():
            try:
                import fcntl  # noqa: F401  (POSIX only)

                # An explicit NUMBA_CACHE_DIR (the user's, or one a parent gtag process set) is kept.
                path = os.environ.get("NUMBA_CACHE_DIR") or str(default_cache_dir())
                Path(path).mkdir(parents=True, exist_ok=True)
                _state["dir"] = path
                with cache_lock(exclusive=False):
                    pass  # the lock file can be created and locked here
                mode = "shared"
            except (ImportError, OSError):
                path = None
        if path is None or mode == "private":
            path = _private_dir()
        _state["dir"] = path
        _point_numba_at(path)
        if mode == "shared":
            _patch_numba()
        _state["mode"] = mode
        return mode


def import_librosa():
    """librosa, imported safely: call this instead of ``import librosa`` anywhere in gtag."""
    if "librosa" in sys.modules and _state["mode"]:
        return sys.modules["librosa"]
    mode = prepare()
    if mode == "shared":
        marker = Path(_state["dir"]) / ".gtag-librosa-imported"
        if not marker.exists():
            with cache_lock(exclusive=True):  # one process compiles librosa's eager kernels
                import librosa.core.pitch  # noqa: F401  (guvectorize: compiles at import)

                marker.touch()
    import librosa

    return librosa
