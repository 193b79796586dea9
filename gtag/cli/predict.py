"""`gtag predict FILE…`: one track's genre (and style), its confidence, the MSD tags and the
timeline of its windows; ``--json`` for scripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from gtag.cli.app import EXIT_OK, EXIT_SOME_FAILED, _predictor, err, main, out, with_model_options
from gtag.output import one_line


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
    from gtag.audio.decode import AudioLoadError
    from gtag.run.messages import file_failure

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
    from gtag.audio.decode import WINDOW_SECONDS
    from gtag.models.vote import top_k

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
