"""The README and docs/ cannot go stale: their gtag sessions run here, and their links resolve.

A session in the docs is a fenced block right after a ``<!-- check: SETUP -->`` comment. Its
``$ `` lines are shell commands, run one after the other in a fresh home folder (``~``) that SETUP
fills with copies of ../shared's short files; the lines after a command are what it must print
(stdout and stderr together). The comparison keeps what a user relies on and lets measurements
move: whitespace runs are one space, blank lines are ignored, a line ``…`` stands for any lines,
and a percentage or a decimal number may differ (``Rock (54%`` matches ``Rock (61%``); words,
genres, statuses, counts and exit codes must be the same. Every block that shows a ``$ gtag``
command must carry such a comment, so a new example cannot skip the check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import FIXTURES, SHARED

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIBRARY = SHARED / "library" / "music"
# Pages other branches add (linked from here before they land). Remove a name once its page exists.
PENDING: set[str] = set()  # pages linked before they are written (none now)
README_MAX_LINES = 300

MARK = re.compile(r"<!--\s*check:\s*([\w-]+)\s*-->")
FENCE = re.compile(r"^(```+|~~~+)")
GAP = "…"


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Session:
    page: Path
    line: int
    setup: str
    steps: tuple[Step, ...]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}:{self.setup}"


def fenced_blocks(text: str) -> list[tuple[int, str | None, list[str]]]:
    """(line of the fence, check setup or None, the block's lines) for every fenced block."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mark = MARK.fullmatch(lines[j].strip()) if j >= 0 else None
        end = i + 1
        while end < len(lines) and not lines[end].startswith(m.group(1)):
            end += 1
        blocks.append((i + 1, mark.group(1) if mark else None, lines[i + 1:end]))
        i = end + 1
    return blocks


def parse_steps(lines: list[str]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for line in lines:
        if line.startswith("$ "):
            steps.append(Step(line[2:].strip(), ()))
        elif steps:
            steps[-1] = Step(steps[-1].command, (*steps[-1].expected, line))
    return tuple(steps)


def sessions() -> list[Session]:
    found = []
    for page in PAGES:
        for line, setup, lines in fenced_blocks(page.read_text(encoding="utf-8")):
            if setup:
                found.append(Session(page, line, setup, parse_steps(lines)))
    return found


NUMBER = re.compile(r"\d+(?:\.\d+)?%|\d+\.\d+")


def normalise(line: str) -> str:
    """A line as compared: one space for any whitespace, measured numbers as ``#``."""
    return NUMBER.sub("#", " ".join(line.split()))


def fits(expected: list[str], actual: list[str]) -> bool:
    """Whether actual is expected with each ``…`` line standing for any run of lines."""
    if not expected:
        return not actual
    if expected[0] == GAP:
        return any(fits(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and fits(expected[1:], actual[1:])


def compared(lines) -> list[str]:
    return [normalise(x) if x.strip() != GAP else GAP for x in lines if x.strip()]


# ---------------------------------------------------------------- setups: what ~ holds

def _copy(src: Path, dst: Path) -> Path:
    if not src.is_file():
        pytest.skip(f"{src} is missing")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # copyfile: the shared files are read-only, the copies must not be
    return dst


def _library(folder: str) -> list[Path]:
    return sorted((LIBRARY / folder).glob("*.mp3"), key=lambda p: int(p.stem))


def _untag(path: Path) -> None:
    """Remove a copy's genre: new music, as a user's untagged files are."""
    import mutagen

    tags = mutagen.File(path, easy=True)
    del tags["genre"]
    tags.save()


def setup_music(home: Path) -> None:
    """~/Music: the 12 s format fixtures, an ambient track with its genre removed, an empty mp3."""
    for name in ("blues_v23_untagged.mp3", "blues_v24_tagged.mp3", "classical.aiff", "hiphop.wma",
                 "jazz.m4a", "metal.ogg", "metal.opus", "rock.wv"):
        _copy(FIXTURES / "formats" / name, home / "Music" / name)
    _untag(_copy(LIBRARY / "electronic" / "5.mp3", home / "Music" / "ambient.mp3"))
    (home / "Music" / "broken.mp3").write_bytes(b"")


ALBUMS = ("Human Needs", "Italian Music of the 17th Century", "Sooner or Later")
CONFIG = """separator = "; "          # several genres as one value, for players that show one
exclude = ["disco"]       # never written
min_confidence = 0.3

[names]                   # label = "name written"
hiphop = "Hip Hop"
"""


def setup_albums(home: Path) -> None:
    """~/Music/ALBUM/: the first three tracks of three albums of the real library, and a config."""
    import mutagen

    for folder in ("classical", "pop", "rock"):
        for path in _library(folder):
            album = (mutagen.File(path, easy=True).get("album") or [""])[0]
            target = home / "Music" / album
            if album in ALBUMS and len(list(target.glob("*.mp3"))) < 3:
                _copy(path, target / path.name)
    config = home / ".config" / "gtag" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(CONFIG)


def setup_library(home: Path) -> None:
    """~/Library: 8 classical and 8 rock tracks, one "Alt. Rock", one "Ambient"; ~/Incoming: a rock
    track not among them, without its genre."""
    classical, rock = _library("classical"), _library("rock")
    for path in classical[:8] + rock[:8]:
        _copy(path, home / "Library" / path.parent.name / path.name)
    _copy(LIBRARY / "pop" / "10.mp3", home / "Library" / "pop" / "10.mp3")  # tagged Alt. Rock
    _copy(LIBRARY / "electronic" / "5.mp3", home / "Library" / "electronic" / "5.mp3")  # Ambient
    _untag(_copy(rock[8], home / "Incoming" / "rock.mp3"))


def setup_readonly(home: Path) -> None:
    """~/Music/song.mp3: an untagged blues excerpt (the session makes it read-only)."""
    _copy(FIXTURES / "formats" / "blues_v23_untagged.mp3", home / "Music" / "song.mp3")


def setup_gtzan(home: Path) -> None:
    """~/metal.00000.ogg: GTZAN's first metal clip (30 s)."""
    _copy(SHARED / "gtzan" / "audio" / "metal" / "metal.00000.ogg", home / "metal.00000.ogg")


SETUPS = {"music": setup_music, "albums": setup_albums, "library": setup_library,
          "readonly": setup_readonly, "gtzan": setup_gtzan}


# ---------------------------------------------------------------- the checks

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One prediction cache for every session: a file seen twice is analysed once (keyed by content)."""
    return tmp_path_factory.mktemp("doc-cache") / "cache.sqlite3"


def run_session(session: Session, home: Path, cache: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GTAG_", "XDG_")) and k not in ("COLUMNS", "LINES")}
    env.update(HOME=str(home), GTAG_CACHE=str(cache), PYTHONUNBUFFERED="1", COLUMNS="100",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    for step in session.steps:
        proc = subprocess.run(["bash", "-c", step.command], cwd=home, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
        shown = proc.stdout.replace(str(home), "~").splitlines()
        if not step.expected:
            assert proc.returncode == 0, f"$ {step.command} exited {proc.returncode}:\n{proc.stdout}"
        assert fits(compared(step.expected), compared(shown)), (
            f"{session.id}: the output of `$ {step.command}` no longer looks as documented.\n"
            "documented:\n" + "\n".join(step.expected) + "\n\nnow:\n" + "\n".join(shown))


@pytest.mark.parametrize("session", sessions(), ids=lambda s: s.id)
def test_documented_session_runs_as_shown(session: Session, tmp_path: Path, shared_cache: Path) -> None:
    if not FIXTURES.is_dir() or not LIBRARY.is_dir():
        pytest.skip("../shared is missing")
    assert session.setup in SETUPS, f"{session.id}: unknown check setup {session.setup!r} ({sorted(SETUPS)})"
    assert session.steps, f"{session.id}: a checked block with no `$ ` command"
    home = tmp_path / "home"
    home.mkdir()
    SETUPS[session.setup](home)
    run_session(session, home, shared_cache)


def test_every_gtag_session_in_the_docs_is_checked() -> None:
    unchecked = [f"{page.relative_to(ROOT)}:{line}"
                 for page in PAGES
                 for line, setup, lines in fenced_blocks(page.read_text(encoding="utf-8"))
                 if setup is None and any(re.match(r"\$ (gtag|gtag-train)\b", x) for x in lines)]
    assert not unchecked, f"blocks showing a `$ gtag` session without <!-- check: SETUP -->: {unchecked}"


# ---------------------------------------------------------------- the comparison itself

@pytest.mark.parametrize("expected, actual, ok", [
    (["a: — → Rock (54%, would write)"], ["a:  —  →  Rock (61%, would write)"], True),
    (["a: — → Rock (54%, would write)"], ["a: — → Pop (54%, would write)"], False),
    (["6 │ would tag"], ["5 │ would tag"], False),
    (["first", GAP, "last"], ["first", "x", "y", "last"], True),
    (["first", GAP], ["first"], True),
    (["first", "last"], ["first", "x", "last"], False),
    (["precision 1.00"], ["precision 0.88"], True),
])
def test_comparison_keeps_words_and_counts(expected, actual, ok) -> None:
    assert fits(compared(expected), compared(actual)) is ok


# ---------------------------------------------------------------- links and the README's shape

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page."""
    found, fence = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fence = not fence
        elif not fence and (m := re.match(r"#+ (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", ""))
            found.add(slug.replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        rel = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
        if not file.exists():
            if rel not in PENDING:
                broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_are_whole(page: Path) -> None:
    """A table row after a break starts a new table, which needs its own header: a stray blank line
    inside a table shows its remaining rows as plain text."""
    lines, fence, broken = page.read_text(encoding="utf-8").splitlines(), False, []
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fence = not fence
        starts = line.startswith("|") and not (i and lines[i - 1].startswith("|"))
        if not fence and starts and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1:i + 2][0].strip()
                                                      if i + 1 < len(lines) else ""):
            broken.append(i + 1)
    assert not broken, f"{page.relative_to(ROOT)}: table rows without a header above them, lines {broken}"


def test_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES


def test_readme_gives_the_command_ci_runs() -> None:
    """.ci/run runs the README's test command, character for character."""
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line and "pip install" in line)
    assert command.strip() in readme_commands()


def readme_commands() -> list[str]:
    return [line.strip() for _, _, lines in fenced_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
            for line in lines]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_name_no_issue_numbers(page: Path) -> None:
    """Readers cannot see the project's issue tracker: no "issue 12" or "#12" in user docs."""
    text = page.read_text(encoding="utf-8")
    assert not re.findall(r"\b[Ii]ssues? \d+|(?<![\w&])#\d+\b", text)
