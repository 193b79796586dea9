"""The `gtag` command line: predict, tag, models."""

from __future__ import annotations

import contextlib
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
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from . import __version__, output, signals
    from .config import DEFAULT_MAX_WINDOWS
    from .exitcodes import Exit
    from .models import ModelError, load_models, select_models
except KeyboardInterrupt:
    sys.exit(130)

# Imports stay light here: `gtag --help` and `gtag models` need neither numpy nor ONNX Runtime, and
# every command imports what it uses inside its function.

# Exit codes: the one table in gtag.exitcodes (docs/exit-codes.md); these names are kept for scripts.
EXIT_OK = Exit.OK
EXIT_SOME_FAILED = Exit.FAILED
EXIT_USAGE = Exit.USAGE  # click's own code for bad arguments
EXIT_NO_MODELS = Exit.NO_MODELS
EXIT_NO_AUDIO = Exit.NO_AUDIO
EXIT_INTERRUPTED = Exit.INTERRUPTED
EXIT_TERMINATED = Exit.TERMINATED

# Writes that fail (a full disk, a closed pipe, a terminal gone) or that the terminal's encoding
# cannot hold never raise here (gtag.output); the commands look at what was lost.
out = Console(file=output.STDOUT, highlight=False, soft_wrap=True)
err = Console(file=output.STDERR, highlight=False, soft_wrap=True)


def resolve_models_dir(value: str | None) -> str | None:
    """``--models``: a folder, else the name of a model learned with `gtag learn`."""
    if value is None or Path(value).expanduser().is_dir():
        return value
    from .catalog import NAME_PATTERN, user_models_dir
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
@click.option("--depth", type=click.Choice(["genre", "style"]), default="style", show_default=True,
              help="How deep in the genre > style taxonomy the shown decision goes.")
def predict(files: tuple[Path, ...], model: tuple[str, ...], models_dir: str | None, device: str,
            max_windows: int, as_json: bool, top: int, depth: str) -> None:
    """Show the predicted genre of each FILE, per model and voted, with probabilities."""
    from .audio import AudioLoadError
    from .messages import file_failure

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
            msg = file_failure(path, exc)  # the words gtag tag and gtag learn use for this file
            results.append({"path": str(path), "error": msg})
            if not as_json:
                err.print(f"[red]error:[/] {escape(one_line(msg))}")
            continue
        reason = predictor.abstain_reason(pred)
        agreed = predictor.agreed_by(pred)
        decision = predictor.decide(pred, depth)
        if decision is not None:  # the taxonomy decides: genre > style, from the vote and the MSD tags
            reason = decision.reason
            agreed = agreed if decision.path and decision.source != "tags" else None
        if as_json:
            extra = {}
            if decision is not None:
                extra = {"path_written": list(decision.path), "source": decision.source or None,
                         "nodes": {n: round(p, 6) for n, p in predictor.node_scores(pred).items()}}
            results.append(dict(pred.to_json(), would_tag=reason is None, **({"reason": reason} if reason else {}),
                                **({"agreed": agreed} if agreed else {}), **extra,
                                **({"tags": {n: {t: round(x, 6) for t, x in v} for n, v in pred.tags.items()}}
                                   if pred.tags else {})))
        else:
            _print_prediction(pred, top, reason, agreed, decision)
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


def _print_prediction(pred, top: int, reason: str | None = None, agreed: str | None = None,
                      decision=None) -> None:
    from .audio import WINDOW_SECONDS
    from .vote import top_k

    head = f"[bold]{escape(str(pred.path))}[/]  →  [bold green]{escape(pred.genre)}[/] ({pred.confidence:.0%})"
    if decision is not None and decision.path:
        shown = " › ".join(decision.path)
        via = {"tags": " from its MSD tags", "agree": ", its MSD tags agree"}.get(decision.source, "")
        head = f"[bold]{escape(str(pred.path))}[/]  →  [bold green]{escape(shown)}[/] ({decision.confidence:.0%}{via})"
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
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@with_model_options
@click.option("--dry-run", "-n", is_flag=True, help="Show existing → proposed genre for each file; change nothing.")
@click.option("--from-report", "from_report", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Write the 'written' genres of a reviewed report (CSV or JSON of a --dry-run), as edited; no "
                   "analysis. A row whose file's genres are no longer its 'existing' is refused.")
@click.option("--force", "--overwrite", "force", is_flag=True, help="Also retag files that already have a genre.")
@click.option("--merge", is_flag=True,
              help="Add the predicted genres to the ones a file has (no doubles in any spelling) instead of skipping it.")
@click.option("--replace", is_flag=True,
              help="Like --force, and also replace a finer genre a file has (--force keeps its Alternative Rock "
                   "under gtag's Rock).")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Undo journal (SQLite), where every change is recorded before it is made (gtag undo); "
                   "default: undo.sqlite3 beside the cache, or $GTAG_JOURNAL.")
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
@click.option("--depth", type=click.Choice(["genre", "style"]), default=None, show_default="style, or the config's",
              help="How deep in the genre > style taxonomy to write: the genre alone, or its style too where "
                   "gtag is sure of one (e.g. Rock; Alternative Rock).")
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
        dry_run: bool, from_report: Path | None,
        force: bool, merge: bool, replace: bool, journal_path: Path | None, album: bool, config_path: Path | None,
        min_confidence: float | None, depth: str | None, top_k: int | None, jobs: int, report: Path | None,
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

    if from_report is not None:
        if paths:
            raise click.UsageError("--from-report writes the rows of a report: give no PATHS")
        _apply_report(from_report, journal_path, config_path, dry_run)
    if not paths:
        raise click.UsageError("Missing argument 'PATHS...'.")
    if report is not None and report.suffix.lower() not in (".json", ".csv"):
        raise click.BadParameter("must end in .json or .csv", param_hint="--report")
    if merge and (force or replace):
        raise click.UsageError("--merge adds to a file's genres and --force replaces them: pick one")
    force = force or replace
    if report is not None:
        _check_report_path(report)
    output.STDOUT.reset()
    output.STDERR.reset()
    config = _load_config(config_path)
    # Flags win over the config file, which wins over the built-in defaults.
    # None: neither the flag nor the config sets one, so the models' own abstain rule decides
    min_confidence = min_confidence if min_confidence is not None else config.min_confidence
    top_k = top_k if top_k is not None else (config.top_k or 1)
    depth = depth or config.depth or "style"
    records: list[Record] = []
    stopped = None  # exit code of a run ended by SIGINT / SIGTERM / SIGHUP, or a closed pipe
    report_failed = False
    cache = None
    run_journal = None
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
            # Nothing to tag: "no audio files found" (exit 4), unless a folder could not be read (exit 1).
            if not (records and not files) and not _found_audio(paths, files):
                if report is not None:  # this run's (empty) report, never a stale one; its folder was checked
                    with contextlib.suppress(OSError):
                        write_report([], report, top_k)
                sys.exit(EXIT_NO_AUDIO)
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
            if predictor.nodes is not None:  # the taxonomy's nodes are names gtag may write too
                from .taxonomy import default_taxonomy

                labels += sorted(default_taxonomy().nodes)
            unknown = config.policy.unknown(labels)
            if unknown:  # a typo would otherwise silently whitelist or exclude nothing
                err.print(f"[red]error:[/] config {escape(str(config.source))}: unknown genre "
                          f"{escape(', '.join(unknown))} (labels: {', '.join(labels)})")
                sys.exit(EXIT_USAGE)
            opts = TagOptions(dry_run=dry_run, force=force, min_confidence=min_confidence, top_k=top_k,
                              jobs=jobs, write_confidence=write_confidence, backend=backend,
                              ray_address=ray_address, separator=config.separator, policy=config.policy,
                              merge=merge, album=album, depth=depth, replace=replace)
            try:
                cache = None if no_cache else PredictionCache(cache_path or default_cache_path(), predictor.signature)
            except CacheError as exc:
                err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
                sys.exit(EXIT_USAGE)
            run_journal = None if dry_run else _open_journal(journal_path, predictor.signature, opts)
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=out,
                                transient=True)
            with progress:
                task = progress.add_task("dry run" if dry_run else "tagging", total=len(files), rate="")
                for rec in Tagger(predictor, opts, cache, pool, journal=run_journal).run(files):
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
            if run_journal is not None:
                run_journal.journal.close()
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


def _found_audio(paths, files: list[Path]) -> bool:
    """Say which of ``paths`` hold no audio file; False (one error line) when none of them does."""
    from .messages import missing_audio

    error, notes = missing_audio(paths, files)
    if error is not None:
        err.print(f"[red]error:[/] {escape(one_line(error))}")
        return False
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(one_line(note))}")
    return True


def _apply_report(report: Path, journal_path: Path | None, config_path: Path | None, dry_run: bool) -> None:
    """gtag tag --from-report: the reviewed rows written (through the journal), then exit."""
    from . import tags
    from .review import run_review
    from .tagger import TagOptions

    config = _load_config(config_path)
    writer = tags if dry_run else _open_journal(journal_path, "reviewed report", TagOptions())
    try:
        code = run_review(report, writer, config.separator, dry_run, out, err)
    finally:
        if writer is not tags:
            writer.journal.close()
    sys.exit(code)


def _open_journal(path: Path | None, signature: str, opts):
    """The run's undo journal (gtag.journal), or one error line and exit 2 before any file changes."""
    from .journal import Journal, JournalError, RunJournal, default_journal_path

    try:
        journal = Journal(path or default_journal_path())
        options = {k: getattr(opts, k) for k in ("force", "merge", "replace", "album", "top_k", "separator")}
        return RunJournal(journal, journal.start_run("tag", signature, options))
    except JournalError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        sys.exit(EXIT_USAGE)


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
    chosen = "; ".join(album["genres"]) or f"nothing ({album.get('reason') or 'low confidence'})"
    console.print(f"[bold]album {escape(album['key'])}[/] ({album['voters']} of {album['tracks']} tracks voted): "
                  f"[green]{escape(chosen)}[/] [dim]({shown})[/]")


def _print_record(rec, dry_run: bool, console: Console) -> None:
    from .tagger import (FAILED, SKIPPED_CHANGED, SKIPPED_EXCLUDED, SKIPPED_HAS_GENRE, SKIPPED_LOW_CONFIDENCE,
                         SKIPPED_NOT_REGULAR, SKIPPED_SILENT, SKIPPED_UNCERTAIN, TAGGED, UNCHANGED, WOULD_TAG)

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
                      f"[dim]({rec.confidence:.0%}, {f'{escape(rec.agreed)} agrees, ' if rec.agreed else ''}"
                      f"{'from its MSD tags, ' if rec.source == 'tags' else ''}"
                      f"{'its MSD tags agree, ' if rec.source == 'agree' else ''}{verb})[/]"
                      + (f" [dim]{escape(one_line(_shorten(rec.note)))}[/]" if rec.note else ""))
    elif rec.status == SKIPPED_UNCERTAIN:
        console.print(f"{path}: [yellow]uncertain[/] (best guess {escape(rec.genre or '?')} {rec.confidence:.0%}: "
                      f"{escape(one_line(_shorten(rec.reason or '')))}), left as {before}")
    elif rec.status == SKIPPED_LOW_CONFIDENCE:
        console.print(f"{path}: [yellow]low confidence[/] ({escape(one_line(_shorten(rec.reason or '')))}), left as {before}")
    elif rec.status == SKIPPED_EXCLUDED:  # the rule that applied: the config refused the top genre
        console.print(f"{path}: [yellow]excluded by config[/] ({escape(one_line(_shorten(rec.reason or '')))}), left as {before}")
    elif rec.status == SKIPPED_HAS_GENRE and dry_run:
        console.print(f"[dim]{path}: has genre {before}, skipped (use --force to retag)[/]")
    elif rec.status == UNCHANGED and rec.note:  # gtag heard something else and says why it wrote nothing
        console.print(f"{path}: left as {before} [dim](gtag hears {escape('; '.join(rec.genres))}; "
                      f"{escape(one_line(_shorten(rec.note)))})[/]")
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
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--run", "run_id", metavar="ID", default=None,
              help="Undo this run's writes (gtag undo --list shows them); default: each file's last gtag write.")
@click.option("--list", "list_runs", is_flag=True, help="List the runs in the journal and exit.")
@click.option("--force", is_flag=True, help="Also restore a file whose genre was changed since gtag wrote it.")
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be restored; change nothing.")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Undo journal (default: undo.sqlite3 beside the cache, or $GTAG_JOURNAL).")
def undo(paths: tuple[Path, ...], run_id: str | None, list_runs: bool, force: bool, dry_run: bool,
         journal_path: Path | None) -> None:
    """Give the audio files under PATHS back the genres they had before gtag wrote them."""
    from .undo import UndoOptions, run_undo

    if not paths and not list_runs:
        raise click.UsageError("give the files or folders to undo (or --list)")
    opts = UndoOptions(run=run_id, force=force, dry_run=dry_run)
    sys.exit(run_undo(list(paths), opts, journal_path, out, err, list_runs=list_runs))


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
              help="Only this folder: a learned model's name or a folder with manifest.json "
                   "(default: the shipped models and every model learned with gtag learn).")
@click.option("--json", "as_json", is_flag=True, help="Print the same as JSON, for scripts.")
def list_models(models_dir: str | None, as_json: bool) -> None:
    """List the shipped and learned models: where they live, labels, vote weight and metrics."""
    from .catalog import collect, render

    try:
        cat = collect(resolve_models_dir(models_dir))
    except ModelError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        sys.exit(EXIT_NO_MODELS)
    if as_json:
        click.echo(json.dumps(cat, indent=2))
    else:
        render(cat, out, err)
    # a folder whose manifest gtag cannot read: it is listed with its error, and the exit code says so
    sys.exit(EXIT_NO_MODELS if any(c.get("error") for c in cat["collections"]) else EXIT_OK)


if __name__ == "__main__":
    main()
