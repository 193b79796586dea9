"""A small SQLite cache of predictions, so re-runs and interrupted runs skip finished files.

Key: the file's resolved path, size and modification time (like rsync and beets), plus a signature
of the models and settings that produced the prediction. When gtag writes a tag it records the new
size and mtime, so a re-run over a library gtag just tagged is a cache hit, not a re-analysis.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    path TEXT NOT NULL,
    signature TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    result TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (path, signature)
)
"""


def default_cache_path() -> Path:
    """$GTAG_CACHE, else the user's cache folder (e.g. ~/.cache/gtag/cache.sqlite3)."""
    env = os.environ.get("GTAG_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gtag")) / "cache.sqlite3"


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def file_identity(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime_ns) of ``path``: what changes when another program replaces or
    rewrites the file. Taken before an analysis and compared after it. None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PredictionCache:
    """get/put of JSON-able results keyed by file identity and a model signature."""

    def __init__(self, path: Path, signature: str):
        self.path = path
        self.signature = signature
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection in the main process; WAL keeps readers and the single writer apart and
        # makes each commit durable, so an interrupted run keeps everything finished before it.
        self.db = sqlite3.connect(str(path), timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)
        self.db.commit()

    def get(self, path: Path) -> dict | None:
        try:
            key, size, mtime = _stat_key(path)
        except OSError:
            return None
        row = self.db.execute(
            "SELECT size, mtime_ns, result FROM predictions WHERE path=? AND signature=?", (key, self.signature)
        ).fetchone()
        if row is None or row[0] != size or row[1] != mtime:
            return None
        return json.loads(row[2])

    def put(self, path: Path, result: dict, identity: tuple[int, int, int, int] | None = None) -> None:
        """Store ``result`` under the file's current size and mtime, or under ``identity``'s (from
        ``file_identity``, taken before the analysis) so that a file changed meanwhile is never
        keyed by content that was not analysed."""
        try:
            key, size, mtime = _stat_key(path)
        except OSError:
            return
        if identity is not None:
            size, mtime = identity[2], identity[3]
        self.db.execute(
            "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
            (key, self.signature, size, mtime, json.dumps(result), time.time()),
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()
