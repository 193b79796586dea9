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
    # A non-UTF-8 name (its bytes kept as surrogates) cannot be stored as SQLite text as it is.
    key = os.fsencode(path.resolve()).decode("utf-8", "backslashreplace")
    return key, st.st_size, st.st_mtime_ns


def file_identity(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime_ns) of ``path``: what changes when another program replaces or
    rewrites the file. Taken before an analysis and compared after it. None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CacheError(Exception):
    """The cache file cannot be used (not SQLite, unwritable, a folder); the message says what
    to do instead."""


COLUMNS = ["path", "signature", "size", "mtime_ns", "result", "updated"]


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# SQLite's application_id of gtag's cache files ("gtag" in ASCII): set on every cache gtag opens,
# so that a database of another program (a beets library.db given to --cache by mistake) is never
# taken for one. Caches made before the mark are recognised by their exact tables (see is_gtag_cache).
APPLICATION_ID = 0x67746167


def _layouts() -> dict[str, list[tuple]]:
    """Each table gtag makes, as ``PRAGMA table_info`` describes it (name, type, not null, pk)."""
    mem = sqlite3.connect(":memory:")
    try:
        for schema in (SCHEMA, EMBED_SCHEMA):
            mem.execute(schema)
        return {t: _table_info(mem, t) for t in ("predictions", "embeddings")}
    finally:
        mem.close()


def _table_info(db: sqlite3.Connection, table: str) -> list[tuple]:
    return [(r[1], r[2].upper(), r[3], r[5]) for r in db.execute(f'PRAGMA table_info("{table}")')]


def foreign_tables(db: sqlite3.Connection) -> list[str] | None:
    """None when ``db`` is gtag's cache, or empty (a new file); else the names of the tables that
    make it another program's. gtag's: marked with APPLICATION_ID, or unmarked (a cache of a gtag
    from before the mark) with no other tables than gtag's own, each with exactly gtag's columns."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    if app_id == APPLICATION_ID:
        return None
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    if app_id != 0:
        return tables or [f"application id {app_id:#x}"]
    layouts = _layouts()
    foreign = [t for t in tables if t not in layouts or _table_info(db, t) != layouts[t]]
    return foreign or None


def connect(path: Path, prepare) -> sqlite3.Connection:
    """gtag's SQLite cache file at ``path`` (created), in WAL mode, after ``prepare(db)`` made its
    tables; CacheError (saying what to do instead) when the file cannot be used, or is another
    program's database (``foreign_tables``), which is then neither changed nor put in WAL mode."""
    try:
        if path.is_dir():
            raise CacheError(f"cache {path} is a folder, not a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection in the main process; WAL keeps readers and the single writer apart and
        # makes each commit durable, so an interrupted run keeps everything finished before it.
        db = sqlite3.connect(str(path), timeout=30)
        try:
            foreign = foreign_tables(db)
            if foreign is not None:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise CacheError(f"cache {path} is not a gtag cache but another program's database "
                                 f"(it holds {shown}), left as it is")
            db.execute("PRAGMA journal_mode=WAL")
            prepare(db)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db
    except CacheError as exc:
        raise CacheError(f"{exc}; pass --no-cache, or --cache with another file") from None
    except (sqlite3.Error, OSError) as exc:
        raise CacheError(f"cannot use the cache {path} ({_reason(exc)}); pass --no-cache, "
                         "or --cache with another file") from None


class PredictionCache:
    """get/put of JSON-able results keyed by file identity and a model signature.

    The cache only saves time, so it never stops a run once open: a table of an older layout is
    rebuilt, a malformed row counts as a miss, and a write that fails (a full disk) turns the cache
    off for the rest of the run (``broken`` says why) instead of failing files.
    """

    def __init__(self, path: Path, signature: str):
        self.path = path
        self.signature = signature
        self.broken: str | None = None

        def prepare(db: sqlite3.Connection) -> None:
            cols = [r[1] for r in db.execute("PRAGMA table_info(predictions)")]
            if cols and cols != COLUMNS:  # a (marked) cache of another gtag version: it only saves time
                db.execute("DROP TABLE predictions")
            db.execute(SCHEMA)

        self.db = connect(path, prepare)

    def get(self, path: Path) -> dict | None:
        if self.broken:
            return None
        try:
            key, size, mtime = _stat_key(path)
        except (OSError, ValueError):
            return None
        try:
            row = self.db.execute(
                "SELECT size, mtime_ns, result FROM predictions WHERE path=? AND signature=?", (key, self.signature)
            ).fetchone()
        except sqlite3.Error as exc:
            self._break(exc)
            return None
        if row is None or row[0] != size or row[1] != mtime:
            return None
        try:
            result = json.loads(row[2])
        except (TypeError, ValueError):
            return None  # a malformed row: analyse again, and the put overwrites it
        return result if isinstance(result, dict) else None

    def put(self, path: Path, result: dict, identity: tuple[int, int, int, int] | None = None) -> None:
        """Store ``result`` under the file's current size and mtime, or under ``identity``'s (from
        ``file_identity``, taken before the analysis) so that a file changed meanwhile is never
        keyed by content that was not analysed."""
        if self.broken:
            return
        try:
            key, size, mtime = _stat_key(path)
        except (OSError, ValueError):
            return
        if identity is not None:
            size, mtime = identity[2], identity[3]
        try:
            self.db.execute(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                (key, self.signature, size, mtime, json.dumps(result), time.time()),
            )
            self.db.commit()
        except sqlite3.Error as exc:
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        self.broken = f"cache {self.path} stopped working ({_reason(exc)}); predictions were not saved"

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


EMBED_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    content TEXT NOT NULL,
    backbone TEXT NOT NULL,
    rows INTEGER NOT NULL,
    dims INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (content, backbone)
)
"""


class EmbeddingCache:
    """Embeddings (float16 rows) by file content and backbone, in a table of gtag's cache file
    (`gtag learn`). Like the prediction cache it only saves time: a damaged row is a miss, and a
    failed write is skipped."""

    def __init__(self, path: Path):
        self.db = connect(path, lambda db: db.execute(EMBED_SCHEMA))
        self._offered: list[tuple[str, str]] = []  # every put's key, recorded before it is written

    def get(self, content: str, backbone: str):
        import numpy as np

        try:
            row = self.db.execute("SELECT rows, dims, data FROM embeddings WHERE content=? AND backbone=?",
                                  (content, backbone)).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        rows, dims, data = row
        if not isinstance(data, bytes) or len(data) != 2 * rows * dims:  # damaged: recompute
            return None
        return np.frombuffer(data, dtype=np.float16).reshape(rows, dims).astype(np.float32)

    def put(self, content: str, backbone: str, emb):
        """Store ``emb``; returns it as ``get`` will (float16-rounded, as float32), which callers use
        in place of ``emb``: a first run and a re-run from the cache then learn the same model."""
        import numpy as np

        e = np.asarray(emb, np.float16)
        self._offered.append((content, backbone))
        try:
            self.db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                            (content, backbone, e.shape[0], e.shape[1], e.tobytes()))
            self.db.commit()
        except sqlite3.Error:
            pass  # a full disk: the embedding is recomputed next time
        return e.astype(np.float32)

    def stored_since_open(self) -> int:
        """How many of the embeddings put since this cache was opened it holds now. Read back from
        the database, not counted along: a Ctrl-C can land between a write and any count of it
        (`gtag learn` says on Ctrl-C how many a re-run will not have to compute)."""
        found = 0
        try:
            self.db.commit()  # a Ctrl-C between a put's insert and its commit: the row is whole, keep it
        except sqlite3.Error:
            pass
        for key in set(self._offered):
            try:
                found += self.db.execute("SELECT 1 FROM embeddings WHERE content=? AND backbone=?", key).fetchone() is not None
            except sqlite3.Error:
                pass
        return found

    def close(self) -> None:
        self.db.close()
