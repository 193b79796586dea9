"""The `gtag` command line: predict, tag, models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .models import ModelError, load_models, read_manifest, default_models_dir

# Imports stay light here: `gtag --help` and `gtag models` need neither numpy nor ONNX Runtime, and
# every command imports what it uses inside its function.

# Exit codes (documented in the README).
EXIT_OK = 0  # every file succeeded
EXIT_SOME_FAILED = 1  # at least one file failed; the others were processed
EXIT_USAGE = 2  # bad arguments (click's own code)
EXIT_NO_MODELS = 3  # models missing, corrupt or unloadable: nothing was processed

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _split_models(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _predictor(models_dir: str | None, model: tuple[str, ...], device: str, threads: int = 0):
    """The Predictor of a command: the shipped ensemble with its manifest weights, or the models
    picked with --model, which vote equally (the manifest's weights describe the default ensemble;
    a picked model must not be silenced by a weight of 0). ``threads``: ONNX Runtime threads per
    session (0: its default, one per core)."""
    from .pipeline import Predictor

    names = _split_models(model)
    try:
        models = load_models(models_dir, names, device=device, threads=threads)
    except ModelError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_NO_MODELS)
    return Predictor(models, weights=dict.fromkeys(names, 1.0) if names else None)


model_options = [
    click.option("--model", "-m", multiple=True, metavar="NAME[,NAME]",
                 help="Models to use, voting equally (repeat or comma-separate); default: the ensemble (models with a vote weight above zero, with those weights)."),
    click.option("--models", "models_dir", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Folder with manifest.json and ONNX files (default: the shipped models, or $GTAG_MODELS)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="ONNX Runtime device: auto uses CUDA when a GPU and onnxruntime-gpu are usable."),
]


def with_model_options(f):
    for opt in reversed(model_options):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtag")
def main() -> None:
    """Tag a music library with genres predicted from the audio itself."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_model_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (one object per file) for scripts.")
@click.option("--top", default=5, show_default=True, help="Genres shown per file in the table.")
def predict(files: tuple[Path, ...], model: tuple[str, ...], models_dir: str | None, device: str,
            as_json: bool, top: int) -> None:
    """Show the predicted genre of each FILE, per model and voted, with probabilities."""
    from .audio import AudioLoadError

    # One ONNX Runtime thread per session: on musicnn's 8-window chunks a second thread was no faster
    # (0.49 s against 0.47 s for a 3-minute track) and cost 1.25x the CPU.
    predictor = _predictor(models_dir, model, device, threads=1)
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
                err.print(f"[red]error:[/] {escape(msg)}")
            continue
        if as_json:
            results.append(pred.to_json())
        else:
            _print_prediction(pred, top)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


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


def _print_prediction(pred, top: int) -> None:
    from .vote import top_k

    head = f"[bold]{escape(str(pred.path))}[/]  →  [bold green]{pred.genre}[/] ({pred.confidence:.0%})"
    info = f"{_fmt_time(pred.duration)}, {len(pred.window_genres)} windows"
    if pred.truncated:
        info += ", long file: analysed in part"
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
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Write nothing for a file whose voted genre is less probable than this.")
@click.option("--top-k", type=click.IntRange(1, 10), default=1, show_default=True,
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
def tag(paths: tuple[Path, ...], model: tuple[str, ...], models_dir: str | None, device: str, dry_run: bool,
        force: bool, min_confidence: float, top_k: int, jobs: int, report: Path | None,
        write_confidence: bool, cache_path: Path | None, no_cache: bool, backend: str,
        ray_address: str | None) -> None:
    """Predict the genre of every audio file under PATHS and write it into the file's tags."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .cache import PredictionCache, default_cache_path
    from .library import walk
    from .tagger import FAILED, Record, TagOptions, Tagger, default_jobs, summarize, write_report

    if report is not None and report.suffix.lower() not in (".json", ".csv"):
        raise click.BadParameter("must end in .json or .csv", param_hint="--report")
    # An explicit --jobs 1 runs on one core, as each worker of --jobs N does (one-thread sessions):
    # on a busy machine extra ONNX Runtime threads only contend (musicnn: 1.35x slower with two).
    predictor = _predictor(models_dir, model, device, threads=1 if jobs == 1 and backend == "local" else 0)
    files = list(walk(paths))
    if jobs is None:  # all usable cores, as memory allows; no more workers than files to share
        jobs = max(1, min(default_jobs(), len(files)))
    opts = TagOptions(dry_run=dry_run, force=force, min_confidence=min_confidence, top_k=top_k, jobs=jobs,
                      write_confidence=write_confidence, backend=backend, ray_address=ray_address)
    cache = None if no_cache else PredictionCache(cache_path or default_cache_path(), predictor.signature)
    records: list[Record] = []
    interrupted = False
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=out, transient=True)
    try:
        with progress:
            task = progress.add_task("dry run" if dry_run else "tagging", total=len(files), rate="")
            for rec in Tagger(predictor, opts, cache).run(files):
                records.append(rec)
                elapsed = progress.tasks[0].elapsed or 0
                progress.update(task, advance=1, rate=f"{len(records) / elapsed:.1f} files/s" if elapsed else "")
                _print_record(rec, dry_run, progress.console)
    except KeyboardInterrupt:
        interrupted = True
        err.print("[yellow]interrupted:[/] files done so far are tagged; the rest are untouched. "
                  "Run the same command again to resume.")
    finally:
        if cache is not None:
            cache.close()
    if report is not None:
        write_report(records, report, top_k)
    _print_summary(summarize(records), dry_run, report)
    if interrupted:
        sys.exit(130)
    sys.exit(EXIT_SOME_FAILED if any(r.status == FAILED for r in records) else EXIT_OK)


def _print_record(rec, dry_run: bool, console: Console) -> None:
    from .tagger import FAILED, SKIPPED_HAS_GENRE, SKIPPED_LOW_CONFIDENCE, TAGGED, UNCHANGED, WOULD_TAG

    # Paths, tag values and errors are shown as they are: a file named "song [live].mp3" must
    # not be read as rich markup.
    path = escape(rec.path)
    before = escape("; ".join(rec.existing) or "—")
    if rec.status == FAILED:
        err.print(f"[red]error:[/] {escape(rec.error or '')}")
    elif rec.status in (TAGGED, WOULD_TAG):
        verb = "would write" if rec.status == WOULD_TAG else "wrote"
        console.print(f"{path}: {before} → [green]{'; '.join(rec.written)}[/] "
                      f"[dim]({rec.confidence:.0%}, {verb})[/]")
    elif rec.status == SKIPPED_LOW_CONFIDENCE:
        console.print(f"{path}: [yellow]low confidence[/] ({rec.genre} {rec.confidence:.0%}), left as {before}")
    elif rec.status == SKIPPED_HAS_GENRE and dry_run:
        console.print(f"[dim]{path}: has genre {before}, skipped (use --force to retag)[/]")
    elif rec.status == UNCHANGED and dry_run:
        console.print(f"[dim]{path}: already {before}[/]")


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


@main.command(name="models")
@click.option("--models", "models_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with manifest.json (default: the shipped models).")
def list_models(models_dir: str | None) -> None:
    """List the available models with their kind, labels, metrics and size."""
    root = Path(models_dir) if models_dir else default_models_dir()
    try:
        specs = read_manifest(root)
    except ModelError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_NO_MODELS)
    table = Table(title=f"models in {root}")
    for col in ("name", "kind", "hop", "valid acc", "CV acc", "weight", "size"):
        table.add_column(col, no_wrap=True)
    for s in specs:
        m = s.metrics
        size = (root / s.file).stat().st_size if (root / s.file).is_file() else 0
        table.add_row(
            s.name, s.kind, f"{s.hop_seconds:g} s",
            _metric(m, "valid_track", "accuracy"), _metric(m, "cv_track", "accuracy"),
            f"{s.weight:.2f}", f"{size / 1e6:.1f} MB" if size else "missing",
        )
    out.print(table)
    out.print("[dim]acc: track-level accuracy on held-out validation tracks, and 5-fold CV grouped by track; "
              "weight: share of the default vote (0: run only when picked with --model)[/]")
    ens = next((s.extra["ensemble"] for s in specs if isinstance(s.extra.get("ensemble"), dict)), None)
    if ens and isinstance(ens.get("valid_track_accuracy"), (int, float)):
        out.print(f"ensemble: valid track accuracy {ens['valid_track_accuracy']:.3f} "
                  f"(best single model: {escape(str(ens.get('best_single', '?')))})")
    for s in specs:
        out.print(f"  {s.name}: {s.description}")
        variant = s.extra.get("cpu_variant")
        if isinstance(variant, dict):
            out.print(f"    on CPU: {escape(str(variant.get('file')))} ({escape(str(variant.get('what', '')))})")
    out.print(f"labels: {', '.join(specs[0].labels)}")


def _metric(m: dict, key: str, field: str) -> str:
    v = m.get(key, {}).get(field)
    return f"{v:.3f}" if isinstance(v, (int, float)) else "–"


if __name__ == "__main__":
    main()
