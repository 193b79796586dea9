"""Seeded fuzzing of gtag's readers and its safe write, on a corpus generated from the shared
format fixtures (bit flips, truncations, crafted size fields); nothing binary is committed.

    python -m tests.fuzz --seed 1 --cases 400            # prints one line per finding
    python -m tests.fuzz --seed 1 --cases 400 --keep DIR # and keeps the corpus to replay by hand

A finding is any outcome but the contract: reading a tag gives a value or one ``TagError`` line;
decoding gives at most ``MAX_ANALYSED_SECONDS`` of audio or one ``AudioLoadError``; a write either
leaves the file byte for byte as it was (with one ``TagError`` line) or tags it without changing
the decoded audio; and each file takes a bounded time. ``tests/test_fuzz.py`` runs a small seed in
the slow tests.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "formats"
SECONDS_PER_FILE = 30  # a file that takes longer is a finding (the campaign's hang class)


def mutations(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Endless (name, bytes) variants of one file: flipped bits (mostly in the headers, where a
    parser decides sizes), truncations, and size fields set to their maximum."""
    n = len(data)
    while True:
        kind = rng.choice(["flip-head", "flip-any", "truncate", "truncate-head", "max-field"])
        b = bytearray(data)
        if kind.startswith("flip"):
            span = min(n, 65536) if kind == "flip-head" else n
            flips = rng.randint(1, 32)
            for _ in range(flips):
                i = rng.randrange(span)
                b[i] ^= 1 << rng.randrange(8)
            yield f"{kind}{flips}", bytes(b)
        elif kind == "truncate":
            cut = rng.randrange(1, n)
            yield f"trunc{cut}", bytes(b[:cut])
        elif kind == "truncate-head":
            cut = rng.randrange(1, min(n, 4096))
            yield f"trunc{cut}", bytes(b[:cut])
        else:  # a 4-byte field somewhere in the headers claims the largest size it can
            i = rng.randrange(0, max(1, min(n, 4096) - 4))
            b[i:i + 4] = b"\xff\xff\xff\xff"
            yield f"max{i}", bytes(b)


def corpus(folder: Path, seed: int, cases: int, fixtures: Path = FIXTURES) -> list[Path]:
    """``cases`` mutated copies of the fixtures in ``folder``, the same for the same seed."""
    rng = random.Random(seed)
    sources = sorted(p for p in fixtures.iterdir() if p.is_file())
    if not sources:
        raise FileNotFoundError(f"no fixtures in {fixtures}")
    streams = {p: mutations(p.read_bytes(), random.Random(rng.random())) for p in sources}
    out = []
    for i in range(cases):
        src = sources[i % len(sources)]
        name, data = next(streams[src])
        path = folder / f"{i:04d}-{name}-{src.name}"
        path.write_bytes(data)
        out.append(path)
    return out


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int):
    def on_alarm(signum, frame):
        raise Hang(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _decoded(path: Path) -> bytes | None:
    from gtag.audio.decode import AudioLoadError, load_audio

    try:
        return hashlib.sha256(load_audio(path).samples.tobytes()).digest()
    except AudioLoadError:
        return None


def check(path: Path) -> list[str]:
    """The contract's breaches for one file (empty when it holds)."""
    from gtag.audio.decode import MAX_ANALYSED_SECONDS, SAMPLE_RATE, AudioLoadError, load_audio
    from gtag.tags import formats as tags_formats
    from gtag.tags import reading as tags_reading
    from gtag.tags import tempfiles, writing

    problems = []
    try:
        with time_limit(SECONDS_PER_FILE):
            try:
                tags_reading.read_genres(path)
                tags_formats.format_name(path)
            except tags_formats.TagError as exc:
                if "\n" in str(exc):
                    problems.append("read: a TagError of several lines")
            try:
                a = load_audio(path)
                if a.samples.size > MAX_ANALYSED_SECONDS * SAMPLE_RATE or not np.all(np.isfinite(a.samples)):
                    problems.append(f"decode: {a.samples.size} samples, or not finite")
            except AudioLoadError:
                pass
            before_bytes = path.read_bytes()
            before_audio = _decoded(path)
            try:
                writing.write_genres(path, ["Jazz"])
            except tags_formats.TagError as exc:
                if path.read_bytes() != before_bytes:
                    problems.append(f"write failed ({exc}) and changed the file")
            else:
                if before_audio is not None and _decoded(path) != before_audio:
                    problems.append("write changed the decoded audio")
            leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(tempfiles.TEMP_PREFIX)]
            if leftovers:
                problems.append(f"temporary copies left: {leftovers}")
    except Hang as exc:
        problems.append(f"hang: {exc}")
    except Exception as exc:  # the contract allows no other exception
        problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return problems


def run(seed: int, cases: int, keep: Path | None = None) -> dict[str, list[str]]:
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="gtag-fuzz-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        findings = {}
        for path in corpus(folder, seed, cases):
            problems = check(path)
            if problems:
                findings[path.name] = problems
        return findings
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None, help="keep the corpus in this folder")
    args = ap.parse_args(argv)
    findings = run(args.seed, args.cases, args.keep)
    for name, problems in findings.items():
        print(f"{name}: {'; '.join(problems)}")
    print(f"{args.cases} cases, seed {args.seed}: {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
