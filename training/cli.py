"""`gtag-train` / `python -m training`: retrain the shipped models and re-export them to ONNX."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "exported_models"


def _command() -> str:
    return "gtag-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Retrain gtag's models on a genre-per-folder dataset (GTZAN layout) and export them to ONNX."""


@main.command()
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset root: <genre>/<files> or audio/<genre>/<files>, with splits/{train,valid}.txt.")
@click.option("--out", "out_dir", default=str(DEFAULT_OUT), show_default=True, type=click.Path(file_okay=False),
              help="Where the ONNX files and manifest.json go.")
@click.option("--run-dir", default="runs/classic", show_default=True, type=click.Path(file_okay=False),
              help="Feature cache, metrics JSON and confusion matrices.")
@click.option("--model", "models", multiple=True, type=click.Choice(["rf", "knn"]), help="Default: both.")
@click.option("--jobs", default=0, show_default=True, help="Worker processes (0: all cores).")
@click.option("--seed", default=0, show_default=True)
def classic(data_root: str, out_dir: str, run_dir: str, models: tuple[str, ...], jobs: int, seed: int) -> None:
    """Random forest and k-NN on the 57 GTZAN features."""
    from .classic import ClassicOptions, train_classic

    opts = ClassicOptions(models=models or ("rf", "knn"), jobs=jobs, seed=seed)
    train_classic(data_root, out_dir, run_dir, opts, command=_command())


if __name__ == "__main__":
    main()
