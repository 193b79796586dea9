"""The default run now against the default run of an earlier release, whole processes, one core.

Answers "how much slower did this make tagging?" with both measured in one run on one machine:
the baseline revision (default ``87d4e5d``, the last release that could only say GTZAN's ten
genres: no taxonomy, no MSD-tag scorers, no undo journal) is checked out into a temporary git
worktree and run from there with this same Python and its packages; the current tree runs from
this checkout. Each round runs, for both trees, back to back:

- `gtag tag --dry-run --force --no-cache --jobs 1` on 6 three-minute mp3s (18 minutes of music,
  made as `bench_process.py` makes them, from ../shared/library) and on 40 (2 hours);
- `gtag predict` on one of them.

A figure is the median over rounds of current / baseline in the same round, so a busy machine
slows both; CPU seconds (user + system) are reported beside the wall clock. Every command is pinned
to one core (`taskset -c 0`).

    python benchmarks/bench_baseline.py [--baseline REV] [--repeats 3] [--json benchmarks/results_baseline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from bench_process import ROOT, cpu_description, make_tracks, run

BASELINE = "87d4e5d"


def worktree(rev: str, folder: Path) -> Path:
    """``rev`` checked out (detached) into ``folder``; removed again by ``drop_worktree``."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(folder), rev], check=True)
    return folder


def drop_worktree(folder: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)


def commands(short: list[Path], library: list[Path]) -> dict[str, list[str]]:
    """The commands timed; pinned to one core (taskset, where there is one), as a user's one-core box."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    gtag = pin + [sys.executable, "-m", "gtag.cli"]
    tag = gtag + ["tag", "--dry-run", "--force", "--no-cache", "--jobs", "1"]
    return {"tag 18 min, --jobs 1": tag + [str(short[0].parent)],
            "tag 2 h, --jobs 1": tag + [str(library[0].parent)],
            "predict one 3-min track": gtag + ["predict", str(short[0])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tracks = make_tracks(tmp / "music", 6)
        library = make_tracks(tmp / "library", 40)
        base_tree = worktree(args.baseline, tmp / "baseline")
        try:
            trees = {"baseline": base_tree, "current": ROOT}
            # Each tree's gtag comes first on sys.path; run from an empty folder so that the working
            # directory (first on sys.path with -m) holds neither.
            os.chdir(tmp / "music")
            envs = {name: dict(os.environ, PYTHONPATH=str(tree), GTAG_CONFIG=os.devnull,
                               ) for name, tree in trees.items()}
            for name, tree in trees.items():  # which gtag each tree runs, and bytecode compiled once
                where = subprocess.run([sys.executable, "-c", "import gtag; print(gtag.__file__)"], env=envs[name],
                                       check=True, capture_output=True, text=True).stdout.strip()
                assert where.startswith(str(tree)), (name, where)
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "gtag")], check=True)
            wall: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
            cpu: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
            for _ in range(args.repeats):
                for what, cmd in commands(tracks, library).items():
                    for name in trees:
                        w, c = run(cmd, envs[name])
                        wall[name].setdefault(what, []).append(w)
                        cpu[name].setdefault(what, []).append(c)
        finally:
            os.chdir(ROOT)
            drop_worktree(base_tree)
    result = {"date": date.today().isoformat(), "cpu": cpu_description(), "cores": os.cpu_count(),
              "baseline": args.baseline, "current": subprocess.run(
                  ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
              "repeats": args.repeats, "commands": {}}
    for what in wall["current"]:
        pairs = list(zip(wall["current"][what], wall["baseline"][what]))
        result["commands"][what] = {
            "wall_ratio": round(statistics.median(a / b for a, b in pairs), 3),
            "cpu_ratio": round(statistics.median(a / b for a, b in zip(cpu["current"][what], cpu["baseline"][what])), 3),
            "baseline_s": round(statistics.median(wall["baseline"][what]), 2),
            "current_s": round(statistics.median(wall["current"][what]), 2),
        }
        r = result["commands"][what]
        print(f"{what}: current / baseline {r['wall_ratio']:.2f}x wall ({r['current_s']:.1f} s vs "
              f"{r['baseline_s']:.1f} s), {r['cpu_ratio']:.2f}x CPU")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
