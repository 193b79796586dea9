"""How big the undo journal grows: N recorded writes (default 10,000) of realistic rows.

Each row is what `gtag tag` records for one file: the genre fields of a real fixture before and after
(gtag.tags.genrefields.read_fields), a content key, a library-like path. Prints the journal's size after
SQLite checkpoints its WAL, per write and per 10,000 writes, and the time per recorded write (each one
a durable commit, twice: pending, then written).

    python benchmarks/journal_size.py [N] [--out results_journal.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from gtag.keep.journal import WRITTEN, Journal, expected_fields
from gtag.tags.content import content_key
from gtag.tags.genrefields import read_fields

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "formats"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    samples = []
    for src in sorted(FIXTURES.iterdir()):
        shutil.copyfile(src, tmp / src.name)
        fmt, before = read_fields(tmp / src.name)
        before = {k: (["Alternative Rock"] if k.endswith(("TCON", "GENRE", "\xa9gen", "WM/Genre", ":Genre")) else v)
                  for k, v in before.items()}  # a library that already has genres
        after = expected_fields(before, fmt, ["Rock"], {"GTAG_CONFIDENCE": "0.873", "GTAG_SOURCE": "gtag 0.1.0 (cnn+musicnn)"},
                                None)
        samples.append((fmt, before, after, content_key(tmp / src.name)))
    journal = Journal(tmp / "undo.sqlite3")
    run = journal.start_run("tag", "f4a6bcfbf8463c1e", {"force": True})
    t0 = time.perf_counter()
    for i in range(args.n):
        fmt, before, after, key = samples[i % len(samples)]
        path = f"/home/someone/Music/Artist {i // 120:04d}/Album {i // 12:05d}/{i % 12 + 1:02d} A Track Title.{fmt.split('/')[0]}"
        seq = journal.record(run, path, f"{key[:-8]}{i:08x}", fmt, before, after)
        journal.settle(seq, WRITTEN, after)
    seconds = time.perf_counter() - t0
    journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    journal.close()
    size = sum(p.stat().st_size for p in tmp.iterdir() if p.name.startswith("undo.sqlite3"))
    result = {"writes": args.n, "bytes": size, "bytes_per_write": round(size / args.n, 1),
              "mib_per_10000": round(size / args.n * 10_000 / 2**20, 2),
              "ms_per_write": round(1000 * seconds / args.n, 3), "cpu": os.cpu_count()}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
