"""musicnn to ONNX: the ported backbone exported by torch, a ``gtag.models.head`` head attached, and the checks.

Used by `gtag-train transfer` (``training.transfer``). The exported graph is the backbone up to two
outputs, ``embedding`` (the pooled 1506 features and the 200-unit penultimate layer every head reads, ``gtag.models.head.EMBEDDING_OUTPUT``)
and ``msd_tags`` (musicnn's 50 MSD tag sigmoids); ``gtag.models.head.attach`` appends the genre head in
ONNX itself, so the file carries ``probabilities`` (and ``ood_distance``) beside them and
``gtag.learn.embed.Backbone`` can cut it again at ``embedding`` (`gtag learn`, `gtag-train musicnn-head`).

Checks, each a manifest block: ONNX Runtime against torch + the numpy head (``onnx_agreement``), the
dead-filter pruning against the whole network (``dead_filter_check``), the exported tags against
TensorFlow's stored outputs (``fixture_agreement``) and the int8 CPU variant against the float model
(``make_cpu_variant``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gtag.audio import decode as audio
from gtag.audio import musicnn_input
from gtag.models.head import EMBEDDING_OUTPUT, PROBABILITY_OUTPUT, LinearHead, attach

from .data import Track
from .export import quantize_nodes, save_onnx
from .musicnn import N_FRAMES, N_MELS, load_pretrained

INPUT_NAME = "musicnn_mel"
TAG_OUTPUT = "msd_tags"  # gtag.models.runtime.TAG_OUTPUT
# The CPU variant (manifest "cpu_variant"): the two timbral convolutions, about half of musicnn's time
# on a CPU (its dead filters skipped), in int8 (static QDQ quantisation, per-channel weights, ranges
# calibrated on training patches). Weights use 7 bits (reduce_range) so CPUs without VNNI cannot
# saturate int16 sums.
CPU_VARIANT_FILE = "musicnn_cpu.onnx"
QUANTIZED_SCOPES = ("/live/timbral_",)  # ONNX node-name prefix of the timbral branches' layers (live filters)
# Windows per ONNX Runtime call at tag time (manifest "max_batch"): musicnn's activations take ~30 MB
# per window; batches of 8 run as fast per window as one big batch (measured: 119 windows of a 3-min
# track in one call: 8 GB peak RSS and 6x slower; in chunks of 8: 0.8 GB).
MAX_BATCH = 8


def backbone_module(weights: Path, drop_dead: bool = True):
    """``x (B, 187, 96) -> (embedding (B, 1706): pooled + penultimate, msd_tags (B, 50))``. With ``drop_dead`` the backbone
    skips the front-end filters proven never to fire on gtag's inputs (``MusiCNN.drop_dead_filters``;
    what it skipped is in the module's ``front_end`` attribute)."""
    import torch
    from torch import nn

    net = load_pretrained(weights)
    front_end = net.drop_dead_filters() if drop_dead else {}

    class MusicnnBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = net

        def forward(self, x):
            pooled = self.backbone.pooled(x)
            pen = self.backbone.penultimate(pooled)
            return torch.cat([pooled, pen], dim=1), torch.sigmoid(self.backbone.logits_from_penultimate(pen))

    module = MusicnnBackbone().eval()
    module.front_end = front_end
    return module


def export_backbone(module, path: Path) -> None:
    """torch.onnx.export (TorchScript exporter, opset 17, dynamic batch) of ``backbone_module``."""
    import torch

    outputs = [EMBEDDING_OUTPUT, TAG_OUTPUT]
    torch.onnx.export(module, (torch.zeros(2, N_FRAMES, N_MELS),), str(path), dynamo=False, opset_version=17,
                      input_names=[INPUT_NAME], output_names=outputs,
                      dynamic_axes={INPUT_NAME: {0: "batch"}} | {o: {0: "batch"} for o in outputs})


def save_with_head(backbone_path: Path, head: LinearHead, dst: Path, meta: dict[str, Any]) -> str:
    """``dst``: the backbone graph of ``backbone_path`` with ``head`` attached (``gtag.models.head.attach``)
    and ``meta`` as metadata; returns its sha256."""
    import onnx

    return save_onnx(attach(onnx.load(str(backbone_path)), head), dst, meta)


def export(weights: Path, head: LinearHead, path: Path, meta: dict[str, Any], calibration: np.ndarray,
           probe: np.ndarray, fixture: Path | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Write ``path`` (backbone + head, float) and its CPU variant beside it; returns (sha256 of
    ``path``, its ``onnx_check`` block, its ``cpu_variant`` block)."""
    module = backbone_module(weights)
    with tempfile.TemporaryDirectory() as tmp:
        base, base_q = Path(tmp) / "backbone.onnx", Path(tmp) / "backbone_cpu.onnx"
        export_backbone(module, base)
        sha = save_with_head(base, head, path, meta)
        # The head is attached after quantising: the same float head on both files.
        quantize_nodes(base, base_q, calibration, INPUT_NAME, QUANTIZED_SCOPES, {})
        variant = path.parent / CPU_VARIANT_FILE
        variant_sha = save_with_head(base_q, head, variant, meta | {"variant": "cpu: timbral convolutions int8"})
    check = onnx_agreement(path, module, head, probe)
    check["dead_filters"] = dead_filter_check(module, backbone_module(weights, drop_dead=False), head, probe)
    if fixture and Path(fixture).is_file():
        check.update(fixture_agreement(path, Path(fixture)))
    block = {"file": variant.name, "sha256": variant_sha,
             "what": "the two timbral convolutions in int8 (ONNX Runtime static QDQ, per-channel 7-bit "
                     f"weights, uint8 activations calibrated on {len(calibration)} training patches); "
                     "the rest float32",
             "agreement_with_float": variant_agreement(path, variant, probe)}
    if fixture and Path(fixture).is_file():
        block["max_abs_msd_tag_diff_vs_tensorflow"] = fixture_agreement(variant, Path(fixture))[
            "max_abs_msd_tag_diff_vs_tensorflow"]
    return sha, check, block


def _torch_outputs(module, head: LinearHead, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, msd_tags, embedding) of torch's backbone and the numpy head."""
    import torch

    with torch.no_grad():
        emb, tags = (v.numpy() for v in module(torch.from_numpy(x.astype(np.float32))))
    return head.predict_proba(emb), tags, emb


def onnx_agreement(path: Path, module, head: LinearHead, x: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime (CPU) against torch's backbone + the numpy head on the same patches."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    p_o, t_o, e_o = sess.run([PROBABILITY_OUTPUT, TAG_OUTPUT, EMBEDDING_OUTPUT], {INPUT_NAME: x.astype(np.float32)})
    p_t, t_t, e_t = _torch_outputs(module, head, x)
    return {"windows": int(len(x)), "label_agreement": round(float(np.mean(p_o.argmax(1) == p_t.argmax(1))), 5),
            "max_abs_prob_diff": float(np.abs(p_o - p_t).max()),
            "max_abs_msd_tag_diff": float(np.abs(t_o - t_t).max()),
            "max_abs_embedding_diff": float(np.abs(e_o - e_t).max())}


def dead_filter_check(module, full_module, head: LinearHead, x: np.ndarray) -> dict[str, Any]:
    """What ``backbone_module`` skipped, and how far the result is from the whole network (torch, same
    patches): float32 summation order only, since the skipped filters' outputs are proven constant."""
    p0, t0, _ = _torch_outputs(full_module, head, x)
    p1, t1, _ = _torch_outputs(module, head, x)
    return module.front_end | {"windows": int(len(x)),
                               "max_abs_prob_diff_vs_all_filters": float(np.abs(p0 - p1).max()),
                               "max_abs_msd_tag_diff_vs_all_filters": float(np.abs(t0 - t1).max())}


def fixture_agreement(path: Path, fixture: Path) -> dict[str, Any]:
    """The exported ONNX model's ``msd_tags`` against TensorFlow's reference outputs."""
    import onnxruntime as ort

    with np.load(fixture, allow_pickle=False) as z:
        x, tags = z["patches"], z["tags"]
        corner = z["range_corner"] if "range_corner" in z.files else np.zeros(len(x), dtype=bool)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = np.abs(sess.run([TAG_OUTPUT], {INPUT_NAME: x.astype(np.float32)})[0] - tags).max(axis=1)
    # Music and synthetic music-like patches apart from the corners of the input range (silence,
    # every band at full scale...): those check the float model's dead-filter proof; an int8 model,
    # calibrated on music, is not expected to follow there.
    out = {"patches": int((~corner).sum()), "max_abs_msd_tag_diff_vs_tensorflow": float(diff[~corner].max())}
    if corner.any():
        out |= {"range_corner_patches": int(corner.sum()),
                "range_corners_max_abs_msd_tag_diff_vs_tensorflow": float(diff[corner].max())}
    return out


def calibration_patches(train: list[Track], seed: int, hop: int, tracks: int = 64, per_track: int = 2) -> np.ndarray:
    """A few musicnn patches from random *training* tracks: the activation ranges of the CPU variant."""
    rng = np.random.default_rng(seed)
    out = []
    for i in sorted(rng.choice(len(train), min(tracks, len(train)), replace=False)):
        x = musicnn_input.musicnn_patches(audio.load_audio(train[i].path).samples, audio.SAMPLE_RATE, hop)
        out.append(x[np.sort(rng.choice(len(x), min(per_track, len(x)), replace=False))])
    return np.concatenate(out)


def variant_agreement(reference: Path, variant: Path, x: np.ndarray) -> dict[str, Any]:
    """How closely ``variant`` follows ``reference`` (ONNX Runtime, CPU) on the patches ``x``."""
    import onnxruntime as ort

    outs = []
    for path in (reference, variant):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs = [sess.run([PROBABILITY_OUTPUT, TAG_OUTPUT], {INPUT_NAME: x[i:i + MAX_BATCH].astype(np.float32)})
                for i in range(0, len(x), MAX_BATCH)]
        outs.append([np.concatenate([r[k] for r in runs]) for k in (0, 1)])
    (p0, t0), (p1, t1) = outs
    return {"windows": int(len(x)), "window_label_agreement": round(float(np.mean(p0.argmax(1) == p1.argmax(1))), 4),
            "max_abs_prob_diff": float(np.abs(p0 - p1).max()), "mean_abs_prob_diff": float(np.abs(p0 - p1).mean()),
            "max_abs_msd_tag_diff": float(np.abs(t0 - t1).max()), "mean_abs_msd_tag_diff": float(np.abs(t0 - t1).mean())}
