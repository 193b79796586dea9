"""`gtag tag PATH…`: the library run on the command line, with its progress, one line per file,
the end-of-run table and the report; ``--from-report`` applies a reviewed report.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gtag import output
from gtag.cli.app import (
    EXIT_NO_AUDIO,
    EXIT_NO_MODELS,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    _check_models,
    _predictor,
    err,
    main,
    out,
    with_model_options,
)
from gtag.models.runtime import ModelError
from gtag.output import one_line
from gtag.run import signals


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

    from gtag.run.cache import CacheError, PredictionCache, default_cache_path
    from gtag.run.jobs import default_jobs
    from gtag.run.library import walk
    from gtag.run.records import FAILED, SKIPPED_UNREADABLE, Record, TagOptions, summarize, write_report
    from gtag.run.tagger import Tagger
    from gtag.run.workers import WORKER_PRELOAD, WorkerPool, remove_dead_slot_folders
    from gtag.tags.tempfiles import remove_stale_temp_files

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
                from gtag.genres.taxonomy import default_taxonomy

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
    from gtag.run.messages import missing_audio

    error, notes = missing_audio(paths, files)
    if error is not None:
        err.print(f"[red]error:[/] {escape(one_line(error))}")
        return False
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(one_line(note))}")
    return True


def _apply_report(report: Path, journal_path: Path | None, config_path: Path | None, dry_run: bool) -> None:
    """gtag tag --from-report: the reviewed rows written (through the journal), then exit."""
    from gtag.keep.review import run_review
    from gtag.run.records import TagOptions
    from gtag.tags import writing

    config = _load_config(config_path)
    writer = writing if dry_run else _open_journal(journal_path, "reviewed report", TagOptions())
    try:
        code = run_review(report, writer, config.separator, dry_run, out, err)
    finally:
        if writer is not writing:
            writer.journal.close()
    sys.exit(code)


def _open_journal(path: Path | None, signature: str, opts):
    """The run's undo journal (gtag.keep.journal), or one error line and exit 2 before any file changes."""
    from gtag.keep.journal import Journal, JournalError, RunJournal, default_journal_path

    try:
        journal = Journal(path or default_journal_path())
        options = {k: getattr(opts, k) for k in ("force", "merge", "replace", "album", "top_k", "separator")}
        return RunJournal(journal, journal.start_run("tag", signature, options))
    except JournalError as exc:
        err.print(f"[red]error:[/] {escape(one_line(str(exc)))}")
        sys.exit(EXIT_USAGE)


def _load_config(path: Path | None):
    """The config file, or one error line and exit code 2 when it is invalid."""
    from gtag.config import ConfigError, load_config

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
    from gtag.run.records import (
        FAILED,
        SKIPPED_CHANGED,
        SKIPPED_EXCLUDED,
        SKIPPED_HAS_GENRE,
        SKIPPED_LOW_CONFIDENCE,
        SKIPPED_NOT_REGULAR,
        SKIPPED_SILENT,
        SKIPPED_UNCERTAIN,
        TAGGED,
        UNCHANGED,
        WOULD_TAG,
    )

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
