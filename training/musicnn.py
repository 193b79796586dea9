"""musicnn (Pons & Serra 2019) in PyTorch: the architecture, its provably dead filters, its converted weights.

musicnn is a music auto-tagger trained on the Million Song Dataset (50 last.fm tags). Its authors ship
the trained weights in the PyPI wheel ``musicnn-0.1.0`` (ISC licence, see
``exported_models/MUSICNN_LICENSE.md``) as TensorFlow 1 checkpoints. This module re-implements the
architecture in PyTorch (``MusiCNN``), from the paper and the checkpoint's variable names and shapes,
and reads the converted weights (``save_weights`` / ``load_weights``: a plain ``.npz``, so training and
tests never need TensorFlow). The conversion itself, and the proof of the port against TensorFlow
running the author's own graph, are ``training.musicnn_convert`` (`gtag-train musicnn-convert`);
the ONNX export is ``training.musicnn_onnx``.

Architecture (``MSD_musicnn``; input ``(batch, 187 frames, 96 mel bands)``, 3 s at 16 kHz):

- front end, "musically motivated": batch norm of the input, then
  *timbral* filters spanning 7 frames x 38 and 7 x 67 mel bands (0.4 and 0.7 of 96), 204 each, and
  *temporal* filters spanning 128, 64 and 32 frames x 1 band, 51 each; every branch is conv, ReLU,
  batch norm, then max-pooled over frequency. Concatenated: 561 channels per frame.
- mid end: three 1-D convs over time (7 frames, 64 filters, ReLU, batch norm); the 2nd and 3rd are
  residual. Dense connections: front end and the three mid-end outputs are concatenated (753 channels).
- back end: max and mean over time (interleaved per channel as TF's flatten of ``[max, mean]`` gives:
  1506 values), batch norm, dropout, dense 200 + ReLU, batch norm ("penultimate"), dropout, dense 50
  (logits; the tags are their sigmoid).

Most of the MSD front end is dead: 398 of its 561 filters can never fire (their ReLU input is below 0
for every input gtag can produce, proven by ``dead_filters`` from the input range), so their output
is a constant. ``MusiCNN.drop_dead_filters`` leaves them out at inference (the exported models): the
same outputs for under a third of the front end's multiply-adds.

TF1 ``tf.layers.batch_normalization`` uses epsilon 1e-3; TF ``same`` padding of an even kernel puts
the extra sample after (``(k - 1) // 2`` before); both are reproduced exactly.

The conversion needs (in ``.venv-convert``, not gtag's venv)::

    python3 -m venv .venv-convert && .venv-convert/bin/pip install tensorflow-cpu numpy
    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn
    .venv/bin/gtag-train musicnn-convert --wheel /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl --out runs/musicnn

(the TensorFlow half runs in ``.venv-convert`` as a subprocess; see ``training.musicnn_convert.convert``). Add
``--fixture tests/data/musicnn_reference.npz --audio <a few audio files>`` only to regenerate the CI
fixture on purpose: it replaces the committed reference outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # musicnn's rate (config.json: resample_sr)
N_FFT = 512
HOP = 256
N_MELS = 96
N_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
MSD_CHECKPOINT = "musicnn/MSD_musicnn/"  # folder inside the wheel; files are named by the empty prefix
WEIGHTS_FORMAT = "gtag-musicnn-msd-1"
# dead_filters proves which filters stay silent on every input in [0, gtag.audio.musicnn_input.MUSICNN_LOG_MEL_MAX],
# with DEAD_MARGIN to spare against float32 rounding.
DEAD_MARGIN = 1e-6
# ONNX Runtime's blocked (NCHWc) float convolutions compute output channels in blocks of 16 on AVX-512
# (8 on AVX2): a branch with a partial block costs the whole block anyway, and its output must leave the
# blocked layout before the max over frequency (a copy of the full map; ~15 % of musicnn's time once its
# dead filters are skipped). drop_dead_filters keeps each branch at a multiple of this many filters.
CONV_BLOCK = 16

# musicnn/configuration.py, MSD_LABELS, in output order.
MSD_LABELS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk",
    "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar",
    "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk", "electro",
    "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip
assert len(MSD_LABELS) == 50


# --------------------------------------------------------------------------------------------------
# The PyTorch model
# --------------------------------------------------------------------------------------------------


def _torch():
    import torch
    from torch import nn

    return torch, nn


def _same_pad(k: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of a stride-1 kernel of length k: (before, after)."""
    return (k - 1) // 2, k - 1 - (k - 1) // 2


def build_model(n_classes: int = 50, n_mels: int = N_MELS, frontend_filters: float = 1.6,
                midend_filters: int = 64, backend_units: int = 200):
    """A ``MusiCNN`` module (built lazily so importing this module does not import torch)."""
    torch, nn = _torch()
    import torch.nn.functional as F

    class FrontBranch(nn.Module):
        """conv (time x freq) -> ReLU -> BN -> max over frequency: (B, 1, T, F) -> (B, C, T)."""

        def __init__(self, filters: int, kt: int, kf: int, pad: tuple[int, int]):
            super().__init__()
            self.pad = pad
            self.f_out = n_mels - kf + 1  # frequency positions the conv produces
            self.conv = nn.Conv2d(1, filters, (kt, kf))
            self.bn = nn.BatchNorm2d(filters, eps=BN_EPS)

        def forward(self, x):
            x = F.pad(x, (0, 0, self.pad[0], self.pad[1]))  # time axis only
            if self.training:  # batch statistics: the literal order of the original
                return self.bn(F.relu(self.conv(x))).amax(dim=3)
            # Inference, same values in a cheaper order. With running statistics BN is a
            # per-channel affine a*v + c, and ReLU is monotonic, so over frequency f
            #   max_f(a*relu(z_f) + c) = a*relu(s*max_f(s*z_f)) + c,   s = sign(a) = sign(gamma)
            # (a channel with a < 0 keeps the minimum, the max of its negated conv). Pooling
            # first runs ReLU and BN on 1/f_out of the values, and a MaxPool (not ReduceMax) lets
            # ONNX Runtime stay in its blocked conv layout: ~2x less time outside the convs.
            s = torch.where(self.bn.weight < 0, -1.0, 1.0)
            z = F.conv2d(x, self.conv.weight * s[:, None, None, None], self.conv.bias * s)
            m = F.max_pool2d(z, (1, self.f_out))  # (B, C, T, 1)
            return self.bn(F.relu(m * s[:, None, None])).squeeze(3)

    class MidLayer(nn.Module):
        """1-D conv over time on all channels (TF: a [7, C] kernel on a [T, C, 1] map) -> ReLU -> BN."""

        def __init__(self, c_in: int, c_out: int):
            super().__init__()
            self.conv = nn.Conv1d(c_in, c_out, 7, padding=3)
            self.bn = nn.BatchNorm1d(c_out, eps=BN_EPS)

        def forward(self, x):
            return self.bn(F.relu(self.conv(x)))

    class LiveFrontEnd(nn.Module):
        """The front end and the first mid-end convolution with dead filters left out (eval only).

        ``forward(x)`` takes the batch-normed input ``(B, 1, T, F)`` and returns the full front-end map
        ``(B, 561, T)`` (dead channels filled with their constant ``bn(0)``, channels in the original
        order) and the first mid-end conv's output ``(B, 64, T)`` before its ReLU. That conv reads only
        the live channels; what the constant channels add (bias included, and less at the first and last
        3 frames, where the conv's zero padding cuts in) is precomputed for ``T = N_FRAMES``, the fixed
        patch length."""

        def __init__(self, net, dead: dict[str, np.ndarray]):
            super().__init__()
            branches = {f"timbral.{i}": b for i, b in enumerate(net.timbral)}
            branches |= {f"temporal.{i}": b for i, b in enumerate(net.temporal)}
            # Keyed "timbral_0" ... "temporal_2" (ONNX node names /live/timbral_0/...); a branch whose
            # filters are all dead has no entry.
            self.branches = nn.ModuleDict()
            live_idx, dead_idx, dead_val, start = [], [], [], 0
            with torch.no_grad():
                for name, b in branches.items():
                    mask = torch.from_numpy(np.asarray(dead[name], dtype=bool))
                    keep = torch.flatten(torch.nonzero(~mask))
                    c = b.conv.out_channels
                    zero = b.bn(torch.zeros(1, c, 1, 1)).flatten()  # what a dead channel always outputs
                    dead_idx += (start + torch.flatten(torch.nonzero(mask))).tolist()
                    dead_val += zero[mask].tolist()
                    if len(keep):
                        kt, kf = b.conv.kernel_size
                        live = FrontBranch(len(keep), kt, kf, b.pad)
                        live.conv.weight.copy_(b.conv.weight[keep])
                        live.conv.bias.copy_(b.conv.bias[keep])
                        for k in ("weight", "bias", "running_mean", "running_var"):
                            getattr(live.bn, k).copy_(getattr(b.bn, k)[keep])
                        self.branches[name.replace(".", "_")] = live.eval()
                        live_idx += (start + keep).tolist()
                    start += c
                order = torch.argsort(torch.tensor(live_idx + dead_idx))  # concat(live, dead) -> original
                self.register_buffer("order", order)
                self.register_buffer("dead_values", torch.tensor(dead_val, dtype=torch.float32)[None, :, None])
                conv = net.mid[0].conv
                self.conv0 = nn.Conv1d(len(live_idx), conv.out_channels, conv.kernel_size[0],
                                       padding=conv.padding[0], bias=False)
                self.conv0.weight.copy_(conv.weight[:, live_idx])
                # Constant channels through the conv, in float64: (1, 64, N_FRAMES), bias included.
                const = torch.zeros(1, start, N_FRAMES, dtype=torch.float64)
                const[0, dead_idx] = torch.tensor(dead_val, dtype=torch.float64)[:, None]
                w = conv.weight.double()
                w[:, live_idx] = 0.0
                self.register_buffer("conv0_constant", F.conv1d(const, w, conv.bias.double(),
                                                                padding=conv.padding[0]).float())

        def forward(self, x):
            live = torch.cat([b(x) for b in self.branches.values()], dim=1)  # (B, n_live, T)
            dead = self.dead_values.expand(live.shape[0], -1, live.shape[2])
            front = torch.cat([live, dead], dim=1)[:, self.order]
            return front, self.conv0(live) + self.conv0_constant

    class MusiCNN(nn.Module):
        """musicnn on ``(batch, 187, 96)`` log-mel patches (time, mel), as musicnn feeds them."""

        def __init__(self):
            super().__init__()
            t_filt = int(frontend_filters * 128)  # 204
            s_filt = int(frontend_filters * 32)  # 51
            self.bn_input = nn.BatchNorm2d(1, eps=BN_EPS)
            self.timbral = nn.ModuleList([
                FrontBranch(t_filt, 7, int(0.4 * n_mels), (3, 3)),
                FrontBranch(t_filt, 7, int(0.7 * n_mels), (3, 3)),
            ])
            self.temporal = nn.ModuleList([FrontBranch(s_filt, k, 1, _same_pad(k)) for k in (128, 64, 32)])
            front = 2 * t_filt + 3 * s_filt  # 561
            self.mid = nn.ModuleList([MidLayer(front, midend_filters), MidLayer(midend_filters, midend_filters),
                                      MidLayer(midend_filters, midend_filters)])
            pooled = 2 * (front + 3 * midend_filters)  # 1506
            self.bn_pool = nn.BatchNorm1d(pooled, eps=BN_EPS)
            self.dropout = nn.Dropout(0.5)
            self.dense = nn.Linear(pooled, backend_units)
            self.bn_dense = nn.BatchNorm1d(backend_units, eps=BN_EPS)
            self.out = nn.Linear(backend_units, n_classes)
            self.embedding_sizes = {"pooled": pooled, "penultimate": backend_units}
            self.live = None  # set by drop_dead_filters: the inference front end without dead filters

        def drop_dead_filters(self, x_max: float | None = None, align: int = CONV_BLOCK) -> dict:
            """Skip, at inference, the front-end filters that can never fire on an input with values in
            ``[0, x_max]`` (``dead_filters``; default ``gtag.audio.musicnn_input.MUSICNN_LOG_MEL_MAX``): their
            output is the constant ``bn(0)`` for every such input, so it is filled in instead of
            computed. Same outputs (float32 summation order aside), a fraction of the work: most of
            musicnn's MSD filters are dead. Each branch keeps a multiple of ``align`` filters (a few
            dead ones computed: harmless, their output is that same constant), see ``CONV_BLOCK``.
            Returns what was dropped."""
            x_max = _log_mel_max() if x_max is None else x_max
            dead = dead_filters(self, x_max)
            proven = {k: int(v.sum()) for k, v in dead.items()}
            for m in dead.values():
                m[np.flatnonzero(m)[:(-int((~m).sum())) % max(1, align)]] = False
            self.live = LiveFrontEnd(self, dead)
            skipped = {k: int(v.sum()) for k, v in dead.items()}
            return {"x_max": round(float(x_max), 4), "filters": sum(len(v) for v in dead.values()),
                    "proven_dead": proven, "skipped": skipped, "skipped_total": sum(skipped.values())}

        def pooled(self, x):
            """Max and mean over time of the front- and mid-end features, interleaved per channel
            ``[max_0, mean_0, max_1, mean_1, ...]`` (TF's flatten of ``concat([max, mean], 2)``):
            ``(B, 1506)``, the back end's input, before its batch norm."""
            x = self.bn_input(x.unsqueeze(1))  # (B, 1, T, F)
            if self.live is not None and not self.training:
                front, conv0 = self.live(x)
                m1 = self.mid[0].bn(F.relu(conv0))
            else:
                front = torch.cat([b(x) for b in self.timbral] + [b(x) for b in self.temporal], dim=1)
                m1 = self.mid[0](front)
            m2 = self.mid[1](m1) + m1
            m3 = self.mid[2](m2) + m2
            feats = torch.cat([front, m1, m2, m3], dim=1)  # (B, 753, T)
            return torch.stack([feats.amax(dim=2), feats.mean(dim=2)], dim=2).flatten(1)

        def penultimate(self, pooled):
            """Back end from the pooled features to the 200-unit penultimate layer (after its BN)."""
            return self.bn_dense(F.relu(self.dense(self.dropout(self.bn_pool(pooled)))))

        def logits_from_penultimate(self, pen):
            return self.out(self.dropout(pen))

        def forward(self, x):
            """MSD tag logits ``(B, 50)``; ``torch.sigmoid`` of them is musicnn's taggram."""
            return self.logits_from_penultimate(self.penultimate(self.pooled(x)))

        def embed(self, x) -> dict:
            """Every representation the transfer head may use, in one pass (eval mode expected)."""
            pooled = self.pooled(x)
            pen = self.penultimate(pooled)
            return {"pooled": pooled, "penultimate": pen, "logits": self.logits_from_penultimate(pen)}

    return MusiCNN()


def _log_mel_max() -> float:
    from gtag.audio.musicnn_input import MUSICNN_LOG_MEL_MAX  # not at import: the TensorFlow half runs without gtag

    return MUSICNN_LOG_MEL_MAX


def dead_filters(model, x_max: float | None = None, margin: float = DEAD_MARGIN) -> dict[str, np.ndarray]:
    """Front-end filters that never fire: ``{branch name: bool mask over its filters}``.

    A filter is dead when its conv output (the ReLU's input) is below ``-margin`` at every position
    for every input patch with values in ``[0, x_max]`` (``gtag.audio.musicnn_input.musicnn_patches`` never
    leaves that range). After the input batch norm (``a x + c``) each value lies in
    ``[min(c, a x_max + c), max(...)]``, widened to include 0 for the conv's time padding; a linear
    filter is largest on that box at the corner taking the top for positive weights and the bottom
    for negative ones, so ``bias + sum(max(w lo, w hi))`` bounds it exactly (in float64). Its ReLU
    output is then 0 always, and its batch norm a constant: for negative BN scales too (the max over
    frequency becomes a min, and a min of values below 0 is below 0). A margin (``margin`` plus a
    bound on float32 summation error) keeps rounding from ever reviving a filter the proof calls dead."""
    x_max = _log_mel_max() if x_max is None else x_max
    bn = {k: float(getattr(model.bn_input, k).detach()[0]) for k in ("weight", "bias", "running_mean", "running_var")}
    a = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
    c = bn["bias"] - a * bn["running_mean"]
    lo, hi = min(0.0, c, a * x_max + c), max(0.0, c, a * x_max + c)
    out = {}
    named = [(f"timbral.{i}", b) for i, b in enumerate(model.timbral)]
    named += [(f"temporal.{i}", b) for i, b in enumerate(model.temporal)]
    for name, b in named:
        w = b.conv.weight.detach().double().numpy().reshape(b.conv.out_channels, -1)
        bias = b.conv.bias.detach().double().numpy()
        top = bias + np.maximum(w * lo, w * hi).sum(axis=1)
        # float32 summation of n terms, in any order, errs by at most n * 2**-24 * sum(|terms|)
        # (first order); doubled, plus the fixed margin.
        worst = np.abs(bias) + np.abs(w).sum(axis=1) * max(abs(lo), abs(hi))
        slack = 2 * (w.shape[1] + 1) * 2.0**-24 * worst
        out[name] = top < -(margin + slack)
    return out


# --------------------------------------------------------------------------------------------------
# Converted weights (plain .npz, no pickle)
# --------------------------------------------------------------------------------------------------


def check_shapes(state: dict[str, np.ndarray]) -> None:
    """Raise unless ``state`` fits ``MusiCNN`` exactly (names and shapes)."""
    model = build_model()
    ref = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if ref != got:
        diff = sorted(set(ref.items()) ^ set(got.items()))
        raise ValueError(f"converted weights do not fit MusiCNN: {diff[:6]}")


def save_weights(state: dict[str, np.ndarray], path: str | Path, source: str = "") -> Path:
    """Converted weights as a plain ``.npz`` (no pickle), with the tag names and provenance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": WEIGHTS_FORMAT, "labels": list(MSD_LABELS), "source": source}
    np.savez(path, __meta__=np.array(json.dumps(meta)), **state)
    return path


def load_weights(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(state dict as numpy arrays, metadata)`` of a ``save_weights`` file (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        state = {k: z[k] for k in z.files if k != "__meta__"}
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a converted musicnn weights file ({meta.get('format')!r})")
    return state, meta


def load_pretrained(path: str | Path):
    """A ``MusiCNN`` in eval mode with the converted MSD weights of ``path``."""
    torch, _ = _torch()
    state, _ = load_weights(path)
    check_shapes(state)
    model = build_model()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if unexpected or [m for m in missing if not m.endswith("num_batches_tracked")]:
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval()
