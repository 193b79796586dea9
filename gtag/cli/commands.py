"""The smaller commands: `gtag undo`, `gtag learn` and `gtag models`; each hands its work to the
wing that owns it (gtag.keep.undo, gtag.learn, gtag.models.runtime.catalog).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from gtag.cli.app import EXIT_NO_MODELS, EXIT_OK, err, main, out
from gtag.models.catalog import resolve_models_dir
from gtag.models.runtime import ModelError
from gtag.output import one_line


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
    from gtag.keep.undo import UndoOptions, run_undo

    if not paths and not list_runs:
        raise click.UsageError("give the files or folders to undo (or --list)")
    opts = UndoOptions(run=run_id, force=force, dry_run=dry_run)
    sys.exit(run_undo(list(paths), opts, journal_path, out, err, list_runs=list_runs))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--name", default="my-genres", show_default=True, help="Name of the learned model (gtag tag --models NAME).")
@click.option("--min-tracks", type=click.IntRange(2, None), default=None, show_default=f"{8}",
              help="Keep genres with at least N tagged tracks (fewer cannot be learned or estimated; a smaller "
                   "style of a kept genre teaches that genre).")
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
    from gtag.learn.learner import run_learn
    from gtag.run.jobs import usable_cpus

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
    from gtag.models.catalog import collect, render

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
