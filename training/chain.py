"""`gtag-train all`: every trainer, then the ensemble, in one run folder; resumable; compared with
the shipped models before anything replaces them.

The chain, in order (minutes on the project's 2-core CPU machine, no GPU; about 110 in all):

    classic         rf and k-NN on the 57 features                                     3
    cnn             log-mel CNN (short search, then the fit)                          28
    wavenet         raw-audio WaveNet-style net, from scratch                         20
    transfer        GTZAN head on musicnn (needs musicnn-convert's weights)           13
    reference       the reference set gtag learn's "none of these" learns from          1
    musicnn-head    musicnn's head on GTZAN + the library (needs --library)            8
    taxonomy        the taxonomy's node scorers on musicnn's MSD tags (needs --library)  6
    wavenet-distil  the WaveNet distilled from musicnn (needs --library)              30
    library-check   every GTZAN-only model on the real library (needs --library)       5
    ensemble        the vote weights, chosen on validation (the only step that sets them)  2

Everything goes under ``run_dir`` (``runs/all``): ``models/`` starts as a copy of the shipped
models and each step replaces its own there; each step has its own folder (reports, caches) and a
stamp ``steps/<step>.json``. A step's key chains its inputs (the dataset's file listing, the shipped
manifest, the step's options, and for some steps the library's listing or the converted weights)
with every earlier step's key; a step whose stamp has the same key and whose report is still there
is skipped, so a rerun after Ctrl-C or a crash resumes at the first step not done. The first step
that runs starts from the models as the last finished step left them (``blobs/``: every model file
version the run has seen, by sha256). Nothing outside ``run_dir`` changes until ``promote`` copies
``models/`` over the shipped folder, keeping the files it replaces in ``run_dir/replaced/``.
`gtag-train musicnn-convert` stays a separate step: it needs TensorFlow, in its own venv.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runfolder

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Step:
    """One link of the chain."""

    name: str
    minutes: int  # measured on the project's 2-core CPU machine (docs/retraining.md)
    what: str
    report: str  # the file in the step's folder that says it finished
    needs: tuple[str, ...] = ()  # "library", "weights": inputs without which it is not run


STEPS = (
    Step("classic", 3, "rf and k-NN on the 57 features", "classic_metrics.json"),
    Step("cnn", 28, "log-mel CNN, short search then the fit", "cnn_metrics.json"),
    Step("wavenet", 20, "raw-audio WaveNet-style net", "wavenet_metrics.json"),
    Step("transfer", 13, "GTZAN head on musicnn's embeddings", "transfer_metrics.json", ("weights",)),
    Step("reference", 1, "the reference set gtag learn's \"none of these\" learns from", "card.json"),
    Step("musicnn-head", 8, "musicnn's head on GTZAN + the library", "report.json", ("library",)),
    Step("taxonomy", 6, "the taxonomy's node scorers on musicnn's MSD tags", "report.json", ("library",)),
    Step("wavenet-distil", 30, "the WaveNet distilled from musicnn", "report.json", ("library",)),
    Step("library-check", 5, "every GTZAN-only model on the real library", "library_check.json", ("library",)),
    Step("ensemble", 2, "vote weights chosen on validation", "ensemble_metrics.json"),
)
STEP_NAMES = tuple(s.name for s in STEPS)


@dataclass(frozen=True)
class ChainOptions:
    """What `gtag-train all` runs on and where it writes."""

    data: Path  # dataset root with splits/{train,valid}.txt
    shipped: Path  # the models compared against, and replaced by promote (exported_models/)
    run_dir: Path = Path("runs/all")
    library: Path | None = None  # a real library (MANIFEST.tsv): musicnn-head, taxonomy, distil, library-check
    weights: Path = Path("runs/musicnn/musicnn_msd.npz")  # gtag-train musicnn-convert's output
    fixture: Path | None = None  # musicnn reference patches the transfer export is checked against
    skip: tuple[str, ...] = ()  # steps left out on purpose
    # Per step, keyword arguments of its options dataclass (ClassicOptions, CnnOptions, ...): the
    # tests' tiny runs; part of the step's key.
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _missing(step: Step, o: ChainOptions) -> str | None:
    """Why ``step`` cannot run with these inputs, or None."""
    if "library" in step.needs and o.library is None:
        return "needs --library (a real library with MANIFEST.tsv)"
    if "weights" in step.needs and not Path(o.weights).is_file():
        return (f"no converted musicnn weights at {o.weights} (optional: gtag-train musicnn-convert, "
                "which needs TensorFlow in its own venv; musicnn stays as shipped)")
    return None


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def _step_inputs(step: Step, o: ChainOptions) -> list[Any]:
    out: list[Any] = [step.name, sorted(o.overrides.get(step.name, {}).items())]
    if "library" in step.needs and o.library is not None:
        out.append(runfolder.listing(o.library))
    if "weights" in step.needs and Path(o.weights).is_file():
        out.append(runfolder.listing(o.weights))
    return out


# ---------------------------------------------------------------------------------------------
# The steps themselves: each trainer's own entry point, writing into the run's models/


def _run(step: str, o: ChainOptions, models: Path, here: Path, command: str) -> None:
    kw = dict(o.overrides.get(step, {}))
    cmd = f"{command} (step {step})"
    if step == "classic":
        from .classic import ClassicOptions, train_classic

        train_classic(o.data, models, here, ClassicOptions(**kw), command=cmd)
    elif step == "cnn":
        from .cnn import CnnOptions, train_cnn

        train_cnn(o.data, models, here, CnnOptions(**kw), command=cmd)
    elif step == "wavenet":
        from .wavenet import WaveNetOptions, train_wavenet

        train_wavenet(o.data, models, here, WaveNetOptions(**kw), command=cmd)
    elif step == "transfer":
        from .transfer import TransferOptions, train_transfer

        train_transfer(o.data, models, here, o.weights, TransferOptions(**kw), command=cmd,
                       fixture=o.fixture if o.fixture and Path(o.fixture).is_file() else None)
    elif step == "reference":
        from .reference import build_reference

        build_reference(o.data, models, here, command=cmd)
    elif step == "musicnn-head":
        from .musicnn_head import train

        train(o.data, o.library, models, here, command=cmd)
    elif step == "taxonomy":
        from .taxonomy import train as train_taxonomy

        train_taxonomy(o.data, o.library, models, here, o.run_dir / "musicnn-head", command=cmd)
    elif step == "wavenet-distil":
        from .distil import DistilOptions, train_distil

        train_distil(o.data, models, here, DistilOptions(**kw), o.library, command=cmd)
    elif step == "library-check":
        from .realworld import check

        result = check(models, o.library)
        (here / "library_check.json").write_text(json.dumps(result, indent=2) + "\n")
    elif step == "ensemble":
        from .ensemble import choose_ensemble

        choose_ensemble(o.data, models, here, o.run_dir / "transfer", o.run_dir / "classic" / "cache",
                        command=cmd, **kw)
    else:
        raise ValueError(f"unknown step {step!r}")


def run_chain(o: ChainOptions, command: str = "gtag-train all", promote: bool | None = False,
              confirm: Callable[[str], bool] | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the chain, print the comparison with the shipped models, then promote when
    ``promote`` is True, or when it is None and ``confirm(question)`` says yes. Returns
    {"steps": name -> "ran" | "up to date" | "not run: why" | "skipped", "comparison", "promoted"}."""
    run_dir, models = Path(o.run_dir), Path(o.run_dir) / "models"
    steps_dir, blobs = run_dir / "steps", run_dir / "blobs"
    run_dir.mkdir(parents=True, exist_ok=True)
    steps_dir.mkdir(exist_ok=True)
    unknown = sorted(set(o.skip) - set(STEP_NAMES))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; the chain is {', '.join(STEP_NAMES)}")
    key = _hash("root", runfolder.listing(o.data), runfolder.file_sha(Path(o.shipped) / MANIFEST))
    root = runfolder.read_json(steps_dir / "root.json")
    if root.get("key") != key:  # other data or other shipped models: start over from the shipped ones
        for f in steps_dir.glob("*.json"):
            f.unlink()
        runfolder.copy_models(Path(o.shipped), models)
        root = {"key": key, "files": runfolder.snapshot(models, blobs)}
        runfolder.write_json(steps_dir / "root.json", root)
    files, dirty, status = root["files"], False, {}
    n = len(STEPS)
    for i, step in enumerate(STEPS, 1):
        tag = f"[{i}/{n}] {step.name}"
        if step.name in o.skip:
            status[step.name] = "skipped"
            say(f"{tag}: skipped (--skip)")
            continue
        why = _missing(step, o)
        key = _hash(key, _step_inputs(step, o), why)
        stamp_path = steps_dir / f"{step.name}.json"
        stamp = runfolder.read_json(stamp_path)
        here = run_dir / step.name
        done = stamp.get("key") == key and (why is not None or (here / step.report).is_file())
        if done and not dirty and runfolder.has_blobs(stamp["files"], blobs):
            files = stamp["files"]
            status[step.name] = f"not run: {why}" if why else "up to date"
            say(f"{tag}: {status[step.name] if why else 'up to date, skipped'}")
            continue
        if not dirty:  # from here on every step runs, on the models the last finished step left
            dirty = True
            runfolder.restore(models, files, blobs)
            later = STEP_NAMES[STEP_NAMES.index(step.name):]
            for name in later:  # stale stamps must not be taken for this run's after a crash
                (steps_dir / f"{name}.json").unlink(missing_ok=True)
        if why:
            status[step.name] = f"not run: {why}"
            say(f"{tag}: not run: {why}")
        else:
            say(f"{tag}: {step.what} (about {step.minutes} min on a 2-core CPU) ...")
            t0 = time.time()
            here.mkdir(parents=True, exist_ok=True)
            _run(step.name, o, models, here, command)
            status[step.name] = "ran"
            say(f"{tag}: done in {(time.time() - t0) / 60:.1f} min")
        files = runfolder.snapshot(models, blobs)
        runfolder.write_json(stamp_path, {"key": key, "files": files, "status": status[step.name]})
    if not dirty and runfolder.snapshot(models, blobs) != files:  # models/ touched by hand since
        runfolder.restore(models, files, blobs)
    rows = runfolder.compare(Path(o.shipped), models)
    runfolder.write_json(run_dir / "comparison.json", rows)
    say(runfolder.format_table(rows, Path(o.shipped), models))
    question = f"Replace the models in {o.shipped} with these?"
    if promote is None:
        promote = bool(confirm and confirm(question))
    promoted: list[str] = []
    if promote:
        promoted = runfolder.promote(models, Path(o.shipped), run_dir / "replaced" / time.strftime("%Y%m%dT%H%M%S"))
        say(f"promoted into {o.shipped}: {', '.join(promoted) or 'nothing changed'} "
            f"(the files replaced are kept in {run_dir / 'replaced'})")
    else:
        say(f"nothing replaced: the new models stay in {models} "
            "(rerun with --promote to copy them over the shipped ones; every finished step is skipped)")
    return {"steps": status, "comparison": rows, "promoted": promoted if promote else None, "models": str(models)}
