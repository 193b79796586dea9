"""musicnn's VGG baselines (``MSD_vgg``, ``MTT_vgg``) in PyTorch: architecture, checkpoint conversion and
the TensorFlow reference that proves the port.

The ``musicnn-0.1.0`` wheel (ISC licence) ships, beside ``MSD_musicnn`` (``training.musicnn``), a
plain VGG-like CNN trained on the same 3 s log-mel patches ``(187 frames, 96 mel bands)``, once on the
Million Song Dataset (50 last.fm tags, ``MSD_LABELS``) and once on MagnaTagATune (``MTT_LABELS``).
Architecture (musicnn/models.py ``vgg``, 128 filters): batch norm of the input, then five blocks of
3x3 conv (TF ``same`` padding) + ReLU + batch norm + max pooling (``POOLS``: per checkpoint, read from
its graph; TF ``valid``: floor, as PyTorch's default), giving a ``(2 time, 1 mel, 128)`` map; flattened in TF's NHWC order (256 values, ``pool5``), dropout, dense 50 (the tag logits).
TF1 batch norm uses epsilon 1e-3. A 3x3 stride-1 ``same`` conv pads one on each side, as PyTorch's
``padding=1`` does.

``embed`` also returns the max and mean over time and frequency of the 4th block's pooled map
(``pool4_stats``, 256 values): a less task-specific representation than ``pool5`` for transfer.

The TensorFlow half (``load_tf_checkpoint``, ``tf_reference``) runs only in the conversion
environment (``.venv-convert``, see ``training.musicnn``); converted weights are a plain ``.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .musicnn import BN_EPS, MSD_LABELS, N_FRAMES, N_MELS
from .tf_graph import bn_variables as _bn, run_meta_graph

WEIGHTS_FORMAT = "gtag-musicnn-vgg-1"
N_FILTERS = 128
N_BLOCKS = 5
Pools = tuple[tuple[tuple[int, int], tuple[int, int]], ...]
# max_pooling2d (pool_size, strides) of each block, (time, mel), as the checkpoints' .meta graphs hold
# them. MTT_vgg is musicnn/models.py's vgg(); MSD_vgg's graph differs from that file in its first two
# pools ([4,1]/[4,1] then [1,4]/[1,4]; the later maps have the same sizes).
POOLS: dict[str, Pools] = {
    "MTT_vgg": (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4))),
    "MSD_vgg": (((4, 1), (4, 1)), ((1, 4), (1, 4)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4))),
}
CHECKPOINTS = {"MSD_vgg": "musicnn/MSD_vgg/", "MTT_vgg": "musicnn/MTT_vgg/"}

# musicnn/configuration.py, MTT_LABELS, in output order.
MTT_LABELS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
assert len(MTT_LABELS) == 50
LABELS = {"MSD_vgg": MSD_LABELS, "MTT_vgg": MTT_LABELS}


def pooled_shape(pools: Pools, n_frames: int = N_FRAMES, n_mels: int = N_MELS) -> tuple[int, int]:
    """(time, mel) size of the last pooled map: TF ``valid`` pooling floors, ``(n - k) // s + 1``."""
    t, f = n_frames, n_mels
    for (kt, kf), (st, sf) in pools:
        t, f = (t - kt) // st + 1, (f - kf) // sf + 1
    return t, f


def build_vgg(name: str, n_classes: int = 50, n_filters: int = N_FILTERS):
    """The ``VGG`` module of checkpoint ``name`` (a key of ``POOLS``) on ``(batch, 187, 96)`` patches
    (built lazily: importing this module needs no torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    pools = POOLS[name]
    t, f = pooled_shape(pools)

    class Block(nn.Module):
        """3x3 conv (same) -> ReLU -> BN -> max pool, NCHW with H = time, W = mel."""

        def __init__(self, c_in: int, pool: tuple[tuple[int, int], tuple[int, int]]):
            super().__init__()
            self.conv = nn.Conv2d(c_in, n_filters, 3, padding=1)
            self.bn = nn.BatchNorm2d(n_filters, eps=BN_EPS)
            self.pool = pool

        def forward(self, x):
            return F.max_pool2d(self.bn(F.relu(self.conv(x))), self.pool[0], self.pool[1])

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_input = nn.BatchNorm2d(1, eps=BN_EPS)
            self.blocks = nn.ModuleList([Block(1 if i == 0 else n_filters, pools[i]) for i in range(N_BLOCKS)])
            self.dropout = nn.Dropout(0.5)
            self.out = nn.Linear(t * f * n_filters, n_classes)
            self.embedding_sizes = {"pool5": t * f * n_filters, "pool4_stats": 2 * n_filters}

        def features(self, x) -> list:
            """The pooled map of every block, ``(B, 128, T_i, F_i)``."""
            x = self.bn_input(x.unsqueeze(1))
            maps = []
            for b in self.blocks:
                x = b(x)
                maps.append(x)
            return maps

        @staticmethod
        def flatten_tf(m):
            """TF's flatten of an NHWC map: index (t * F + f) * C + c."""
            return m.permute(0, 2, 3, 1).flatten(1)

        def forward(self, x):
            """Tag logits ``(B, 50)``."""
            return self.out(self.dropout(self.flatten_tf(self.features(x)[-1])))

        def embed(self, x) -> dict:
            """``pool5`` (the dense layer's input), ``pool4_stats`` (max and mean of block 4's map over
            time and mel, per channel), ``logits``; eval mode expected."""
            maps = self.features(x)
            pool5 = self.flatten_tf(maps[-1])
            p4 = maps[-2].flatten(2)
            stats = torch.cat([p4.amax(dim=2), p4.mean(dim=2)], dim=1)
            return {"pool5": pool5, "pool4_stats": stats, "logits": self.out(pool5)}

    return VGG()


# --------------------------------------------------------------------------------------------------
# Checkpoint -> PyTorch
# --------------------------------------------------------------------------------------------------


VARIABLE_MAP: list[tuple[str, str, str]] = (
    _bn("batch_normalization", "bn_input")
    + [item for i in range(N_BLOCKS) for item in
       [(f"{i + 1}CNN/kernel", f"blocks.{i}.conv.weight", "conv2d"), (f"{i + 1}CNN/bias", f"blocks.{i}.conv.bias", "id")]
       + _bn(f"batch_normalization_{i + 1}", f"blocks.{i}.bn")]
    + [("dense/kernel", "out.weight", "dense"), ("dense/bias", "out.bias", "id")]
)


def checkpoint_shapes() -> dict[str, tuple[int, ...]]:
    """Every variable ``VARIABLE_MAP`` reads and its shape in both VGG checkpoints (TF layouts)."""
    t, f = pooled_shape(POOLS["MTT_vgg"])
    out: dict[str, tuple[int, ...]] = {}
    for i in range(N_BLOCKS + 1):
        bn = "batch_normalization" + (f"_{i}" if i else "")
        out |= {f"{bn}/{v}": (1 if i == 0 else N_FILTERS,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}
        if i:
            out[f"{i}CNN/kernel"] = (3, 3, 1 if i == 1 else N_FILTERS, N_FILTERS)
            out[f"{i}CNN/bias"] = (N_FILTERS,)
    out["dense/kernel"], out["dense/bias"] = (t * f * N_FILTERS, 50), (50,)
    return out


def synthetic_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """Checkpoint-shaped random variables from numpy's legacy ``RandomState`` (its streams are frozen, so
    any numpy rebuilds them bit for bit): the CI fixture runs TensorFlow's graph of each checkpoint with
    these, so the test proves the port's layouts, pools and flatten order without shipping the real
    weights. Kernels have about unit gain so activations stay O(1) and depend on the input;
    batch-norm variances stay positive and gammas of both signs appear."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in checkpoint_shapes().items():
        u = rng.uniform(-1.0, 1.0, shape)
        if name.endswith("moving_variance"):
            v = 1.0 + 0.5 * u
        elif name.endswith("gamma"):
            v = 0.5 + u
        elif name.endswith(("beta", "moving_mean", "bias")):
            v = 0.2 * u
        else:  # kernels: uniform with variance 1 / fan_in
            v = u * np.sqrt(3.0 / np.prod(shape[:-1]))
        out[name] = v.astype(np.float32)
    return out


def convert_variables(tf_vars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{tf variable: array}`` -> ``VGG`` state dict (float32). Conv kernels: TF ``[kh, kw, in, out]``
    -> torch ``[out, in, kh, kw]``; dense: TF ``[in, out]`` -> ``[out, in]`` (TF's flatten order is kept
    by ``flatten_tf``)."""
    missing = {v for v, _, _ in VARIABLE_MAP} - tf_vars.keys()
    if missing:
        raise KeyError(f"checkpoint lacks {sorted(missing)}")
    how = {"id": lambda a: a, "conv2d": lambda a: a.transpose(3, 2, 0, 1), "dense": lambda a: a.T}
    return {t: np.ascontiguousarray(how[h](np.asarray(tf_vars[v])), dtype=np.float32) for v, t, h in VARIABLE_MAP}


def save_weights(state: dict[str, np.ndarray], path: str | Path, name: str, source: str = "") -> Path:
    """Converted weights of checkpoint ``name`` as a plain ``.npz`` (no pickle), with the checkpoint's
    name (it fixes the pools), tag names and provenance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": WEIGHTS_FORMAT, "name": name, "labels": list(LABELS[name]), "source": source}
    np.savez(path, __meta__=np.array(json.dumps(meta)), **state)
    return path


def load_pretrained(path: str | Path):
    """``(VGG in eval mode, metadata)`` from a ``save_weights`` file."""
    import torch

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        state = {k: torch.from_numpy(z[k]) for k in z.files if k != "__meta__"}
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a converted musicnn VGG weights file ({meta.get('format')!r})")
    model = build_vgg(meta["name"], n_classes=len(meta["labels"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("num_batches_tracked")]:
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval(), meta


# --------------------------------------------------------------------------------------------------
# TensorFlow half (conversion environment only)
# --------------------------------------------------------------------------------------------------


def load_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """A VGG checkpoint of the wheel, by prefix (e.g. ``.../musicnn/MSD_vgg/``), as a ``VGG`` state dict."""
    from tensorflow.python.training import py_checkpoint_reader

    reader = py_checkpoint_reader.NewCheckpointReader(str(prefix))
    got = {v: tuple(s) for v, s in reader.get_variable_to_shape_map().items() if v in checkpoint_shapes()}
    if got != checkpoint_shapes():
        raise ValueError(f"{prefix}: variables differ from checkpoint_shapes(): {sorted(set(got.items()) ^ set(checkpoint_shapes().items()))[:6]}")
    return convert_variables({v: reader.get_tensor(v) for v, _, _ in VARIABLE_MAP})


def tf_reference(prefix: str | Path, patches: np.ndarray,
                 variables: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """TensorFlow's ``logits``, ``pool5`` (flattened) and ``pool4_stats`` for ``patches`` ``(n, 187, 96)``,
    from the checkpoint's own ``.meta`` graph with its variables frozen (to the checkpoint's values, or
    to ``variables``; ``training.tf_graph.run_meta_graph``, as for MSD_musicnn),
    ``is_training`` False."""
    outputs = {"logits": "model/dense/BiasAdd", "pool5": "model/Flatten/flatten/Reshape",
               "pool4": "model/max_pooling2d_3/MaxPool"}
    got = run_meta_graph(prefix, outputs, patches, variables)
    p4 = got.pop("pool4")  # NHWC (n, 11, 6, 128): the stats embed() computes
    got["pool4_stats"] = np.concatenate([p4.max(axis=(1, 2)), p4.mean(axis=(1, 2))], axis=1)
    return {k: np.asarray(v, dtype=np.float32) for k, v in got.items()}


def tf_dump(wheel_dir: str | Path, patches: str | Path, out_dir: str | Path, fixture: str | Path | None = None) -> dict:
    """Conversion env (numpy + TensorFlow): for each VGG checkpoint of an unpacked musicnn wheel, write
    ``out_dir/<name>.npz`` (converted weights) and ``out_dir/<name>_tf_reference.npz`` (TensorFlow's
    outputs on the ``.npy`` patches). With ``fixture``, also the CI fixture there: the patches, and per
    checkpoint TensorFlow's outputs with the real weights (``<name>/real/<output>``) and with
    ``synthetic_variables`` (``<name>/synthetic/<output>``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = np.load(patches, allow_pickle=False)
    written, fix = {}, {"patches": x}
    for name, folder in CHECKPOINTS.items():
        prefix = str(Path(wheel_dir) / folder) + "/"
        save_weights(load_tf_checkpoint(prefix), out_dir / f"{name}.npz", name, f"musicnn-0.1.0:{folder}")
        real = tf_reference(prefix, x)
        np.savez(out_dir / f"{name}_tf_reference.npz", patches=x, **real)
        written[name] = str(out_dir / f"{name}.npz")
        synthetic = tf_reference(prefix, x, synthetic_variables())
        fix |= {f"{name}/real/{k}": v for k, v in real.items()}
        fix |= {f"{name}/synthetic/{k}": v for k, v in synthetic.items()}
    if fixture:
        np.savez_compressed(fixture, **fix)
        written["fixture"] = str(fixture)
    return written


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.musicnn_vgg", description=tf_dump.__doc__)
    ap.add_argument("--wheel-dir", required=True, help="the unpacked musicnn-0.1.0 wheel")
    ap.add_argument("--patches", required=True, help=".npy of (n, 187, 96) patches")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixture", default=None)
    a = ap.parse_args()
    print(json.dumps(tf_dump(a.wheel_dir, a.patches, a.out, a.fixture), indent=2))
