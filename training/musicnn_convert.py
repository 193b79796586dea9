"""`gtag-train musicnn-convert`: musicnn's TF1 checkpoint (in the ``musicnn-0.1.0`` wheel) to the
PyTorch port of ``training.musicnn``, proven against TensorFlow.

- ``VARIABLE_MAP`` / ``convert_variables``: the checkpoint's variables onto ``MusiCNN``'s parameters
  (layouts rearranged), saved as a plain ``.npz`` (``training.musicnn.save_weights``) so training and
  tests never need TensorFlow;
- ``tf_reference``: musicnn's outputs computed by TensorFlow from the author's own graph (the
  ``.meta`` file), so the port is checked against the original, not a second re-implementation;
- ``convert``: the command; its TensorFlow half (``tf_dump``, numpy + TensorFlow, no torch, no gtag)
  runs in the separate conversion environment ``.venv-convert`` as ``python -m
  training.musicnn_convert tf-dump`` (see ``training.musicnn``'s docstring for the setup).
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .musicnn import (
    MSD_CHECKPOINT,
    MSD_LABELS,
    N_FRAMES,
    N_MELS,
    _log_mel_max,
    load_pretrained,
    load_weights,
    save_weights,
)
from .tf_graph import bn_variables as _bn
from .tf_graph import run_meta_graph

# TF variable -> (torch parameter, how to rearrange the array)
VARIABLE_MAP: list[tuple[str, str, str]] = (
    _bn("batch_normalization", "bn_input")
    + [("conv2d/kernel", "timbral.0.conv.weight", "conv2d"), ("conv2d/bias", "timbral.0.conv.bias", "id")]
    + _bn("batch_normalization_1", "timbral.0.bn")
    + [("conv2d_1/kernel", "timbral.1.conv.weight", "conv2d"), ("conv2d_1/bias", "timbral.1.conv.bias", "id")]
    + _bn("batch_normalization_2", "timbral.1.bn")
    + [item for i in range(3) for item in
       [(f"conv2d_{2 + i}/kernel", f"temporal.{i}.conv.weight", "conv2d"),
        (f"conv2d_{2 + i}/bias", f"temporal.{i}.conv.bias", "id")]
       + _bn(f"batch_normalization_{3 + i}", f"temporal.{i}.bn")]
    + [item for i in range(3) for item in
       [(f"conv2d_{5 + i}/kernel", f"mid.{i}.conv.weight", "conv1d"),
        (f"conv2d_{5 + i}/bias", f"mid.{i}.conv.bias", "id")] + _bn(f"batch_normalization_{6 + i}", f"mid.{i}.bn")]
    + _bn("batch_normalization_9", "bn_pool")
    + [("dense/kernel", "dense.weight", "dense"), ("dense/bias", "dense.bias", "id")]
    + _bn("batch_normalization_10", "bn_dense")
    + [("dense_1/kernel", "out.weight", "dense"), ("dense_1/bias", "out.bias", "id")]
)


def _rearrange(a: np.ndarray, how: str) -> np.ndarray:
    if how == "id":
        return a
    if how == "conv2d":  # TF [kh, kw, in, out] (NHWC, H = time, W = mel) -> torch [out, in, kh, kw]
        return a.transpose(3, 2, 0, 1)
    if how == "conv1d":  # TF [7, C_in, 1, out] over a [T, C_in, 1] map -> torch Conv1d [out, C_in, 7]
        assert a.shape[2] == 1
        return a[:, :, 0, :].transpose(2, 1, 0)
    if how == "dense":  # TF [in, out] -> torch Linear [out, in]
        return a.T
    raise ValueError(how)


def convert_variables(tf_vars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map a ``{tf variable name: array}`` dict onto ``MusiCNN`` parameter names (float32)."""
    used = {v for v, _, _ in VARIABLE_MAP}
    missing = used - tf_vars.keys()
    if missing:
        raise KeyError(f"checkpoint lacks {sorted(missing)}")
    return {t: np.ascontiguousarray(_rearrange(np.asarray(tf_vars[v]), how), dtype=np.float32)
            for v, t, how in VARIABLE_MAP}


def load_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Read a musicnn TF1 checkpoint by its prefix (e.g. ``.../musicnn/MSD_musicnn/``: the files are
    ``.index`` and ``.data-00000-of-00001`` with an empty stem) and return a ``MusiCNN`` state dict as
    numpy arrays. Needs TensorFlow (conversion environment only). Adam slots and counters are ignored."""
    from tensorflow.python.training import py_checkpoint_reader

    prefix = str(prefix)
    if Path(prefix).is_dir() and not prefix.endswith("/"):
        prefix += "/"  # musicnn's files have an empty stem: the folder itself is the prefix
    reader = py_checkpoint_reader.NewCheckpointReader(prefix)
    names = [v for v, _, _ in VARIABLE_MAP]
    return convert_variables({n: reader.get_tensor(n) for n in names})


# --------------------------------------------------------------------------------------------------
# The wheel, and the TensorFlow reference (conversion environment only)
# --------------------------------------------------------------------------------------------------


def extract_wheel(wheel: str | Path, dest: str | Path) -> str:
    """Unpack the checkpoint folder and the licence of the musicnn wheel into ``dest``; returns the
    checkpoint prefix (``dest/musicnn/MSD_musicnn/``)."""
    dest = Path(dest)
    with zipfile.ZipFile(wheel) as z:
        members = [n for n in z.namelist() if n.startswith(MSD_CHECKPOINT) or n.endswith("LICENSE.md")
                   or n == "musicnn/configuration.py"]
        if not any(n.startswith(MSD_CHECKPOINT + ".index") for n in members):
            raise ValueError(f"{wheel}: no {MSD_CHECKPOINT} checkpoint inside (expected musicnn-0.1.0)")
        z.extractall(dest, members)
    return str(dest / MSD_CHECKPOINT) + "/"  # a prefix: the files are "<folder>/.index" etc.


def check_labels(configuration_py: str | Path) -> None:
    """The wheel's ``MSD_LABELS`` must be ours, in the same order."""
    ns: dict = {}
    exec(compile(Path(configuration_py).read_text(), str(configuration_py), "exec"), ns)  # the wheel's constants
    if tuple(ns["MSD_LABELS"]) != MSD_LABELS:
        raise ValueError("the wheel's MSD_LABELS differ from training.musicnn.MSD_LABELS")


def tf_reference(prefix: str | Path, patches: np.ndarray) -> dict[str, np.ndarray]:
    """musicnn's outputs for ``patches`` ``(n, 187, 96)`` computed by TensorFlow from the author's own
    graph: the forward part of the checkpoint's ``.meta`` graph (the training ops are cut away; the
    full graph no longer imports in TF 2 because of stale gradient shapes), with each variable frozen
    to its checkpoint value, run with ``is_training`` False. Returns ``tags`` (sigmoid), ``logits``,
    ``penultimate``. Needs TensorFlow."""
    outputs = {"tags": "model/Sigmoid", "logits": "model/dense_1/BiasAdd",
               "penultimate": "model/batch_normalization_10/batchnorm/add_1"}
    return run_meta_graph(prefix, outputs, patches)


def corner_patches(n_mixed: int = 2, seed: int = 0) -> np.ndarray:
    """Patches at the corners of gtag's input range ``[0, MUSICNN_LOG_MEL_MAX]``: silence, full scale
    everywhere, and ``n_mixed`` random mixes of the two. Unmusical, but the inputs that push filters
    hardest, so TensorFlow's outputs on them check ``dead_filters``' proof against the original."""
    x_max = _log_mel_max()
    rng = np.random.default_rng(seed)
    out = [np.zeros((N_FRAMES, N_MELS)), np.full((N_FRAMES, N_MELS), x_max)]
    out += [np.where(rng.random((N_FRAMES, N_MELS)) < 0.5, 0.0, x_max) for _ in range(n_mixed)]
    return np.stack(out).astype(np.float32)


def reference_patches(n_random: int = 2, seed: int = 0, audio_files: list[str | Path] = ()) -> np.ndarray:
    """Input patches for the reference fixture: log-mel patches of a few real audio files (through
    ``gtag.audio.musicnn_input.musicnn_patches``, one patch per file), then ``n_random`` synthetic patches in
    musicnn's value range (so the fixture exists even without the shared audio), then the
    ``corner_patches`` of the input range."""
    out = []
    for f in audio_files:
        from gtag.audio import decode as audio
        from gtag.audio import musicnn_input

        y = audio.load_audio(f).samples
        p = musicnn_input.musicnn_patches(y)
        out.append(p[len(p) // 2])
    rng = np.random.default_rng(seed)
    for _ in range(n_random):
        # A smooth positive "spectrogram" with a decaying spectrum, like log10(1 + 10000 mel).
        base = np.linspace(2.5, 0.2, N_MELS)[None, :] + 0.4 * rng.standard_normal((1, N_MELS))
        x = base + 0.5 * rng.standard_normal((N_FRAMES, N_MELS))
        out.append(np.clip(x, 0.0, None))
    return np.concatenate([np.stack(out).astype(np.float32), corner_patches(seed=seed)])


def tf_dump(wheel: str | Path, patches: str | Path, out_dir: str | Path) -> dict:
    """The TensorFlow half of the conversion (numpy + TensorFlow only, no torch, no gtag): unpack the
    wheel's MSD checkpoint, check its tag list, write the converted weights ``out_dir/musicnn_msd.npz``
    and the licence, and TensorFlow's outputs on the patches of ``patches`` (``.npy``) to
    ``out_dir/tf_reference.npz``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = np.load(patches, allow_pickle=False)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = extract_wheel(wheel, tmp)
        check_labels(Path(tmp) / "musicnn" / "configuration.py")
        state = load_tf_checkpoint(prefix)
        weights = save_weights(state, out_dir / "musicnn_msd.npz", source=f"{Path(wheel).name}:{MSD_CHECKPOINT}")
        licence = next(Path(tmp).glob("musicnn-*.dist-info/LICENSE.md"), None)
        if licence:
            (out_dir / "MUSICNN_LICENSE.md").write_bytes(licence.read_bytes())
        ref = tf_reference(prefix, x)
    np.savez(out_dir / "tf_reference.npz", patches=x, **ref,
             source=np.array(f"TensorFlow {_tf_version()} on the .meta graph of {Path(wheel).name}:{MSD_CHECKPOINT}"))
    return {"weights": str(weights), "reference": str(out_dir / "tf_reference.npz")}


def _tf_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def default_tf_python() -> Path:
    """The conversion environment's interpreter: ``.venv-convert`` beside the checkout's ``.venv``."""
    root = Path(__file__).resolve().parent.parent
    return root / ".venv-convert" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def convert(wheel: str | Path, out_dir: str | Path, fixture: str | Path | None = None,
            audio_files: list[str | Path] | tuple = (), tf_python: str | Path | None = None) -> dict:
    """``gtag-train musicnn-convert``: read the MSD checkpoint straight from the wheel into the
    PyTorch model and prove the port.

    1. Input patches: the middle patch of each of ``audio_files`` through gtag's own
       ``gtag.audio.musicnn_input.musicnn_patches``, plus two synthetic patches.
    2. TensorFlow half (``tf_dump``): in this interpreter if it has TensorFlow, else in ``tf_python``
       (default ``.venv-convert/bin/python``) as a subprocess, so gtag's environment never needs it.
       Writes ``out_dir/musicnn_msd.npz`` (converted weights) and ``out_dir/tf_reference.npz``.
    3. PyTorch: loads the .npz into ``MusiCNN`` and compares tags, logits and penultimate with TF.
    4. With ``fixture``, stores patches + TF outputs there (``tests/data/musicnn_reference.npz``, the
       CI test's reference).
    Returns the report (also written to ``out_dir/convert_report.json``).
    """
    import subprocess

    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    patches = reference_patches(audio_files=list(audio_files))
    patches_path = out_dir / "reference_patches.npy"
    np.save(patches_path, patches, allow_pickle=False)
    if tf_python is None and _tf_available():
        tf_dump(wheel, patches_path, out_dir)
    else:
        py = Path(tf_python) if tf_python else default_tf_python()
        if not py.exists():
            raise FileNotFoundError(f"{py}: no TensorFlow interpreter; make one with `python3 -m venv .venv-convert "
                                    "&& .venv-convert/bin/pip install tensorflow-cpu numpy`")
        root = Path(__file__).resolve().parent.parent
        subprocess.run([str(py), "-m", "training.musicnn_convert", "tf-dump", "--wheel", str(Path(wheel).resolve()),
                        "--patches", str(patches_path.resolve()), "--out", str(out_dir.resolve())],
                       cwd=root, check=True)
    with np.load(out_dir / "tf_reference.npz", allow_pickle=False) as z:
        ref = {k: z[k] for k in ("tags", "logits", "penultimate")}
        source = str(z["source"])
    weights = out_dir / "musicnn_msd.npz"
    model = load_pretrained(weights)
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(patches))
    got = {"tags": torch.sigmoid(emb["logits"]).numpy(), "logits": emb["logits"].numpy(),
           "penultimate": emb["penultimate"].numpy()}
    state, _ = load_weights(weights)
    report = {
        "weights": str(weights),
        "weights_bytes": weights.stat().st_size,
        "parameters": int(sum(v.size for k, v in state.items() if "running" not in k)),
        "patches": int(len(patches)),
        "audio_files": [str(f) for f in audio_files],
        "reference": source,
        "max_abs_diff_torch_vs_tf": {k: float(np.abs(got[k] - ref[k]).max()) for k in ref},
        "max_rel_diff_torch_vs_tf": {k: float((np.abs(got[k] - ref[k]) / (np.abs(ref[k]) + 1e-3)).max())
                                     for k in ref},
        "top5_tags_tf": [[MSD_LABELS[i] for i in np.argsort(-t)[:5]] for t in ref["tags"]],
        "top5_tags_torch": [[MSD_LABELS[i] for i in np.argsort(-t)[:5]] for t in got["tags"]],
    }
    if fixture:
        fixture = Path(fixture)
        fixture.parent.mkdir(parents=True, exist_ok=True)
        corner = np.zeros(len(patches), dtype=bool)
        corner[len(patches) - len(corner_patches()):] = True  # reference_patches puts them last
        np.savez_compressed(fixture, patches=patches, range_corner=corner, labels=np.array(MSD_LABELS),
                            source=np.array(source), **ref)
        report["fixture"] = str(fixture)
        report["fixture_bytes"] = fixture.stat().st_size
    (out_dir / "convert_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _tf_version() -> str:
    try:
        import tensorflow as tf

        return tf.__version__
    except ImportError:  # pragma: no cover
        return "?"


def main(argv: list[str] | None = None) -> None:
    """``python -m training.musicnn_convert convert|tf-dump ...`` (tf-dump is the TensorFlow half, run by
    ``convert`` in the conversion environment)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.musicnn_convert")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="checkpoint in the wheel -> PyTorch weights (.npz), checked against TF")
    c.add_argument("--wheel", required=True)
    c.add_argument("--out", default="runs/musicnn")
    c.add_argument("--fixture", default=None, help="also write the reference fixture here")
    c.add_argument("--audio", nargs="*", default=[], help="audio files whose middle patch joins the fixture")
    c.add_argument("--tf-python", default=None, help="interpreter with TensorFlow (default .venv-convert)")
    d = sub.add_parser("tf-dump", help="(conversion env) weights .npz + TF outputs on given patches")
    d.add_argument("--wheel", required=True)
    d.add_argument("--patches", required=True)
    d.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "convert":
        report = convert(a.wheel, a.out, a.fixture, a.audio, a.tf_python)
    else:
        report = tf_dump(a.wheel, a.patches, a.out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
