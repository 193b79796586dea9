"""`gtag-train` / `python -m training`: retrain the shipped models and re-export them to ONNX."""

from __future__ import annotations

import functools
import importlib.util
import shlex
import sys
from pathlib import Path

import click

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "exported_models"
# What the train extra brings that commands import (import name -> what pip installs).
TRAIN_EXTRA = {"torch": "torch", "sklearn": "scikit-learn", "skl2onnx": "skl2onnx"}
INSTALL_HINT = ('pip install "gtag[train]" (pip install torch==2.13.0 first for the CPU-only torch, '
                'not a multi-GB CUDA build)')


def _command() -> str:
    return "gtag-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked package is as good as none
        return False


def missing_modules(modules) -> list[str]:
    """The pip names of ``modules`` (import names of the train extra) that cannot be imported here."""
    return [TRAIN_EXTRA.get(m, m) for m in modules if not _importable(m)]


def _needs(*modules: str):
    """The command needs these modules of the train extra: without them it says so in one line,
    before any work, and exits 2 (a usage error: the install is incomplete, nothing was tried)."""
    def wrap(f):
        @functools.wraps(f)
        def run(*args, **kw):
            missing = missing_modules(modules)
            if missing:
                name = click.get_current_context().info_name
                click.echo(f"gtag-train {name}: needs the train extra (missing: {', '.join(missing)}); "
                           f"install it with {INSTALL_HINT}", err=True)
                sys.exit(2)
            return f(*args, **kw)
        return run
    return wrap


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
@_needs("sklearn", "skl2onnx")
def classic(data_root: str, out_dir: str, run_dir: str, models: tuple[str, ...], jobs: int, seed: int) -> None:
    """Random forest and k-NN on the 57 GTZAN features."""
    from .classic import ClassicOptions, train_classic

    opts = ClassicOptions(models=models or ("rf", "knn"), jobs=jobs, seed=seed)
    train_classic(data_root, out_dir, run_dir, opts, command=_command())


_DATA = click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Dataset root with splits/{train,valid}.txt (e.g. ../shared/gtzan).")
_OUT = click.option("--out", "out_dir", default=str(DEFAULT_OUT), show_default=True, type=click.Path(file_okay=False),
                    help="Where the ONNX file goes and manifest.json is updated.")


def _fit_flags(f):
    """Flags shared by the two neural models."""
    for opt in reversed([
        click.option("--epochs", type=int, default=None, help="Maximum epochs of the final fit."),
        click.option("--patience", type=int, default=None, help="Early stop after this many epochs without gain."),
        click.option("--max-minutes", type=float, default=None, help="Wall-clock cap on the final fit."),
        click.option("--epoch-windows", type=int, default=None, help="Training windows drawn per epoch."),
        click.option("--threads", type=int, default=None, help="torch CPU threads."),
        click.option("--seed", type=int, default=None),
    ]):
        f = opt(f)
    return f


def _overrides(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


@main.command()
@_DATA
@_OUT
@click.option("--run-dir", default="runs/cnn", show_default=True, type=click.Path(file_okay=False),
              help="Checkpoint, curves, confusion matrix and metrics JSON.")
@click.option("--search/--no-search", default=True, show_default=True,
              help="Short search over depth, width, dropout and learning rate before the final fit.")
@click.option("--search-epochs", type=int, default=None, help="Epochs per searched config.")
@click.option("--tilt-p", type=float, default=None, help="Share of windows given a random EQ tilt (default 0).")
@click.option("--lowpass-p", type=float, default=None, help="Share of windows low-passed at 5-10 kHz (default 0).")
@_fit_flags
@_needs("torch", "sklearn")
def cnn(data_root: str, out_dir: str, run_dir: str, search: bool, search_epochs: int | None,
        tilt_p: float | None, lowpass_p: float | None, **fit) -> None:
    """CNN on log-mel patches of 3 s windows (exports cnn.onnx)."""
    from .cnn import CnnOptions, train_cnn

    kw = _overrides(search_epochs=search_epochs, tilt_p=tilt_p, lowpass_p=lowpass_p, **fit)
    if not search:
        kw["search"] = ()
    train_cnn(data_root, out_dir, run_dir, CnnOptions(**kw), command=_command())


@main.command()
@_DATA
@_OUT
@click.option("--run-dir", default="runs/wavenet", show_default=True, type=click.Path(file_okay=False),
              help="Checkpoint, curves, confusion matrix and metrics JSON.")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@_fit_flags
@_needs("torch", "sklearn")
def wavenet(data_root: str, out_dir: str, run_dir: str, lr: float | None, **fit) -> None:
    """WaveNet-style net on raw 3 s windows (exports wavenet.onnx)."""
    from .wavenet import WaveNetOptions, train_wavenet

    train_wavenet(data_root, out_dir, run_dir, WaveNetOptions(**_overrides(lr=lr, **fit)), command=_command())


@main.command("wavenet-distil")
@_DATA
@_OUT
@click.option("--run-dir", default="runs/distil", show_default=True, type=click.Path(file_okay=False),
              help="Teacher-label cache, candidate model, curves and report.json.")
@click.option("--library", "library_root", default=None, type=click.Path(exists=True, file_okay=False),
              help="A real library (MANIFEST.tsv) to measure on; never trained on.")
@click.option("--unlabelled", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of unlabelled audio the student also learns from (teacher labels only; repeatable).")
@click.option("--teacher", default=None, help="Manifest name of the teacher (default: musicnn).")
@click.option("--temperature", type=float, default=None, help="Softening of the KL term.")
@click.option("--alpha", type=float, default=None, help="Share of the KL term (the rest: CE on labels).")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--no-export", is_flag=True, help="Only report; never replace wavenet.onnx.")
@_fit_flags
@_needs("torch", "sklearn")
def wavenet_distil(data_root: str, out_dir: str, run_dir: str, library_root: str | None, unlabelled: tuple[str, ...],
                   teacher: str | None, temperature: float | None, alpha: float | None, lr: float | None,
                   no_export: bool, **fit) -> None:
    """WaveNet distilled from the best model; replaces wavenet.onnx only if it beats it on both sets."""
    from .distil import DistilOptions, train_distil

    opts = DistilOptions(**_overrides(teacher=teacher, temperature=temperature, alpha=alpha, lr=lr, **fit))
    train_distil(data_root, out_dir, run_dir, opts, library_root, unlabelled, command=_command(), ship=not no_export)


@main.command("musicnn-convert")
@click.option("--wheel", required=True, type=click.Path(exists=True, dir_okay=False),
              help="musicnn-0.1.0-py3-none-any.whl (pip download --no-deps musicnn==0.1.0).")
@click.option("--out", "out_dir", default="runs/musicnn", show_default=True, type=click.Path(file_okay=False),
              help="Converted weights (musicnn_msd.npz), TF reference outputs, report.")
@click.option("--fixture", default=None, type=click.Path(dir_okay=False),
              help="Also write the CI reference fixture here (tests/data/musicnn_reference.npz).")
@click.option("--audio", "audio_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Audio files whose middle patch joins the reference patches (repeatable).")
@click.option("--tf-python", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Interpreter with tensorflow-cpu (default: .venv-convert/bin/python).")
@_needs("torch")
def musicnn_convert(wheel: str, out_dir: str, fixture: str | None, audio_files: tuple[str, ...],
                    tf_python: str | None) -> None:
    """Port musicnn's MSD checkpoint from its wheel to PyTorch and prove the port against TensorFlow."""
    import json

    from .musicnn_convert import convert

    report = convert(wheel, out_dir, fixture, audio_files, tf_python)
    click.echo(json.dumps(report["max_abs_diff_torch_vs_tf"], indent=2))


@main.command()
@_DATA
@_OUT
@click.option("--weights", default="runs/musicnn/musicnn_msd.npz", show_default=True,
              type=click.Path(dir_okay=False), help="Converted musicnn weights (gtag-train musicnn-convert).")
@click.option("--run-dir", default="runs/transfer", show_default=True, type=click.Path(file_okay=False),
              help="Embedding cache, metrics JSON, confusion matrices.")
@click.option("--fixture", default="tests/data/musicnn_reference.npz", show_default=True,
              type=click.Path(dir_okay=False), help="Reference patches the exported ONNX is checked against.")
@click.option("--seed", default=0, show_default=True)
@_needs("torch", "sklearn")
def transfer(data_root: str, out_dir: str, weights: str, run_dir: str, fixture: str, seed: int) -> None:
    """GTZAN head on musicnn's pretrained MSD embeddings (exports musicnn.onnx and its CPU variant)."""
    from .transfer import TransferOptions, train_transfer

    train_transfer(data_root, out_dir, run_dir, weights, TransferOptions(seed=seed), command=_command(),
                   fixture=fixture if Path(fixture).is_file() else None)


@main.command()
@_DATA
@_OUT
@click.option("--run-dir", default="runs/ensemble", show_default=True, type=click.Path(file_okay=False),
              help="Train-only model copies, validation probabilities, report.")
@click.option("--transfer-dir", default="runs/transfer", show_default=True, type=click.Path(file_okay=False),
              help="Run dir of `gtag-train transfer` (its train-only musicnn).")
@click.option("--classic-cache", default="runs/classic/cache", show_default=True, type=click.Path(file_okay=False),
              help="Feature cache of `gtag-train classic`.")
@_needs("sklearn", "skl2onnx")
def ensemble(data_root: str, out_dir: str, run_dir: str, transfer_dir: str, classic_cache: str) -> None:
    """Choose the vote weights on validation, among the models it can score (run after the models).

    The only command that sets vote weights. A model without a train-only version (musicnn before
    `gtag-train transfer` ran) is skipped, and said so; while a skipped model votes, every weight
    is kept as it is."""
    from .ensemble import EnsembleError, choose_ensemble

    try:
        choose_ensemble(data_root, out_dir, run_dir, transfer_dir, classic_cache, command=_command())
    except EnsembleError as e:
        raise click.ClickException(str(e)) from None


@main.command(name="musicnn-head")
@_DATA
@_OUT
@click.option("--library", "library_root", default="../shared/library", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="A real library (tagged files, MANIFEST.tsv).")
@click.option("--run-dir", default="runs/musicnn-head", show_default=True, type=click.Path(file_okay=False),
              help="Embedding cache and report.")
@_needs("sklearn")
def musicnn_head(data_root: str, out_dir: str, library_root: str, run_dir: str) -> None:
    """Refit the shipped musicnn genre head on GTZAN + a real library (reject class, calibration, abstain)."""
    import json

    from .musicnn_head import train

    report = train(data_root, library_root, out_dir, run_dir, command=_command())
    click.echo(json.dumps({k: report[k] for k in ("abstain", "temperature")}, indent=2, default=float))


@main.command(name="taxonomy")
@_DATA
@_OUT
@click.option("--library", "library_root", default="../shared/library", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="A real library (tagged files, MANIFEST.tsv).")
@click.option("--run-dir", default="runs/taxonomy", show_default=True, type=click.Path(file_okay=False),
              help="MSD-tag cache and report.")
@click.option("--head-run", default="runs/musicnn-head", show_default=True, type=click.Path(file_okay=False),
              help="Where `gtag-train musicnn-head` left its held-out decisions (to measure the whole decision).")
def taxonomy(data_root: str, out_dir: str, library_root: str, run_dir: str, head_run: str) -> None:
    """Fit the taxonomy's node scorers on musicnn's MSD tags (Electronic, Rock > Alternative Rock...)."""
    from .taxonomy import train

    block = train(data_root, library_root, out_dir, run_dir, head_run, command=_command())
    for name, d in block["nodes"].items():
        lib = d["held_out"]["library"]
        click.echo(f"{name:18s} from {d['min_probability']:.2f}: real tracks covered {lib['coverage']:.0%}, "
                   f"right {lib['precision'] or 0:.0%}{'' if d['default'] else ' (off by default)'}")


@main.command(name="reference")
@_DATA
@_OUT
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "valid"]), default=("train", "valid"),
              show_default=True, help="Which splits' tracks to embed (train only: to measure on valid).")
@click.option("--run-dir", default="runs/reference", show_default=True, type=click.Path(file_okay=False),
              help="Embedding cache.")
def reference(data_root: str, out_dir: str, splits: tuple[str, ...], run_dir: str) -> None:
    """Embed a labelled dataset with the shipped backbone: the "none of these" that gtag learn teaches."""
    from .reference import build_reference

    card = build_reference(data_root, out_dir, run_dir, tuple(splits), command=_command())
    click.echo(f"wrote {card['file']}: {card['what']}")


@main.command(name="library-check")
@_OUT
@click.option("--library", "library_root", default="../shared/library", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="A real library (MANIFEST.tsv with folder labels).")
def library_check(out_dir: str, library_root: str) -> None:
    """Measure every GTZAN-only model on a real library; writes metrics.library into the manifest."""
    import json

    from .realworld import check

    result = check(out_dir, library_root)
    click.echo(json.dumps({n: {f: d["called_by_folder_genre"] for f, d in r.items()} for n, r in result.items()},
                          indent=2))


@main.command(name="all")
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset root with splits/{train,valid}.txt (e.g. ../shared/gtzan).")
@click.option("--library", "library_root", default=None, type=click.Path(exists=True, file_okay=False),
              help="A real library (tagged files, MANIFEST.tsv): musicnn-head, taxonomy, wavenet-distil and "
                   "library-check run only with it.")
@click.option("--run-dir", default="runs/all", show_default=True, type=click.Path(file_okay=False),
              help="The run folder: new models (models/), each step's reports and caches, stamps.")
@click.option("--out", "out_dir", default=str(DEFAULT_OUT), show_default=True, type=click.Path(file_okay=False),
              help="The shipped models: compared against, and replaced only on --promote.")
@click.option("--weights", default="runs/musicnn/musicnn_msd.npz", show_default=True,
              type=click.Path(dir_okay=False), help="Converted musicnn weights for transfer (musicnn-convert).")
@click.option("--fixture", default="tests/data/musicnn_reference.npz", show_default=True,
              type=click.Path(dir_okay=False), help="Reference patches transfer's ONNX export is checked against.")
@click.option("--skip", multiple=True, type=click.Choice(["classic", "cnn", "wavenet", "transfer", "musicnn-head", "taxonomy",
                                                          "wavenet-distil", "library-check", "ensemble"]),
              help="Leave a step out (repeatable).")
@click.option("--promote/--no-promote", default=None,
              help="Copy the new models over --out at the end (default: ask when run in a terminal, "
                   "else keep them in the run folder).")
@_needs("torch", "sklearn", "skl2onnx")
def all_(data_root: str, library_root: str | None, run_dir: str, out_dir: str, weights: str, fixture: str,
         skip: tuple[str, ...], promote: bool | None) -> None:
    """Every trainer, then the ensemble, in a run folder; resumable; compared with the shipped models.

    About 110 minutes on a 2-core CPU (docs/retraining.md). A rerun skips every step already done
    for the same inputs. Nothing outside the run folder changes unless the models are promoted.
    musicnn-convert stays a separate, optional step (TensorFlow, in its own venv)."""
    from .chain import ChainOptions, run_chain

    opts = ChainOptions(data=Path(data_root), shipped=Path(out_dir), run_dir=Path(run_dir),
                        library=Path(library_root) if library_root else None, weights=Path(weights),
                        fixture=Path(fixture), skip=skip)
    if promote is None and not sys.stdin.isatty():
        promote = False
    run_chain(opts, command=_command(), promote=promote,
              confirm=lambda q: click.confirm(q, default=False), say=lambda line: click.echo(line))


if __name__ == "__main__":
    main()
