"""gtag.audio.numba_cache: librosa's numba kernels never read librosa's in-tree cache, and the cache gtag
uses instead is written by one process at a time (issue 17).

These tests read numba's own cache files (index and data are pickles) to set up and to inspect
caches; gtag itself never does.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gtag.audio import numba_cache

from .conftest import SHARED, need

REPO = Path(__file__).resolve().parents[1]
KEPT = SHARED / "notes" / "numba-cache-crash"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **extra)
    return env


def _python(code: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cache_dir_is_keyed_by_versions(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = numba_cache.default_cache_dir()
    import numba

    assert d.parent == tmp_path / "gtag" / "numba"
    assert f"numba-{numba.__version__}" in d.name and "librosa-" in d.name
    assert d.name.endswith(f"_py{sys.version_info[0]}{sys.version_info[1]}")


def test_numba_is_pointed_at_gtags_locked_cache(tmp_path: Path) -> None:
    r = _python("""
        import os
        import numba.core.caching as c
        from gtag.audio import numba_cache
        numba_cache.prepare()
        from numba.core import config
        print(numba_cache.prepare(), config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"], config.CACHE_DIR)
        print(c.IndexDataCacheFile._gtag_locked)
    """, _env(XDG_CACHE_HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    mode, same, where = r.stdout.split("\n")[0].split()
    assert (mode, same) == ("shared", "True")
    assert Path(where).parent == tmp_path / "gtag" / "numba"
    assert numba_cache.lock_path(where).exists()
    assert r.stdout.split("\n")[1] == "True"


def test_private_cache_when_numba_is_not_as_expected(tmp_path: Path) -> None:
    """If numba's cache internals change, each process compiles into a folder of its own."""
    r = _python("""
        import os
        from gtag.audio import numba_cache
        numba_cache._numba_as_expected = lambda: False
        print(numba_cache.prepare(), os.environ["NUMBA_CACHE_DIR"])
    """, _env(XDG_CACHE_HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    mode, where = r.stdout.split()
    assert mode == "private" and Path(where).name.startswith("gtag-numba-")
    assert not Path(where).exists()  # removed when the process ended
    assert not (tmp_path / "gtag").exists()


LOCK_SPY = """
import fcntl, os, sys
from gtag.audio import numba_cache
numba_cache.prepare()
import numba.core.caching as c
lock = str(numba_cache.lock_path(os.environ["NUMBA_CACHE_DIR"]))

def probe(mode):
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return "free"
    except BlockingIOError:
        return "held"
    finally:
        os.close(fd)

def spy(name, mode):
    real = getattr(c.IndexDataCacheFile, name)
    def wrapper(self, *args):
        print(name, probe(mode))
        return real(self, *args)
    setattr(c.IndexDataCacheFile, name, wrapper)

spy("_save_index", fcntl.LOCK_SH)  # a writer holds the lock exclusively: no one may even read
spy("_save_data", fcntl.LOCK_SH)
spy("_load_index", fcntl.LOCK_EX)  # a reader holds it shared: no one may write
import numba
import numpy as np

@numba.njit(cache=True)
def f(x):
    return x + 1

assert f(np.float32(1)) == 2
"""


def test_cache_reads_and_writes_hold_the_lock(tmp_path: Path) -> None:
    """While numba reads its cache index, no process can write it; while it writes the index or
    the data, no process can read either: the read-pick-write sequence is atomic."""
    (tmp_path / "spy.py").write_text(LOCK_SPY)
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    first = subprocess.run([sys.executable, str(tmp_path / "spy.py")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.split("\n")
    assert {"_save_index held", "_save_data held"} <= set(lines)
    assert all(line.endswith("held") for line in lines if line), first.stdout
    again = subprocess.run([sys.executable, str(tmp_path / "spy.py")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert "_load_index held" in again.stdout.split("\n")  # the second run reads what the first wrote


def _rekey_to_this_machine(nbi: Path) -> None:
    """Give the kept index entries this machine's CPU key, so that numba, reading librosa's
    in-tree cache, would load the kept code here as it did on the machine that wrote it."""
    from numba.core.registry import cpu_target

    magic = cpu_target.target_context.codegen().magic_tuple()
    with nbi.open("rb") as f:
        version = pickle.load(f)
        stamp, overloads = pickle.loads(f.read())
    overloads = {(k[0], magic, k[2]): v for k, v in overloads.items()}
    with nbi.open("wb") as f:
        pickle.dump(version, f, protocol=-1)
        f.write(pickle.dumps((stamp, overloads), protocol=-1))


@pytest.mark.slow
def test_a_corrupt_librosa_cache_in_tree_is_never_read(tmp_path: Path) -> None:
    """The kept cache that made `estimate_tuning` segfault, in the __pycache__ of a private copy of
    librosa put first on sys.path: without gtag numba loads it, with gtag it is never read and
    the 57 features (estimate_tuning, chroma) come out."""
    need(KEPT)
    import librosa

    site = tmp_path / "site"
    shutil.copytree(Path(librosa.__file__).parent, site / "librosa", ignore=shutil.ignore_patterns("__pycache__"))
    pycache = site / "librosa" / "core" / "__pycache__"
    pycache.mkdir()
    for f in KEPT.glob("pitch._pi_wrapper-*"):
        shutil.copyfile(f, pycache / f.name)
    [nbi] = pycache.glob("*.nbi")
    _rekey_to_this_machine(nbi)
    env = _env(NUMBA_DEBUG_CACHE="1", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])

    # The setup is sound: plain librosa loads the kept code from its in-tree cache.
    plain = _python("import librosa.core.pitch, librosa; print(librosa.__file__)", env)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert f"data loaded from '{pycache / 'pitch._pi_wrapper'}" in plain.stdout

    r = _python("""
        import numpy as np
        from gtag.audio import features
        y = np.random.default_rng(0).standard_normal(5 * 22050).astype(np.float32)
        an = features.analyze(y, 22050, 33075, want_features=True, want_mel=False)
        assert an.features.shape == (2, 57) and np.isfinite(an.features).all()
        import librosa
        print("librosa from", librosa.__file__)
    """, env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"librosa from {site / 'librosa'}" in r.stdout
    assert str(site) + os.sep not in "".join(line for line in r.stdout.splitlines() if "loaded from" in line)
    assert str(tmp_path / "xdg" / "gtag" / "numba") in r.stdout  # gtag's own cache was used


KERNEL = """
import numba
import numpy as np


@numba.njit(cache=True)
def kernel(x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = x[i] * 2 + i
    return out
"""

DTYPES = ["float32", "float64", "int64", "int32"]

WORKER = """
import sys, time
from pathlib import Path
from gtag.audio import numba_cache
numba_cache.prepare()
import numpy as np
sys.path.insert(0, sys.argv[1])
import kern
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
for dt in sys.argv[3:]:
    x = np.arange(1000, dtype=dt)
    assert np.array_equal(kern.kernel(x), x * 2 + np.arange(1000)), dt
"""


def _index_mismatches(cache: Path) -> tuple[int, list[str]]:
    """Entries of every numba index under ``cache``, and those whose data file holds code
    compiled for another signature (the corruption numba's unlocked save can produce)."""
    import numba  # noqa: F401  (unpickling numba's data needs it)

    n, bad = 0, []
    for nbi in cache.rglob("*.nbi"):
        with nbi.open("rb") as f:
            pickle.load(f)
            _, overloads = pickle.loads(f.read())
        for key, name in overloads.items():
            n += 1
            data = pickle.loads((nbi.parent / name).read_bytes())
            want = key[0].args if hasattr(key[0], "args") else key[0]
            if tuple(map(str, data[3].args)) != tuple(map(str, want)):
                bad.append(f"{key[0]} -> {name} holds {data[3]}")
    return n, bad


@pytest.mark.slow
def test_processes_compiling_at_once_leave_a_sound_cache(tmp_path: Path, monkeypatch) -> None:
    """Four processes start from an empty cache at the same instant (a barrier file) and compile
    the same cached kernel for four signatures, half of them in the opposite order, three rounds.
    Each round's cache must map every signature to its own code, and a fresh process must get
    right results from it. Without gtag's lock (the same harness, no ``prepare()``) it caught no
    corruption in 17 rounds of 4-6 processes on the 2-core build machine: the race is real in
    numba's code (read index, pick a name, write index, write data, unlocked) but rare, which is
    why the defence is a lock, not luck, and why ``test_cache_reads_and_writes_hold_the_lock``
    checks the lock itself."""
    (tmp_path / "kern.py").write_text(KERNEL)
    monkeypatch.syspath_prepend(str(tmp_path))  # numba's data files name the kernel's module
    for rnd in range(3):
        cache, go = tmp_path / f"cache{rnd}", tmp_path / f"go{rnd}"
        env = _env(NUMBA_CACHE_DIR=str(cache))
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(go),
                                   *(DTYPES if i % 2 else DTYPES[::-1])], env=env, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
        go.touch()
        for p in procs:
            assert p.wait(120) == 0, p.stderr.read()
        n, bad = _index_mismatches(cache)
        assert bad == [] and n == len(DTYPES)
        check = _python(f"""
            import sys
            import numpy as np
            sys.path.insert(0, {str(tmp_path)!r})
            import kern
            for dt in {DTYPES!r}:
                x = np.arange(1000, dtype=dt)
                assert np.array_equal(kern.kernel(x), x * 2 + np.arange(1000)), dt
            print(sum(kern.kernel.stats.cache_hits.values()))
        """, env, timeout=120)
        assert check.returncode == 0, check.stderr
        assert check.stdout.split() == [str(len(DTYPES))]  # all four loaded from the cache


def test_deleting_the_cache_folder_mid_run_keeps_the_lock(tmp_path: Path) -> None:
    """docs/safety-notes.md says the cache folder may be deleted: the lock lives beside it, so a process that
    holds it keeps excluding the others, and the folder is made again for numba to write into."""
    r = _python("""
        import fcntl, os, shutil
        from gtag.audio import numba_cache
        numba_cache.prepare()
        where = os.environ["NUMBA_CACHE_DIR"]
        with numba_cache.cache_lock(exclusive=True):
            shutil.rmtree(where)
            fd = os.open(numba_cache.lock_path(where), os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print("free")
            except BlockingIOError:
                print("held")
        with numba_cache.cache_lock(exclusive=False):
            print(os.path.isdir(where))
    """, _env(XDG_CACHE_HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["held", "True"]


@pytest.mark.slow
def test_a_feature_pass_compiles_every_kernel_under_the_exclusive_lock(tmp_path: Path) -> None:
    """From an empty cache, every kernel the 57-feature path saves is saved while this process holds
    the exclusive lock (the warm-up pass), so processes starting together never write at once."""
    r = _python("""
        import numpy as np
        from gtag.audio import features
        from gtag.audio import numba_cache
        numba_cache.prepare()
        import numba.core.caching as c
        saves = []
        real = c.IndexDataCacheFile.save
        def spy(self, key, data):
            # the spy runs before the save takes its own lock: depth 1 is a lock held around it
            saves.append(numba_cache._held["exclusive"] and numba_cache._held["depth"] >= 1)
            return real(self, key, data)
        c.IndexDataCacheFile.save = spy
        y = np.random.default_rng(1).standard_normal(22050 * 7).astype(np.float32) * 0.1
        features.window_features(y)
        print(len(saves), all(saves))
    """, _env(XDG_CACHE_HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    n, all_locked = r.stdout.split()
    assert int(n) > 0 and all_locked == "True"
