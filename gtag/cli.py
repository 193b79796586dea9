"""The `gtag` command line: predict, tag, models."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys

# One BLAS thread, unless the user says otherwise (set before numpy loads; workers inherit it).
# gtag's matrix products are small (a mel filterbank on a few hundred frames) and run between
# ONNX Runtime calls; OpenBLAS's extra threads spin while they wait for work, taking the core the
# decoder and the model need: `gtag tag --jobs 1` on 18 minutes of mp3 took 3.0 s with them and
# 1.95 s without, on a busy 2-core machine. --jobs N is how gtag uses more cores.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:  # Ctrl-C while these load (~0.3 s) exits 130 too, not with an import traceback
    import json
    from pathlib import Path

    import click
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from . import __version__, output, signals
    from .config import DEFAULT_MAX_WINDOWS
    from .models import ModelError, default_models_dir, load_models, read_manifest, select_models
except KeyboardInterrupt:
    sys.exit(130)

# Imports stay light here: `gtag --help` and `gtag models` need neither numpy nor ONNX Runtime, and
# every command imports what it uses inside its function.

# Exit codes (documented in the README).
EXIT_OK = 0  # every file succeeded
EXIT_SOME_FAILED = 1  # at least one file failed; the others were processed
EXIT_USAGE = 2  # bad arguments (click's own code)
EXIT_NO_MODELS = 3  # models missing, corrupt or unloadable: nothing was processed
EXIT_INTERRUPTED = signals.EXIT_INTERRUPTED  # 130: Ctrl-C (SIGINT); the summary of what was done is printed
EXIT_TERMINATED = signals.EXIT_TERMINATED  # 143: SIGTERM; the same clean stop

# Writes that fail (a full disk, a closed pipe, a terminal gone) or that the terminal's encoding
# cannot hold never raise here (gtag.output); the commands look at what was lost.
out = Console(file=output.STDOUT, highlight=False, soft_wrap=True)
err = Console(file=output.STDERR, highlight=False, soft_wrap=True)


def resolve_models_dir(value: str | None) -> str | None:
    """``--models``: a folder, else the name of a model learned with `gtag learn`."""
    if value is None or Path(value).expanduser().is_dir():
        return value
    from .learn import NAME_PATTERN, user_models_dir
    import re

    if re.fullmatch(NAME_PATTERN, value) and (user_models_dir() / value).is_dir():
        return str(user_models_dir() / value)
    raise ModelError(f"--models {value}: no such folder, and no model learned under that name "
                     f"(gtag learn --name {value} …; learned models live in {user_models_dir()})")


def _split_models(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _check_models(models_dir: str | None, model: tuple[str, ...]) -> None:
    """The models a command will load exist in their manifest: checked before any slow work (the
    walk of a large library), without loading them. One error line and exit 3 otherwise."""
    try:
        select_models(resolve_models_dir(models_dir), _split_models(model))
    except ModelError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        sys.exit(EXIT_NO_MODELS)


def _predictor(models_dir: str | None, model: tuple[str, ...], device: str, threads: int = 0,
               max_windows: int = 0):
    """The Predictor of a command: the shipped ensemble with its manifest weights, or the models
    picked with --model, which vote equally (the manifest's weights describe the default ensemble;
    a picked model must not be silenced by a weight of 0). ``threads``: ONNX Runtime threads per
    session (0: its default, one per core); ``max_windows``: --max-windows."""
    from .pipeline import Predictor

    names = _split_models(model)
    try:
        models = load_models(resolve_models_dir(models_dir), names, device=device, threads=threads)
        return Predictor(models, weights=dict.fromkeys(names, 1.0) if names else None, max_windows=max_windows)
    except (ModelError, ValueError) as exc:  # ValueError: models gtag cannot feed (rate, window)
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        sys.exit(EXIT_NO_MODELS)


model_options = [
    click.option("--model", "-m", multiple=True, metavar="NAME[,NAME]",
                 help="Models to use, voting equally (repeat or comma-separate); default: the config file's models (gtag tag), else the ensemble (models with a vote weight above zero, with those weights)."),
    click.option("--models", "models_dir", metavar="NAME|DIR", default=None,
                 help="A model learned with gtag learn (by name), or a folder with manifest.json and ONNX files "
                      "(default: the shipped models, or $GTAG_MODELS)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="ONNX Runtime device: auto uses CUDA when a GPU and onnxruntime-gpu are usable."),
    click.option("--max-windows", type=click.IntRange(0, None), default=DEFAULT_MAX_WINDOWS, show_default=True,
                 help="Analyse at most N 3 s windows per track, evenly spread over longer tracks (only their "
                      "audio is decoded when the file allows); shorter tracks are analysed whole. 0: every window."),
]


def with_model_options(f):
    for opt in reversed(model_options):
        f = opt(f)
    return f


class _Group(click.Group):
    """Ctrl-C in any command exits 130 (click's own handler says "Aborted!" and exits 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtag")
def main() -> None:
    """Tag a music library with genres predicted from the audio itself."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_model_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (one object per file) for scripts.")
@click.option("--top", default=5, show_default=True, help="Genres shown per file in the table.")
def predict(files: tuple[Path, ...], model: tuple[str, ...], models_dir: str | None, device: str,
            max_windows: int, as_json: bool, top: int) -> None:
    """Show the predicted genre of each FILE, per model and voted, with probabilities."""
    from .audio import AudioLoadError

    # One ONNX Runtime thread per session: on musicnn's 8-window chunks a second thread was no faster
    # (0.49 s against 0.47 s for a 3-minute track) and cost 1.25x the CPU.
    predictor = _predictor(models_dir, model, device, threads=1, max_windows=max_windows)
    results: list[dict] = []
    failed = 0
    for path in files:
        try:
            pred = predictor.predict_file(path)
        except (AudioLoadError, ValueError, OSError) as exc:
            failed += 1
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            results.append({"path": str(path), "error": msg})
            if not as_json:
                err.print(f"[red]error:[/] {escape(one_line(msg))}")
            continue
        reason = predictor.abstain_reason(pred)
        agreed = predictor.agreed_by(pred)
        if as_json:
            results.append(dict(pred.to_json(), would_tag=reason is None, **({"reason": reason} if reason else {}),
                                **({"agreed": agreed} if agreed else {})))
        else:
            _print_prediction(pred, top, reason, agreed)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _not_nan(value: float, param) -> float:
    if value != value:  # FloatRange lets nan through: every comparison with it is False
        raise click.BadParameter("must be a number from 0 to 1, not nan", param=param)
    return value


def _check_report_path(report: Path) -> None:
    """Refuse a report that could not be written before any file is touched (not after them all)."""
    if report.suffix.lower() not in (".json", ".csv"):
        raise click.BadParameter("must end in .json or .csv", param_hint="--report")
    folder = report.parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {one_line(str(folder))} does not exist", param_hint="--report")
    if report.is_dir():
        raise click.BadParameter(f"{one_line(str(report))} is a folder", param_hint="--report")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"folder {one_line(str(folder))} is not writable", param_hint="--report")


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def timeline(starts, genres: list[str], window: float = 3.0) -> list[tuple[float, float, str]]:
    """Run-length segments (start, end, genre) of the per-window genres, for the genre-over-time
    view. Windows overlap, so each one stands for the time until the next window starts."""
    segs: list[tuple[float, float, str]] = []
    starts = [float(s) for s in starts]
    for i, (s, g) in enumerate(zip(starts, genres)):
        end = starts[i + 1] if i + 1 < len(starts) else s + window
        if segs and segs[-1][2] == g:
            segs[-1] = (segs[-1][0], end, g)
        else:
            segs.append((s, end, g))
    return segs


def _print_prediction(pred, top: int, reason: str | None = None, agreed: str | None = None) -> None:
    from .audio import WINDOW_SECONDS
    from .vote import top_k

    head = f"[bold]{escape(str(pred.path))}[/]  →  [bold green]{escape(pred.genre)}[/] ({pred.confidence:.0%})"
    if agreed:
        head += f" [dim]written because {escape(agreed)} (not voting) agrees[/]"
    if reason:
        head = (f"[bold]{escape(str(pred.path))}[/]  →  [yellow]uncertain[/], best guess {escape(pred.genre)} "
                f"({pred.confidence:.0%}): {escape(reason)}; gtag tag writes nothing")
    info = f"{_fmt_time(pred.duration)}, {len(pred.window_genres)} windows"
    if pred.truncated:
        info += ", long file: analysed in part"
    elif pred.duration > (len(pred.window_genres) + 1) * WINDOW_SECONDS:
        info += " spread over the track (--max-windows)"
    out.print(f"{head}  [dim]{info}[/]")
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("genre")
    table.add_column("vote", justify="right", style="bold")
    for name in pred.models:
        table.add_column(name, justify="right")
    for genre, p in top_k(pred.labels, pred.probabilities, top):
        i = pred.labels.index(genre)
        table.add_row(genre, f"{p:.2f}", *[f"{m[i]:.2f}" for m in pred.models.values()])
    out.print(table)
    for name, tags in pred.tags.items():  # models with a tag output (musicnn's MSD tags)
        label = "MSD tags" if len(pred.tags) == 1 else f"MSD tags ({escape(name)})"
        out.print(f"[dim]{label}:[/] " + ", ".join(f"{escape(t)} {s:.2f}" for t, s in tags[:8]))
    segs = timeline(list(pred.window_starts), pred.window_genres)
    if len(segs) > 1:
        shown = " · ".join(f"{_fmt_time(a)}–{_fmt_time(min(b, pred.duration))} {g}" for a, b, g in segs[:12])
        more = f" · … ({len(segs) - 12} more)" if len(segs) > 12 else ""
        out.print(f"[dim]over time:[/] {shown}{more}")
    out.print()


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@with_model_options
@click.option("--dry-run", "-n", is_flag=True, help="Show existing → proposed genre for each file; change nothing.")
@click.option("--force", "--overwrite", "force", is_flag=True, help="Also retag files that already have a genre.")
@click.option("--merge", is_flag=True,
              help="Add the predicted genres to the ones a file has (no doubles in any spelling) instead of skipping it.")
@click.option("--album", is_flag=True,
              help="Tracks of one album (album + album artist tags, else the folder) vote together and get one genre.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config file (TOML): genre names, whitelist, exclude list, separator, defaults; "
                   "default: config.toml in the user config folder, or $GTAG_CONFIG.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None,
              show_default="the config's, else the models' abstain rule",
              callback=lambda ctx, param, v: _not_nan(v, param),
              help="Write nothing for a file whose voted genre is less probable than this; 0 always writes. "
                   "Default: the models' own rule (calibrated probability, 'none of my genres', distance).")
@click.option("--top-k", type=click.IntRange(1, 10), default=None, show_default="1, or the config's",
              help="Write up to K genres (each at least --min-confidence probable).")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=None, show_default="all cores, fewer if memory is short",
              help="Processes decoding, analysing and predicting files in parallel (~0.5 GB each; the default plans 0.75 GB).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a per-file report: JSON array if FILE ends in .json, CSV if .csv.")
@click.option("--write-confidence", is_flag=True,
              help="Also store GTAG_CONFIDENCE and GTAG_SOURCE in a custom tag.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Prediction cache (SQLite); default: the user cache folder, or $GTAG_CACHE.")
@click.option("--no-cache", is_flag=True, help="Neither read nor update the cache.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where decoding and analysis run: a local process pool, or a Ray cluster.")
@click.option("--address", "ray_address", default=None, metavar="ADDR",
              help="Ray cluster address (e.g. ray://head:10001 or auto); default: start Ray locally.")
def tag(paths: tuple[Path, ...], model: tuple[str, ...], models_dir: str | None, device: str, max_windows: int,
        dry_run: bool,
        force: bool, merge: bool, album: bool, config_path: Path | None, min_confidence: float | None,
        top_k: int | None, jobs: int, report: Path | None,
        write_confidence: bool, cache_path: Path | None, no_cache: bool, backend: str,
        ray_address: str | None) -> None:
    """Predict the genre of every audio file under PATHS and write it into the file's tags."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .cache import CacheError, PredictionCache, default_cache_path
    from .library import walk
    from .tagger import (FAILED, SKIPPED_UNREADABLE, Record, TagOptions, Tagger, default_jobs, summarize,
                         write_report)
    from .tags import remove_stale_temp_files
    from .workers import WORKER_PRELOAD, WorkerPool, remove_dead_slot_folders

    if report is not None and report.suffix.lower() not in (".json", ".csv"):
        raise click.BadParameter("must end in .json or .csv", param_hint="--report")
    if merge and force:
        raise click.UsageError("--merge adds to a file's genres and --force replaces them: pick one")
    if report is not None:
        _check_report_path(report)
    output.STDOUT.reset()
    output.STDERR.reset()
    config = _load_config(config_path)
    # Flags win over the config file, which wins over the built-in defaults.
    # None: neither the flag nor the config sets one, so the models' own abstain rule decides
    min_confidence = min_confidence if min_confidence is not None else config.min_confidence
    top_k = top_k if top_k is not None else (config.top_k or 1)
    records: list[Record] = []
    stopped = None  # exit code of a run ended by SIGINT / SIGTERM / SIGHUP, or a closed pipe
    report_failed = False
    cache = None
    pool = None
    explicit_jobs = jobs
    with signals.stop_on_signals():
        # Everything from model loading to the last file runs here, so a stop signal at any moment
        # ends the run the same way: workers stopped, cache closed, summary printed.
        try:
            _check_models(models_dir, model or config.models or ())
            def unreadable(path: Path, reason: str) -> None:
                # Named, counted and reported (exit 1), not skipped in silence: its files are not tagged.
                rec = Record(str(path), status=SKIPPED_UNREADABLE, error=f"{path}: {reason}, folder not read")
                records.append(rec)
                err.print(f"[yellow]skipped:[/] {escape(one_line(rec.error))}")

            files = list(walk(paths, on_error=unreadable))
            # Temporary copies a killed run left (older than any running gtag's) are gtag's own to remove.
            for folder in sorted({p.parent for p in files}):
                for stale in remove_stale_temp_files(folder, dry_run=dry_run):
                    verb = "would remove" if dry_run else "removed"
                    err.print(f"[yellow]note:[/] {verb} {escape(one_line(str(stale)))}, a temporary copy left by "
                              "an interrupted gtag run")
            remove_dead_slot_folders()  # what the workers of a killed run left in the temp folder
            # All usable cores by default, as memory allows; never more workers than files to share.
            jobs = max(1, min(default_jobs() if jobs is None else jobs, len(files)))
            if backend == "local" and jobs > 1:
                # The workers start now, forked from this process before it imports ONNX Runtime, so
                # they load their models while it loads its own (see WorkerPool).
                for name in WORKER_PRELOAD:
                    importlib.import_module(name)
                pool = WorkerPool(jobs, fork=True)
            # An explicit --jobs 1 runs on one core, as each worker of --jobs N does (one-thread
            # sessions): on a busy machine extra ONNX Runtime threads only contend (musicnn: 1.35x).
            predictor = _predictor(models_dir, model or config.models or (), device,
                                   threads=1 if explicit_jobs == 1 and backend == "local" else 0,
                                   max_windows=max_windows)
            labels = sorted({lab for labs in predictor.labels.values() for lab in labs})
            unknown = config.policy.unknown(labels)
            if unknown:  # a typo would otherwise silently whitelist or exclude nothing
                err.print(f"[red]error:[/] config {escape(str(config.source))}: unknown genre "
                          f"{escape(', '.join(unknown))} (labels: {', '.join(labels)})")
                sys.exit(EXIT_USAGE)
            opts = TagOptions(dry_run=dry_run, force=force, min_confidence=min_confidence, top_k=top_k,
                              jobs=jobs, write_confidence=write_confidence, backend=backend,
                              ray_address=ray_address, separator=config.separator, policy=config.policy,
                              merge=merge, album=album)
            try:
                cache = None if no_cache else PredictionCache(cache_path or default_cache_path(), predictor.signature)
            except CacheError as exc:
                err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
                sys.exit(EXIT_USAGE)
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=out,
                                transient=True)
            with progress:
                task = progress.add_task("dry run" if dry_run else "tagging", total=len(files), rate="")
                for rec in Tagger(predictor, opts, cache, pool).run(files):
                    if rec.album is not None and (not records or records[-1].album is not rec.album):
                        _print_album(rec.album, progress.console)
                    records.append(rec)
                    elapsed = progress.tasks[0].elapsed or 0
                    progress.update(task, advance=1, rate=f"{len(records) / elapsed:.1f} files/s" if elapsed else "")
                    _print_record(rec, dry_run, progress.console)
                    if output.STDOUT.closed_pipe or output.STDERR.closed_pipe:
                        # `gtag tag … | head`: the reader has gone. Stop here, between two files
                        # (this one is done), quietly, as `git log | head` does.
                        stopped = signals.EXIT_PIPE
                        break
        except ModelError as exc:  # a model whose output does not match its manifest, found on a file
            err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
            sys.exit(EXIT_NO_MODELS)
        except KeyboardInterrupt as exc:  # SIGINT, SIGTERM or SIGHUP (signals.Terminated, HungUp)
            stopped = signals.acknowledge(exc)
            what = {signals.EXIT_TERMINATED: "terminated", signals.EXIT_HUNG_UP: "hung up"}.get(stopped, "interrupted")
            err.print(f"[yellow]{what}:[/] files done so far are tagged; the rest are untouched. "
                      "Run the same command again to resume.")
        finally:
            if pool is not None:
                pool.stop()  # the tagger closed it after the last file; not if the run ended before
            if cache is not None:
                cache.close()
                if cache.broken:
                    err.print(f"[yellow]warning:[/] {escape(one_line(cache.broken))}")
        if report is not None:
            try:
                write_report(records, report, top_k)
            except OSError as exc:
                err.print(f"[red]error:[/] report {escape(one_line(str(report)))} not written "
                          f"({escape(one_line(exc.strerror or str(exc)))}); the files themselves are done")
                report, report_failed = None, True
        if stopped != signals.EXIT_PIPE:
            _print_summary(summarize(records), dry_run, report)
        lost = output.STDOUT.lost
        if lost and not output.STDOUT.closed_pipe:
            err.print(f"[red]error:[/] standard output could not be written ({escape(one_line(lost))}): the "
                      f"lines of {len(records)} files were lost; the files themselves are done"
                      + (f", and the report {escape(one_line(str(report)))} has them" if report else ""))
    if stopped is not None:
        sys.exit(stopped)
    failed = report_failed or (lost and not output.STDOUT.closed_pipe) \
        or any(r.status in (FAILED, SKIPPED_UNREADABLE) for r in records)
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def one_line(text: str) -> str:
    """``text`` safe to print as one line: control characters (a newline in a file name) written
    as escapes, and the bytes of a non-UTF-8 name as \\xNN instead of an encoding error."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


# C0 and C1 controls (U+009B is a terminal's CSI, like ESC [), and the bidirectional overrides and
# isolates (U+202E shows "3pm.exe" as "exe.mp3"): shown as escapes, never sent to the terminal raw.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _load_config(path: Path | None):
    """The config file, or one error line and exit code 2 when it is invalid."""
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_USAGE)


def _print_album(album: dict, console: Console) -> None:
    """The album vote, shown once before its tracks."""
    ranked = sorted(album["probabilities"].items(), key=lambda kv: -kv[1])[:3]
    shown = ", ".join(f"{lab} {p:.0%}" for lab, p in ranked)
    chosen = "; ".join(album["genres"]) or "nothing (low confidence)"
    console.print(f"[bold]album {escape(album['key'])}[/] ({album['voters']} of {album['tracks']} tracks voted): "
                  f"[green]{escape(chosen)}[/] [dim]({shown})[/]")


def _print_record(rec, dry_run: bool, console: Console) -> None:
    from .tagger import (FAILED, SKIPPED_CHANGED, SKIPPED_HAS_GENRE, SKIPPED_LOW_CONFIDENCE, SKIPPED_NOT_REGULAR,
                         SKIPPED_SILENT, SKIPPED_UNCERTAIN, TAGGED, UNCHANGED, WOULD_TAG)

    # Paths, tag values and errors are shown as they are: a file named "song [live].mp3" must
    # not be read as rich markup, and one named "a\nb.mp3" must not split its line.
    path = escape(one_line(rec.path))
    before = escape(one_line(_shorten("; ".join(rec.existing) or "—")))
    if rec.status == FAILED:
        # A write that failed (read-only...) after a genre was chosen: say which, as the report does.
        heard = rec.genres and rec.confidence is not None
        chosen = f" [dim](gtag hears {escape('; '.join(rec.genres))}, {rec.confidence:.0%})[/]" if heard else ""
        err.print(f"[red]error:[/] {escape(one_line(rec.error or ''))}{chosen}")
    elif rec.status in (SKIPPED_NOT_REGULAR, SKIPPED_CHANGED):
        err.print(f"[yellow]skipped:[/] {escape(one_line(rec.error or rec.path))}")
    elif rec.status == SKIPPED_SILENT:
        console.print(f"{path}: [yellow]silent[/], no genre to hear, left as {before}")
    elif rec.status in (TAGGED, WOULD_TAG):
        verb = "would write" if rec.status == WOULD_TAG else "wrote"
        console.print(f"{path}: {before} → [green]{escape(one_line(_shorten('; '.join(rec.written))))}[/] "
                      f"[dim]({rec.confidence:.0%}, {f'{escape(rec.agreed)} agrees, ' if rec.agreed else ''}{verb})[/]")
    elif rec.status == SKIPPED_UNCERTAIN:
        console.print(f"{path}: [yellow]uncertain[/] (best guess {escape(rec.genre or '?')} {rec.confidence:.0%}: "
                      f"{escape(rec.reason or '')}), left as {before}")
    elif rec.status == SKIPPED_LOW_CONFIDENCE:
        console.print(f"{path}: [yellow]low confidence[/] ({rec.genre} {rec.confidence:.0%}), left as {before}")
    elif rec.status == SKIPPED_HAS_GENRE and dry_run:
        console.print(f"[dim]{path}: has genre {before}, skipped (use --force to retag)[/]")
    elif rec.status == UNCHANGED and dry_run:
        console.print(f"[dim]{path}: already {before}[/]")


# Longest tag value shown in a file's line: a 100 KB genre someone stored is cut, not printed whole.
SHOWN_VALUE_CHARS = 200


def _shorten(text: str, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _print_summary(summary: dict, dry_run: bool, report: Path | None) -> None:
    table = Table(title="dry run: nothing was written" if dry_run else "summary", show_edge=False)
    table.add_column("files", justify="right")
    table.add_column("outcome")
    for status, n in sorted(summary["status"].items(), key=lambda kv: -kv[1]):
        table.add_row(str(n), status)
    out.print(table)
    if summary["genres"]:
        out.print("genres: " + ", ".join(f"{g} {n}" for g, n in summary["genres"].items()))
    if report is not None:
        out.print(f"report: {escape(str(report))}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--name", default="my-genres", show_default=True, help="Name of the learned model (gtag tag --models NAME).")
@click.option("--min-tracks", type=click.IntRange(2, None), default=None, show_default=f"{8}",
              help="Keep genres with at least N tagged tracks (fewer cannot be learned or estimated).")
@click.option("--map", "map_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Genre map file: 'Old = New' merges, 'Old = -' drops (one per line).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write the model into (default: the user models folder / NAME).")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Embedding cache (SQLite); default: gtag's cache file, or $GTAG_CACHE.")
@click.option("--models", "models_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of the shipped models whose musicnn backbone embeds the tracks.")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=None, show_default="all cores",
              help="Files decoded and embedded at once (threads sharing one model).")
def learn(paths: tuple[Path, ...], name: str, min_tracks: int | None, map_file: Path | None,
          out_dir: Path | None, cache_path: Path | None, models_dir: str | None, jobs: int | None) -> None:
    """Learn a genre model from the genre tags the files under PATHS already carry."""
    from .learn import run_learn
    from .tagger import usable_cpus

    if jobs is None:  # threads share one model: no per-worker memory to plan, unlike gtag tag's processes
        jobs = usable_cpus()
    sys.exit(run_learn(paths, name, min_tracks, map_file, out_dir, cache_path, models_dir, out, err, jobs=jobs))


@main.command(name="models")
@click.option("--models", "models_dir", metavar="NAME|DIR", default=None,
              help="A learned model's name or a folder with manifest.json (default: the shipped models).")
def list_models(models_dir: str | None) -> None:
    """List the available models with their kind, labels, metrics and size."""
    try:
        resolved = resolve_models_dir(models_dir)
        root = Path(resolved) if resolved else default_models_dir()
        specs = read_manifest(root)
    except ModelError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_NO_MODELS)
    # Two-line headers and no column rules: the table fits an 80-column terminal (kind and hop are
    # on each model's line below it).
    table = Table(title=f"models in {root}", box=box.SIMPLE_HEAD)
    for col in ("name", "valid\nacc", "CV\nacc", "real\nclassical", "real\nrock", "electronic\ntagged",
                "weight", "size"):
        table.add_column(col, no_wrap=col != "name", justify="left" if col == "name" else "right")
    for s in specs:
        m = s.metrics
        size = (root / s.file).stat().st_size if (root / s.file).is_file() else 0
        lib = m.get("library_cv") or m.get("library") or {}
        table.add_row(
            escape(s.name),
            _metric(m, "valid_track", "accuracy"), _metric(m, "cv_track", "accuracy"),
            _metric(lib, "classical", "called_by_folder_genre"), _metric(lib, "rock", "called_by_folder_genre"),
            _metric(lib, "electronic", "written_any"),
            f"{s.weight:.2f}", f"{size / 1e6:.1f} MB" if size else "missing",
        )
    out.print(table)
    out.print("[dim]valid acc: track accuracy on GTZAN valid tracks never trained on; CV acc: cross-validated "
              "track accuracy (grouped by track for GTZAN models, by artist for learned ones); real classical / rock: share "
              "of real library tracks (../shared/library, artists never trained on) whose top genre is theirs; "
              "electronic tagged: share of real electronic tracks (no GTZAN genre fits) that would get a genre "
              "(lower is better); weight: share of the default vote (0: run only when picked with --model)[/]")
    for s in specs:
        ab = s.extra.get("abstain")
        if isinstance(ab, dict):
            parts = [f"probability below {ab['min_probability']:g}" if isinstance(ab.get("min_probability"), (int, float)) else "",
                     f"'none of these' above {ab['max_unknown']:g}" if isinstance(ab.get("max_unknown"), (int, float)) else "",
                     f"distance above {ab['max_distance']:g}" if isinstance(ab.get("max_distance"), (int, float)) else ""]
            out.print(f"{escape(s.name)} abstains when: " + ", ".join(p for p in parts if p))
            second = ab.get("second_opinion")
            if isinstance(second, dict) and isinstance(second.get("model"), str) \
                    and isinstance(second.get("min_probability"), (int, float)):
                out.print(f"  unless {escape(second['model'])} (not voting) names the same genre: then from "
                          f"probability {second['min_probability']:g}")
            for t in ab.get("tradeoff", []) if isinstance(ab.get("tradeoff"), list) else []:
                if isinstance(t, dict) and t.get("min_probability") in (0.0, 0.5, 0.7):
                    out.print(f"  [dim]at probability ≥ {t['min_probability']:.1f}: tags {t['coverage']:.0%} of "
                              f"held-out tracks, right {t['precision']:.0%} of the time[/]")
    # the vote's figures, as recorded with its heaviest model
    ens = next((s.extra["ensemble"] for s in sorted(specs, key=lambda s: -s.weight)
                if isinstance(s.extra.get("ensemble"), dict)), None)
    if ens and isinstance(ens.get("valid_track_accuracy"), (int, float)):
        out.print(f"ensemble: valid track accuracy {ens['valid_track_accuracy']:.3f} "
                  f"(best single model: {escape(str(ens.get('best_single', '?')))})")
    for s in specs:
        out.print(f"  {escape(s.name)} ({s.kind}, {s.hop_seconds:g} s hop): {escape(s.description)}")
        variant = s.extra.get("cpu_variant")
        if isinstance(variant, dict):
            out.print(f"    on CPU: {escape(str(variant.get('file')))} ({escape(str(variant.get('what', '')))})")
    out.print(f"labels: {', '.join(specs[0].labels)}")


def _metric(m: dict, key: str, field: str) -> str:
    v = m.get(key, {}).get(field)
    return f"{v:.3f}" if isinstance(v, (int, float)) else "–"


if __name__ == "__main__":
    main()
