"""gtag.run.cache.PredictionCache: hits only for the same file content identity and the same models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gtag.run.cache import PredictionCache, default_cache_path

RESULT = {"labels": ["blues", "jazz"], "probabilities": [0.25, 0.75], "duration": 12.5, "truncated": False}


@pytest.fixture
def song(tmp_path: Path) -> Path:
    p = tmp_path / "song.flac"
    p.write_bytes(b"x" * 100)
    os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return p


@pytest.fixture
def cache(tmp_path: Path):
    c = PredictionCache(tmp_path / "cache.sqlite3", "sig-a")
    yield c
    c.close()


def test_put_then_get(cache: PredictionCache, song: Path) -> None:
    assert cache.get(song) is None
    cache.put(song, RESULT)
    assert cache.get(song) == RESULT


def test_put_replaces(cache: PredictionCache, song: Path) -> None:
    cache.put(song, RESULT)
    cache.put(song, {"other": 1})
    assert cache.get(song) == {"other": 1}
    assert cache.db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1


def test_changed_mtime_is_a_miss(cache: PredictionCache, song: Path) -> None:
    cache.put(song, RESULT)
    st = song.stat()
    os.utime(song, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # 1 ns later, same size
    assert cache.get(song) is None
    os.utime(song, ns=(st.st_atime_ns, st.st_mtime_ns))  # back to the recorded one
    assert cache.get(song) == RESULT


def test_changed_size_is_a_miss(cache: PredictionCache, song: Path) -> None:
    cache.put(song, RESULT)
    st = song.stat()
    with song.open("ab") as f:
        f.write(b"y")
    os.utime(song, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, one byte more
    assert cache.get(song) is None


def test_other_signature_is_a_miss(tmp_path: Path, cache: PredictionCache, song: Path) -> None:
    cache.put(song, RESULT)
    other = PredictionCache(tmp_path / "cache.sqlite3", "sig-b")
    try:
        assert other.get(song) is None
        other.put(song, {"from": "b"})
        assert other.get(song) == {"from": "b"}
    finally:
        other.close()
    assert cache.get(song) == RESULT  # both signatures are kept side by side


def test_survives_reopening(tmp_path: Path, song: Path) -> None:
    db = tmp_path / "deep" / "folder" / "cache.sqlite3"  # parent folders are created
    first = PredictionCache(db, "sig-a")
    first.put(song, RESULT)
    first.close()
    again = PredictionCache(db, "sig-a")
    try:
        assert again.get(song) == RESULT
    finally:
        again.close()


def test_key_is_the_resolved_path(tmp_path: Path, cache: PredictionCache, song: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache.put(song, RESULT)
    link = tmp_path / "link.flac"
    link.symlink_to(song)
    assert cache.get(link) == RESULT
    monkeypatch.chdir(tmp_path)
    assert cache.get(Path("song.flac")) == RESULT
    other = tmp_path / "other.flac"
    other.write_bytes(song.read_bytes())
    os.utime(other, ns=(song.stat().st_atime_ns, song.stat().st_mtime_ns))
    assert cache.get(other) is None  # same size and mtime, but another file


def test_missing_file(cache: PredictionCache, tmp_path: Path) -> None:
    gone = tmp_path / "gone.mp3"
    cache.put(gone, RESULT)  # nothing to key on: silently not cached
    assert cache.get(gone) is None


def test_default_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GTAG_CACHE", str(tmp_path / "c.sqlite3"))
    assert default_cache_path() == tmp_path / "c.sqlite3"
    monkeypatch.setenv("GTAG_CACHE", "~/gtag-cache.sqlite3")
    assert default_cache_path() == Path.home() / "gtag-cache.sqlite3"
    monkeypatch.delenv("GTAG_CACHE")
    path = default_cache_path()
    assert path.name == "cache.sqlite3" and "gtag" in path.parts


class _CommitCutByCtrlC:
    """A connection whose next commit is cut by a Ctrl-C, as one landing between a put's insert and
    its commit would."""

    def __init__(self, db):
        self.db, self.cut = db, True

    def commit(self):
        if self.cut:
            self.cut = False
            raise KeyboardInterrupt
        return self.db.commit()

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_embedding_cache_counts_what_it_holds_since_it_was_opened(tmp_path: Path) -> None:
    import numpy as np

    from gtag.run.cache import EmbeddingCache

    emb = np.ones((4, 8), np.float32)
    first = EmbeddingCache(tmp_path / "c.sqlite3")
    first.put("a", "bb", emb)
    first.close()
    cache = EmbeddingCache(tmp_path / "c.sqlite3")
    assert cache.stored_since_open() == 0  # "a" was stored by an earlier run
    cache.put("b", "bb", emb)
    cache.db = _CommitCutByCtrlC(cache.db)
    with pytest.raises(KeyboardInterrupt):
        cache.put("c", "bb", emb)
    assert cache.stored_since_open() == 2  # "b", and "c" whose insert the Ctrl-C cut before its commit
    cache.db = cache.db.db
    cache.close()
    again = EmbeddingCache(tmp_path / "c.sqlite3")
    assert all(again.get(k, "bb") is not None for k in "abc")
    again.close()
