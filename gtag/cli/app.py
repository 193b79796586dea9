"""The `gtag` command line: predict, tag, models."""

from __future__ import annotations

import os
import sys

# One BLAS thread, unless the user says otherwise (set before numpy loads; workers inherit it).
# gtag's matrix products are small (a mel filterbank on a few hundred frames) and run between
# ONNX Runtime calls; OpenBLAS's extra threads spin while they wait for work, taking the core the
# decoder and the model need: `gtag tag --jobs 1` on 18 minutes of mp3 took 3.0 s with them and
# 1.95 s without, on a busy 2-core machine. --jobs N is how gtag uses more cores.



for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:  # Ctrl-C while these load (~0.3 s) exits 130 too, not with an import traceback

    import click
    from rich.console import Console
    from rich.markup import escape

    from gtag import __version__, output
    from gtag.config import DEFAULT_MAX_WINDOWS
    from gtag.exitcodes import Exit
    from gtag.models.catalog import resolve_models_dir
    from gtag.models.runtime import ModelError, load_models, select_models
    from gtag.output import one_line
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
    from gtag.predict.pipeline import Predictor

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

