"""The hidden temporary copies a safe write works on: created beside the original, locked while in
use, copied with the original's holes, owner and mode, and swept when a killed run left them.
"""

from __future__ import annotations

import errno
import os
import re

try:
    import fcntl  # locks on the temporary copies (POSIX)
except ImportError:  # pragma: no cover - Windows
    fcntl = None
import shutil
import signal
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO

from gtag.tags.formats import TagError, _reason

# Temporary copies are hidden and recognisable, so a crash that kills the process outright (the
# one case the cleanup below cannot handle) leaves something a user can identify and delete.
TEMP_PREFIX = ".gtag-"
# The copies a write holds locked (flock) while it runs: a later run removes an unlocked one at once,
# since its owner is provably gone (a kill -9 releases the lock). ".gtag-" + 8 characters without
# a dash: a copy of an older gtag (or of a filesystem without locks), removed after an hour.
LOCKED_TEMP_PREFIX = TEMP_PREFIX + "lk-"


def _temp_copy(real: Path, path: str | os.PathLike[str], temps: list[Path]) -> tuple[int, str]:
    """A new empty temporary file beside ``real`` (same folder: the final rename stays on one
    filesystem and is atomic; same suffix: mutagen's extension-based detection stays the same),
    locked (see ``remove_stale_temp_files``) and recorded in ``temps`` before it exists, so that no
    stop signal can leave a copy the caller does not know of. SIGINT, SIGTERM and SIGHUP also wait
    while it is made: Python runs signal handlers in the main thread only, so holding them there is
    enough (a signal mask is not: the kernel gives a process-directed signal to any thread that does
    not block it, an OpenBLAS or ONNX Runtime one, and Python then runs the handler at once)."""
    held: list[int] = []
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
            if signal.getsignal(s) not in (signal.SIG_IGN, None):
                old[s] = signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        fd, name = _new_temp(real, LOCKED_TEMP_PREFIX, temps)
        if not _lock(fd, fcntl.LOCK_EX if fcntl else 0):  # no locks here (some network shares): the age rule
            os.close(fd)
            os.unlink(name)
            fd, name = _new_temp(real, TEMP_PREFIX, temps)
    except OSError as exc:
        raise TagError(f"{path}: cannot create a temporary copy ({_reason(exc)})") from exc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in dict.fromkeys(held):  # delivered now, to the handler the caller had
            signal.raise_signal(s)
    return fd, name


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile.mkstemp's, so _TEMP_NAME matches


def _new_temp(real: Path, prefix: str, temps: list[Path]) -> tuple[int, str]:
    """Create ``prefix`` + 8 random characters + ``real``'s suffix beside ``real`` (O_EXCL, never
    through a symlink), its name appended to ``temps`` before the file exists."""
    import secrets

    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = real.parent / f"{prefix}{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}{real.suffix}"
        temps.append(name)
        try:
            return os.open(name, flags, 0o600), str(name)
        except FileExistsError:
            temps.remove(name)  # another file's name: never to be removed as ours
        except BaseException:
            if not os.path.lexists(name):
                temps.remove(name)
            raise
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(real.parent))


def _copy_keeping_holes(src: BinaryIO, dst: BinaryIO, st: os.stat_result) -> None:
    """Copy ``src`` into ``dst`` (both open at 0). A sparse file (fewer blocks than its size: a
    FLAC followed by gigabytes of holes) keeps its holes: only its data ranges are copied, found
    with SEEK_DATA/SEEK_HOLE; a plain copy would write every zero out to disk."""
    sparse = getattr(st, "st_blocks", None) is not None and st.st_blocks * 512 < st.st_size
    if not sparse or not hasattr(os, "SEEK_DATA"):
        shutil.copyfileobj(src, dst)
        return
    fd, pos, size = src.fileno(), 0, st.st_size
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole from here to the end
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        src.seek(start)
        dst.seek(start)
        left = end - start
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
        pos = end
    dst.truncate(size)  # the trailing hole
    dst.seek(0)


def _lock(fd: int, how: int) -> bool | None:
    """flock ``fd``: True when locked, None when another process holds it (LOCK_NB), False when
    this filesystem or system has no such locks."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, how)
        return True
    except BlockingIOError:
        return None
    except OSError:
        return False


def _leftover(tmp: Path) -> bool:
    """Remove an unrenamed temporary copy; True when it cannot be removed (a read-only folder)."""
    try:
        tmp.unlink(missing_ok=True)
        return False
    except OSError:
        return os.path.lexists(tmp)


def _with_cleanup(msg: str, tmp: Path) -> str:
    return f"{msg}; its temporary copy {tmp.name} could not be removed (a later run removes it)"


def _copy_metadata(fd: int, real: Path, before: os.stat_result) -> None:
    """Owner (where allowed), mode bits and extended attributes of the original, set on the open
    temporary copy. The times are not copied, so backup tools and scanners see the change."""
    if hasattr(os, "fchown"):
        try:
            os.fchown(fd, before.st_uid, before.st_gid)
        except OSError:
            pass  # only root may give a file away: ours is fine then
    if hasattr(os, "fchmod"):
        os.fchmod(fd, stat.S_IMODE(before.st_mode))  # after chown, which may clear set-id bits
    if hasattr(os, "listxattr"):
        try:
            for name in os.listxattr(real):
                try:
                    os.setxattr(fd, name, os.getxattr(real, name))
                except OSError:
                    pass  # e.g. security.* attributes only root may set
        except OSError:
            pass  # a filesystem without extended attributes
    if os.utime in os.supports_fd:
        os.utime(fd)


# Names of gtag's temporary copies: tempfile.mkstemp's eight characters between prefix and suffix.
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}(\.[^./]{1,8})?")
_LOCKED_TEMP_NAME = re.compile(re.escape(LOCKED_TEMP_PREFIX) + r"[a-z0-9_]{8}(\.[^./]{1,8})?")
# An unlocked copy this young and still empty may be one whose write has just made it and not yet
# locked it (mkstemp, then flock): left for a later run.
FRESH_EMPTY_SECONDS = 60.0
# Older than this, a temporary copy cannot belong to a running gtag (a write takes seconds).
STALE_TEMP_SECONDS = 3600.0


def remove_stale_temp_files(folder: str | os.PathLike[str], dry_run: bool = False,
                            older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """gtag's own temporary copies in ``folder`` left by a killed run, and removed (unless
    ``dry_run``): regular files named ``.gtag-lk-xxxxxxxx.ext`` that no process holds locked (their
    writer is gone: at once), and ``.gtag-xxxxxxxx.ext`` (an older gtag's, or where there are no
    locks) not modified for ``older_than`` seconds. Symlinks and every other name are left alone,
    and so is the copy of a write that is running (its lock is held)."""
    found = []
    now = time.time()
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if _TEMP_NAME.fullmatch(e.name) or _LOCKED_TEMP_NAME.fullmatch(e.name)]
    except OSError:
        return []
    for e in sorted(entries, key=lambda e: e.name):
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if _LOCKED_TEMP_NAME.fullmatch(e.name):
                if not _ownerless(e.path, st, now, older_than):
                    continue
            elif now - st.st_mtime < older_than:
                continue
            if not dry_run:
                os.unlink(e.path)
        except OSError:
            continue
        found.append(Path(e.path))
    return found


def _ownerless(path: str, st: os.stat_result, now: float, older_than: float) -> bool:
    """Whether no running write holds the locked-style copy at ``path`` (``st``: its lstat)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        mine = os.fstat(fd)
        if (mine.st_dev, mine.st_ino) != (st.st_dev, st.st_ino):
            return False  # replaced meanwhile: not the file that was looked at
        # LOCK_SH: on NFS flock is emulated by fcntl locks, where a read-only descriptor takes a
        # shared lock only. Any lock held by the writer (exclusive) refuses it.
        held = _lock(fd, (fcntl.LOCK_SH | fcntl.LOCK_NB) if fcntl else 0)
    finally:
        os.close(fd)
    if held is None:
        return False  # a write in progress
    if held is False:  # no locks on this filesystem: the age rule
        return now - st.st_mtime >= older_than
    return st.st_size > 0 or now - st.st_mtime >= FRESH_EMPTY_SECONDS


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; a folder cannot be opened on Windows, nor synced on some mounts."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # the file is already replaced; failing now would wrongly report a failed write
