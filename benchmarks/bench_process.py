"""What a user waits for: whole `gtag` processes, against the decode floor of the same files.

`bench_pipeline.py` times the tagger inside one warm process. This benchmark runs `gtag` as a user
does, one process per command (imports, ONNX sessions, worker start-up and all), on real-length
tracks: 3-minute 44.1 kHz stereo mp3s, each three one-minute tracks of ../shared/library joined
frame by frame (mp3 frames are independent, so no re-encoding; made in a temporary folder, nothing
is kept). Measured in one run, on this machine's cores, nothing pinned:

- the floor: one process that imports gtag's decoder and decodes + resamples the same files
  (`gtag.audio.decode.load_audio`: soundfile, then soxr to 22,050 Hz mono), and nothing else;
- `gtag predict` on one 3-minute mp3;
- `gtag tag --dry-run` on 18 minutes (6 tracks) and on a 2-hour library (40 tracks), `--jobs 1`
  and `--jobs 2`;
- on the 2-hour library, the best two processes can do here: two `gtag tag --jobs 1` started
  together, each on its own half of the library (no pool, no hand-out, nothing shared), so
  `--jobs 2` is also compared with what this machine's two cores give two independent gtag runs;
- `gtag --help` and `gtag models`, against `python -c pass`;
- the first run after an install: gtag copied to a fresh folder (no bytecode of its own yet) with
  an empty numba cache, for the default models and for the 57-feature models (librosa, numba).
  Every other command runs gtag from its bytecode, as an installed gtag does (compiled here first;
  ``PYTHONDONTWRITEBYTECODE`` is dropped from the commands' environment).

Commands run in rounds (floor, then each command, repeated); a ratio is the median over rounds
of the command's time over the floor's time in the same round, so a busy machine slows both. Each
command's CPU time (user + system, its worker processes included) is reported too: on a shared
machine the wall clock says how busy it was, the CPU time what gtag costs; `--jobs 2` against
`--jobs 1` in CPU time says what 2 idle cores would give.

The machine's load average (1 minute) is recorded at the start and at the end: on a shared machine
it says how much the wall-clock figures were disturbed. ``--max-windows N`` passes that option to
every `gtag predict` / `gtag tag` (0: every window, as gtag analysed before the cap).

    python benchmarks/bench_process.py [--repeats 3] [--max-windows N] [--json benchmarks/results_process.json]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT.parent / "shared" / "library" / "music"
CLIPS_PER_TRACK = 3  # one-minute clips per 3-minute track

# Two commands at once (each given as one shell-quoted string), waiting for both.
HALVES_SHELL = "{0} & first=$!; {1}; rc=$?; wait $first || exit 1; exit $rc"

FLOOR_CODE = "import sys\nfrom gtag.audio.decode import load_audio\nfor p in sys.argv[1:]:\n    load_audio(p)\n"


MP3_BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # MPEG-1 Layer III, kbit/s
MP3_RATES = (44100, 48000, 32000)


def mp3_frames(path: Path) -> bytes:
    """The audio frames of an MPEG-1 Layer III file: without its ID3v2 header, ID3v1 trailer and
    Xing/Info frame (whose frame count would tell decoders the joined file is one clip long)."""
    b = path.read_bytes()
    if b[:3] == b"ID3":
        size = b[6] << 21 | b[7] << 14 | b[8] << 7 | b[9]
        b = b[10 + size + (10 if b[5] & 0x10 else 0):]
    if b[-128:-125] == b"TAG":
        b = b[:-128]
    if b[0] != 0xFF or (b[1] & 0xFE) != 0xFA:
        raise ValueError(f"{path}: does not start with an MPEG-1 Layer III frame")
    side_info = 17 if (b[3] >> 6) == 3 else 32  # mono or stereo
    if b[4 + side_info: 8 + side_info] in (b"Xing", b"Info"):
        frame = 144000 * MP3_BITRATES[b[2] >> 4] // MP3_RATES[(b[2] >> 2) & 3] + ((b[2] >> 1) & 1)
        b = b[frame:]
    return b


def make_tracks(folder: Path, n: int) -> list[Path]:
    """n 3-minute mp3s from consecutive library clips (starting over when the clips run out)."""
    clips = sorted(LIBRARY.glob("*/*.mp3"))
    if len(clips) < CLIPS_PER_TRACK:
        raise SystemExit(f"need the shared library at {LIBRARY}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"track{i:02d}.mp3"
        path.write_bytes(b"".join(mp3_frames(clips[(i * CLIPS_PER_TRACK + j) % len(clips)])
                                  for j in range(CLIPS_PER_TRACK)))
        out.append(path)
    return out


def halves(paths: list[Path], folder: Path) -> tuple[Path, Path]:
    """The library split in two folders of hard links (the same files, not copies): first half, second half."""
    out = []
    for name, part in (("half-a", paths[: len(paths) // 2]), ("half-b", paths[len(paths) // 2:])):
        (folder / name).mkdir()
        for p in part:
            os.link(p, folder / name / p.name)
        out.append(folder / name)
    return out[0], out[1]


def gtag_command() -> list[str]:
    """`gtag` as installed beside this Python (the console script), else `python -m gtag.cli`."""
    script = Path(sys.executable).parent / "gtag"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gtag.cli"]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds of a command, and the CPU seconds (user + system) of it and every process
    it started (its worker processes): the work done, which other programs on a busy machine do not
    change, unlike the wall clock."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    while True:  # a fork server (and what it forked) outlives gtag briefly: reap it, to count it
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def rounds(commands: dict[str, list[str]], env: dict[str, str], repeats: int,
           cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Wall-clock seconds of each command in each round (CPU seconds into ``cpu`` if given); the
    commands of a round run back to back."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            wall, used = run(cmd, env)
            times[name].append(wall)
            if cpu is not None:
                cpu.setdefault(name, []).append(used)
    return times


def ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of name's time over base's time in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def fresh_install(folder: Path) -> dict[str, str]:
    """gtag and its models copied without bytecode, and an empty numba cache: the first run after
    `pip install` (site-packages keep the bytecode pip compiled at install time)."""
    for pkg in ("gtag", "exported_models"):
        shutil.copytree(ROOT / pkg, folder / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "numba").mkdir()
    return {"PYTHONPATH": str(folder), "NUMBA_CACHE_DIR": str(folder / "numba")}


def cpu_description() -> str:
    """The CPU's model name and the vector extensions musicnn's speed hangs on (Linux; else platform's)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16") if f in flags]
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}; {' '.join(simd)})"


def adopt_orphans() -> None:
    """Become the Linux "child subreaper" of what this process starts: gtag's worker processes,
    forked by a fork server that is not gtag's own child to wait for, then come back here to be
    reaped, so their CPU time is counted (RUSAGE_CHILDREN counts only reaped descendants)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def main() -> None:
    adopt_orphans()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the short measurements")
    ap.add_argument("--library-repeats", type=int, default=1, help="rounds of the 2-hour library")
    ap.add_argument("--library-tracks", type=int, default=40, help="3-minute tracks of the large library")
    ap.add_argument("--skip-first-run", action="store_true")
    ap.add_argument("--max-windows", type=int, default=None, help="passed to gtag (default: gtag's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    # A user's gtag runs from bytecode: pip compiles it at install, an editable install writes it on
    # the first run. A shell that forbids writing it (PYTHONDONTWRITEBYTECODE, set on some CI machines)
    # would make every measured process compile gtag's modules again (~35 ms each); the first run
    # after an install is measured on its own below.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(ROOT / "gtag"), quiet=1)
    gtag = gtag_command()
    cap = [] if args.max_windows is None else ["--max-windows", str(args.max_windows)]
    result: dict = {"date": str(date.today()), "machine": platform.platform(), "cpu": cpu_description(),
                    "cores": os.cpu_count(), "python": platform.python_version(), "command": gtag[-1],
                    "max_windows": "gtag's default" if args.max_windows is None else args.max_windows,
                    "load_avg_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        short = make_tracks(folder / "18min", 6)
        library = make_tracks(folder / "2h", args.library_tracks)
        dry = [*gtag, "tag", "--dry-run", "--force", "--no-cache", *cap]

        # start-up
        t = rounds({"python -c pass": [sys.executable, "-c", "pass"], "gtag --help": [*gtag, "--help"],
                    "gtag models": [*gtag, "models"]}, env, max(5, args.repeats))
        result["startup"] = {k: round(statistics.median(v), 3) for k, v in t.items()}

        # one track
        c: dict[str, list[float]] = {}
        t = rounds({"floor": [sys.executable, "-c", FLOOR_CODE, str(short[0])],
                    "predict": [*gtag, "predict", *cap, str(short[0])]}, env, args.repeats, c)
        result["predict_3min"] = {"floor_s": round(statistics.median(t["floor"]), 3),
                                  "predict_s": round(statistics.median(t["predict"]), 3),
                                  "vs_floor": round(ratio(t, "predict", "floor"), 2),
                                  "floor_cpu_s": round(statistics.median(c["floor"]), 3),
                                  "predict_cpu_s": round(statistics.median(c["predict"]), 3),
                                  "cpu_vs_floor": round(ratio(c, "predict", "floor"), 2)}

        # 18 minutes and 2 hours
        for key, paths, reps in (("tag_18min", short, args.repeats), ("tag_2h", library, args.library_repeats)):
            seconds = 180.0 * len(paths)
            c = {}
            commands = {"floor": [sys.executable, "-c", FLOOR_CODE, *map(str, paths)],
                        "jobs1": [*dry, "--jobs", "1", str(paths[0].parent)],
                        "jobs2": [*dry, "--jobs", "2", str(paths[0].parent)]}
            if key == "tag_2h":
                a, b = halves(paths, folder)
                one = [shlex.join([*dry, "--jobs", "1", str(half)]) for half in (a, b)]
                commands["halves"] = ["sh", "-c", HALVES_SHELL.format(*one)]
            t = rounds(commands, env, reps, c)
            result[key] = {"audio_s": seconds, "rounds": reps,
                           **{f"{k}_s": round(statistics.median(v), 2) for k, v in t.items()},
                           **{f"{k}_x_realtime": round(seconds / statistics.median(v), 1) for k, v in t.items()},
                           **{f"{k}_cpu_s": round(statistics.median(v), 2) for k, v in c.items()},
                           "jobs1_vs_floor": round(ratio(t, "jobs1", "floor"), 2),
                           "jobs2_vs_floor": round(ratio(t, "jobs2", "floor"), 2),
                           "jobs1_cpu_vs_floor": round(ratio(c, "jobs1", "floor"), 2),
                           "jobs2_cpu_vs_jobs1": round(ratio(c, "jobs2", "jobs1"), 3),
                           "jobs2_speedup": round(1 / ratio(t, "jobs2", "jobs1"), 2),
                           # What 2 idle cores would give: --jobs 1's work over half of --jobs 2's.
                           "jobs2_speedup_idle_estimate": round(2 / ratio(c, "jobs2", "jobs1"), 2)}
            if "halves" in t:  # the machine's own bound for two processes
                result[key].update({"halves_speedup": round(1 / ratio(t, "halves", "jobs1"), 2),
                                    "jobs2_vs_halves": round(ratio(t, "jobs2", "halves"), 3)})

        # first run after install, then the second run of the same install
        if not args.skip_first_run:
            first: dict = {}
            for label, extra in (("default models", []), ("rf (57 features)", ["--model", "rf"])):
                fresh = folder / f"fresh-{len(first)}"
                fresh.mkdir()
                fenv = dict(env, **fresh_install(fresh))
                cmd = [sys.executable, "-m", "gtag.cli", "predict", *cap, *extra, str(short[0])]
                first[label] = {"first_s": round(run(cmd, fenv)[0], 2), "second_s": round(run(cmd, fenv)[0], 2)}
            result["first_run_predict"] = first

    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def report(r: dict) -> None:
    s = r["startup"]
    print(f"{r['date']}, {r['machine']}, {r.get('cpu')}, {r['cores']} cores; whole processes, medians of rounds; --max-windows: "
          f"{r.get('max_windows')}; load average {r.get('load_avg_start')} at the start, {r.get('load_avg_end')} at the end\n")
    print(f"start-up: python -c pass {s['python -c pass']:.2f} s, gtag --help {s['gtag --help']:.2f} s, "
          f"gtag models {s['gtag models']:.2f} s (target < 0.3 s)")
    p = r["predict_3min"]
    print(f"gtag predict, one 3-minute mp3: {p['predict_s']:.2f} s, floor {p['floor_s']:.2f} s: "
          f"{p['vs_floor']:.2f}x the floor (target <= 2.5x); CPU {p['predict_cpu_s']:.2f} s against "
          f"{p['floor_cpu_s']:.2f} s: {p['cpu_vs_floor']:.2f}x")
    print("\n| run | x realtime (wall) | vs floor (wall) | CPU s | vs floor (CPU) |\n| --- | --- | --- | --- | --- |")
    for key, title in (("tag_18min", "18 min"), ("tag_2h", "2 h")):
        t = r[key]
        print(f"| {title}: decode + resample (floor) | {t['floor_x_realtime']:.0f} | 1.0 | {t['floor_cpu_s']:.1f} | 1.0 |")
        print(f"| {title}: gtag tag --dry-run --jobs 1 | {t['jobs1_x_realtime']:.0f} | {t['jobs1_vs_floor']:.2f}x "
              f"| {t['jobs1_cpu_s']:.1f} | {t['jobs1_cpu_vs_floor']:.2f}x |")
        print(f"| {title}: gtag tag --dry-run --jobs 2 | {t['jobs2_x_realtime']:.0f} | {t['jobs2_vs_floor']:.2f}x "
              f"| {t['jobs2_cpu_s']:.1f} | |")
    t = r["tag_18min"]
    print(f"\n18 min, --jobs 1: {t['jobs1_x_realtime']:.0f}x realtime (target >= 300x), "
          f"{t['jobs1_vs_floor']:.2f}x the floor (target <= 1.6x)")
    h = r["tag_2h"]
    print(f"2 h: --jobs 2 is {h['jobs2_speedup']:.2f}x --jobs 1 (target >= 1.8x); --jobs 2 does "
          f"{h['jobs2_cpu_vs_jobs1']:.3f}x the work of --jobs 1, so {h['jobs2_speedup_idle_estimate']:.2f}x on 2 idle cores")
    if "halves_speedup" in h:
        print(f"2 h: two --jobs 1 runs on the halves at once (this machine's bound) are {h['halves_speedup']:.2f}x "
              f"--jobs 1; --jobs 2 takes {h['jobs2_vs_halves']:.3f}x their time")
    for label, f in r.get("first_run_predict", {}).items():
        print(f"first run after install, gtag predict, {label}: {f['first_s']:.1f} s (then {f['second_s']:.1f} s)")


if __name__ == "__main__":
    main()
