"""gtag.run.library.walk: which files `gtag tag` looks at, and in which order.

The files here are empty placeholders: walk() looks at names and folders, never at contents.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gtag.run.library import walk


def _touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def _rel(paths, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    _touch(tmp_path, "song.mp3", ".hidden.mp3", ".git/objects/x.flac", "album/.AppleDouble/a.m4a",
           "album/._track.m4a", "album/track.m4a")
    assert _rel(walk([tmp_path]), tmp_path) == ["album/track.m4a", "song.mp3"]


def test_other_extensions_are_ignored_quietly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _touch(tmp_path, "cover.jpg", "notes.txt", "playlist.m3u", "album.cue", "noext", "a.FLAC", "b.Mp3",
           "c.opus", "d.wv", "e.aiff", "f.wma")
    assert _rel(walk([tmp_path]), tmp_path) == ["a.FLAC", "b.Mp3", "c.opus", "d.wv", "e.aiff", "f.wma"]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_sorted_order_per_folder_depth_first(tmp_path: Path) -> None:
    # Created out of order; folders and files interleave by name, like `ls` in the C locale.
    _touch(tmp_path, "c.mp3", "b/z.mp3", "b/a.mp3", "a.mp3", "B.mp3", "b/sub/x.ogg", "d/e.flac")
    assert _rel(walk([tmp_path]), tmp_path) == [
        "B.mp3", "a.mp3", "b/a.mp3", "b/sub/x.ogg", "b/z.mp3", "c.mp3", "d/e.flac",
    ]
    # Repeatable: the same tree gives the same order.
    assert list(walk([tmp_path])) == list(walk([tmp_path]))


def test_paths_keep_their_given_order(tmp_path: Path) -> None:
    _touch(tmp_path, "one/a.mp3", "two/b.mp3")
    assert _rel(walk([tmp_path / "two", tmp_path / "one"]), tmp_path) == ["two/b.mp3", "one/a.mp3"]


def test_symlink_loop_is_survived(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    _touch(lib, "a.mp3", "sub/b.flac")
    (lib / "sub" / "loop").symlink_to(lib, target_is_directory=True)  # a link to an ancestor
    (lib / "sub" / "self").symlink_to(".", target_is_directory=True)  # and to its own folder
    assert _rel(walk([lib]), lib) == ["a.mp3", "sub/b.flac"]


def test_two_links_to_one_file_yield_it_once(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    _touch(lib, "a.mp3", "x/other.mp3")
    (lib / "x" / "link1.mp3").symlink_to(lib / "a.mp3")
    (lib / "y").mkdir()
    (lib / "y" / "link2.mp3").symlink_to(Path("..") / "a.mp3")  # relative link
    assert _rel(walk([lib]), lib) == ["a.mp3", "x/other.mp3"]


def test_links_to_a_file_outside_yield_the_first_link_once(tmp_path: Path) -> None:
    _touch(tmp_path, "outside/real.flac")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "l2.flac").symlink_to(tmp_path / "outside" / "real.flac")
    (lib / "l1.flac").symlink_to(tmp_path / "outside" / "real.flac")
    assert _rel(walk([lib]), lib) == ["l1.flac"]


def test_two_links_to_one_folder_enter_it_once(tmp_path: Path) -> None:
    _touch(tmp_path, "music/a.mp3", "music/b.ogg")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "first").symlink_to(tmp_path / "music", target_is_directory=True)
    (lib / "second").symlink_to(tmp_path / "music", target_is_directory=True)
    assert _rel(walk([lib]), lib) == ["first/a.mp3", "first/b.ogg"]


def test_hard_links_are_one_file(tmp_path: Path) -> None:
    _touch(tmp_path, "a.mp3")
    os.link(tmp_path / "a.mp3", tmp_path / "b.mp3")
    assert _rel(walk([tmp_path]), tmp_path) == ["a.mp3"]


def test_named_file_is_yielded_whatever_its_name(tmp_path: Path) -> None:
    _touch(tmp_path, "odd.bin", ".hidden.mp3", "noext")
    named = [tmp_path / "odd.bin", tmp_path / ".hidden.mp3", tmp_path / "noext"]
    assert list(walk(named)) == named
    assert list(walk([str(tmp_path / "odd.bin")])) == [tmp_path / "odd.bin"]  # str paths too


def test_a_file_named_twice_or_also_found_in_a_folder_comes_once(tmp_path: Path) -> None:
    _touch(tmp_path, "a.mp3", "b.mp3")
    a = tmp_path / "a.mp3"
    assert list(walk([a, a])) == [a]
    assert _rel(walk([tmp_path, a]), tmp_path) == ["a.mp3", "b.mp3"]
    assert _rel(walk([a, tmp_path]), tmp_path) == ["a.mp3", "b.mp3"]


def test_broken_link_is_left_for_the_caller_to_report(tmp_path: Path) -> None:
    (tmp_path / "gone.mp3").symlink_to(tmp_path / "missing.mp3")
    assert _rel(walk([tmp_path]), tmp_path) == ["gone.mp3"]


def test_empty_folder(tmp_path: Path) -> None:
    assert list(walk([tmp_path])) == []
