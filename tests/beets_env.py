"""A real beets library in a temporary folder, for tests/test_beets.py (beets' own test helpers
change between releases; this needs only what beets 2.7.1 and the newest one share).

``Beets.run("import", "-A", ...)`` runs a `beet` command in this process, as a fresh `beet` call
would: beets' config is rebuilt from the test's config.yaml alone (no user config, ``threaded:
no``) and every plugin is built anew, so one command's flags never leak into the next.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, SHARED, need

beets = pytest.importorskip("beets")
yaml = pytest.importorskip("yaml")

FORMATS = FIXTURES / "formats"
# A one-minute electronic clip (outside GTZAN's genres) on which the shipped models abstain.
# A real electronic track gtag abstains on (its vote hears "none of its genres", its MSD tags are not
# sure of Electronic either); electronic/3.mp3 is tagged Electronic from its tags.
UNCERTAIN = SHARED / "library" / "music" / "electronic" / "41.mp3"
ELECTRONIC = SHARED / "library" / "music" / "electronic" / "3.mp3"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_genres(path: Path) -> list[str]:
    """The genres in a file, as mutagen reads them."""
    import mutagen

    f = mutagen.File(str(path), easy=True)
    return list((f.tags or {}).get("genre", []) if f is not None else [])


def set_file_genres(path: Path, genres: list[str] | None) -> None:
    import mutagen

    f = mutagen.File(str(path), easy=True)
    if genres:
        f["genre"] = genres
    elif f.tags is not None and "genre" in f.tags:
        del f["genre"]
    f.save()


class Beets:
    """One beets setup under ``root``: config folder, library folder, database, source folder."""

    def __init__(self, root: Path):
        self.root = root
        self.beetsdir = root / "beetsdir"
        self.directory = root / "music"
        self.src = root / "src"
        self.db = root / "library.db"
        for d in (self.beetsdir, self.directory, self.src):
            d.mkdir(parents=True, exist_ok=True)
        self.config: dict = {
            "directory": str(self.directory), "library": str(self.db), "threaded": False,
            "plugins": ["gtag"], "import": {"write": True, "copy": True, "log": None, "resume": False},
            "ui": {"color": False}, "create_backup_before_migrations": False,
        }

    def add(self, fixture: Path, name: str | None = None, genres: list[str] | None = ...) -> Path:
        """Copy a shared fixture (read-only) into the source folder; ``genres`` sets its tag
        (None: no genre), left out: as the fixture has it."""
        dest = self.src / (name or fixture.name)
        shutil.copyfile(need(fixture), dest)
        if genres is not ...:
            set_file_genres(dest, genres)
        return dest

    def write_config(self) -> None:
        (self.beetsdir / "config.yaml").write_text(yaml.safe_dump(self.config), encoding="utf-8")

    def env(self) -> dict[str, str]:
        return {"BEETSDIR": str(self.beetsdir), "HOME": str(self.root)}

    def run(self, *args: str) -> None:
        """`beet ARGS` in this process (raises beets' UserError as `beet` would print it)."""
        import beets.plugins
        import beets.ui

        self.write_config()
        old = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            _reset()
            beets.ui._raw_main(list(args))
        finally:
            _reset()
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def subprocess(self, *args: str) -> subprocess.CompletedProcess:
        """`beet ARGS` in a new process (the end-to-end check)."""
        self.write_config()
        env = {**os.environ, **self.env()}
        return subprocess.run([sys.executable, "-m", "beets", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    def items(self, query: str = ""):
        from beets.library import Library

        lib = Library(str(self.db), str(self.directory))
        try:
            return list(lib.items(query))
        finally:
            lib._close()


def _reset() -> None:
    """A pristine beets process: config read again from BEETSDIR, no plugin built, no listener."""
    import beets
    import beets.plugins

    beets.plugins.BeetsPlugin.listeners.clear()
    beets.plugins.BeetsPlugin._raw_listeners.clear()
    beets.plugins._instances.clear()
    beets.config.clear()
    beets.config._materialized = False


@pytest.fixture
def lib(tmp_path: Path) -> Beets:
    pytest.importorskip("beetsplug.gtag")
    return Beets(tmp_path)
