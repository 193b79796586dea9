"""musicnn port and transfer model: the shipped ONNX model reproduces TensorFlow's MSD tag outputs
(stored reference, no TensorFlow needed), torch and ONNX agree, the 16 kHz input lines up with gtag's
windows, and gtag shows the MSD tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gtag.audio import decode as audio
from gtag.audio import features, musicnn_input
from gtag.models.runtime import KIND_MUSICNN, default_models_dir, load_models, read_manifest, sha256_file

from .conftest import GENRES, GTZAN, need, write_wav

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from training.musicnn import MSD_LABELS, build_model, check_shapes, load_weights, save_weights  # noqa: E402
from training.musicnn_convert import VARIABLE_MAP, convert_variables  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "data" / "musicnn_reference.npz"
# The port's tolerance on MSD tag probabilities (sigmoid outputs): measured 1.3e-6 for torch and
# ONNX Runtime against TensorFlow 2.21 running the author's graph; float32 reordering stays far below.
TAG_ATOL = 1e-4

# Variable shapes of musicnn-0.1.0's MSD_musicnn checkpoint (see training/musicnn_convert.py).
CHECKPOINT_SHAPES = {
    "batch_normalization": 1, "batch_normalization_1": 204, "batch_normalization_2": 204,
    "batch_normalization_3": 51, "batch_normalization_4": 51, "batch_normalization_5": 51,
    "batch_normalization_6": 64, "batch_normalization_7": 64, "batch_normalization_8": 64,
    "batch_normalization_9": 1506, "batch_normalization_10": 200,
    "conv2d/kernel": (7, 38, 1, 204), "conv2d_1/kernel": (7, 67, 1, 204), "conv2d_2/kernel": (128, 1, 1, 51),
    "conv2d_3/kernel": (64, 1, 1, 51), "conv2d_4/kernel": (32, 1, 1, 51), "conv2d_5/kernel": (7, 561, 1, 64),
    "conv2d_6/kernel": (7, 64, 1, 64), "conv2d_7/kernel": (7, 64, 1, 64),
    "dense/kernel": (1506, 200), "dense_1/kernel": (200, 50),
}  # fmt: skip


def _fake_checkpoint(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in CHECKPOINT_SHAPES.items():
        if name.startswith("batch_normalization"):
            for v in ("gamma", "beta", "moving_mean"):
                out[f"{name}/{v}"] = rng.standard_normal(shape).astype(np.float32)
            out[f"{name}/moving_variance"] = rng.uniform(0.5, 2, shape).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            out[name.replace("kernel", "bias")] = (rng.standard_normal(shape[-1]) * 0.05).astype(np.float32)
    return out


def _reference():
    if not REFERENCE.is_file():
        pytest.skip("tests/data/musicnn_reference.npz missing (made by gtag-train musicnn-convert)")
    with np.load(REFERENCE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _shipped_musicnn():
    specs = {s.name: s for s in read_manifest(default_models_dir())}
    if "musicnn" not in specs:
        pytest.skip("no musicnn model shipped in exported_models")
    return specs["musicnn"]


def test_variable_map_covers_the_checkpoint_and_fits_the_model():
    fake = _fake_checkpoint()
    assert {v for v, _, _ in VARIABLE_MAP} == set(fake)  # every variable used, none invented
    state = convert_variables(fake)
    check_shapes(state)
    n = sum(v.size for k, v in state.items() if "running" not in k)
    assert 780_000 < n < 800_000  # "about 790 k parameters"


def test_conv_and_dense_layouts_follow_tensorflow():
    """A TF kernel [time, mel, in, out] applied as TF does (cross-correlation, NHWC) equals the torch
    layer with the converted weight; a TF dense kernel [in, out] likewise."""
    fake = _fake_checkpoint(1)
    state = convert_variables(fake)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 38)).astype(np.float32)  # one valid position of conv2d
    k = fake["conv2d/kernel"]
    tf_out = np.einsum("tf,tfo->o", x, k[:, :, 0, :])
    w = torch.from_numpy(state["timbral.0.conv.weight"])
    torch_out = torch.nn.functional.conv2d(torch.from_numpy(x)[None, None], w)[0, :, 0, 0].numpy()
    assert np.allclose(tf_out, torch_out, atol=1e-5)
    m = rng.standard_normal((7, 561)).astype(np.float32)  # mid-end: [7, 561] kernel over (time, channels)
    tf_mid = np.einsum("tc,tco->o", m, fake["conv2d_5/kernel"][:, :, 0, :])
    torch_mid = torch.nn.functional.conv1d(torch.from_numpy(m.T)[None], torch.from_numpy(state["mid.0.conv.weight"]))
    assert np.allclose(tf_mid, torch_mid[0, :, 0].numpy(), atol=1e-4)
    v = rng.standard_normal(1506).astype(np.float32)
    assert np.allclose(v @ fake["dense/kernel"], torch.from_numpy(state["dense.weight"]).numpy() @ v, atol=1e-4)


def test_weights_npz_round_trip_without_pickle(tmp_path):
    state = convert_variables(_fake_checkpoint())
    path = save_weights(state, tmp_path / "w.npz", source="test")
    got, meta = load_weights(path)
    assert meta["labels"] == list(MSD_LABELS) and set(got) == set(state)
    assert all(np.array_equal(got[k], state[k]) for k in state)
    np.savez(tmp_path / "other.npz", a=np.zeros(2), __meta__=np.array(json.dumps({"format": "x"})))
    with pytest.raises(ValueError, match="not a converted"):
        load_weights(tmp_path / "other.npz")


def test_reference_fixture_is_small_and_complete():
    ref = _reference()
    assert REFERENCE.stat().st_size < 1_000_000
    assert tuple(ref["labels"].tolist()) == MSD_LABELS
    n = len(ref["patches"])
    assert ref["patches"].shape == (n, 187, 96) and n >= 4
    assert ref["tags"].shape == (n, 50) and ref["logits"].shape == (n, 50) and ref["penultimate"].shape == (n, 200)
    assert np.allclose(1 / (1 + np.exp(-ref["logits"])), ref["tags"], atol=1e-6)
    assert "TensorFlow" in str(ref["source"])
    corner = ref["range_corner"]  # the input range's corners, where the dead-filter proof is tightest
    assert corner.shape == (n,) and 2 <= corner.sum() < n
    assert (ref["patches"][corner] == 0).all(axis=(1, 2)).any()  # silence
    assert np.isclose(ref["patches"][corner], musicnn_input.MUSICNN_LOG_MEL_MAX).all(axis=(1, 2)).any()


def test_shipped_onnx_reproduces_tensorflow_msd_tags():
    """The port, end to end: musicnn.onnx's msd_tags on the stored patches = TensorFlow's outputs,
    the input range's corners included (the shipped graph leaves out the filters proven dead there)."""
    ref = _reference()
    spec = _shipped_musicnn()
    assert spec.kind == KIND_MUSICNN and tuple(spec.extra["msd_labels"]) == MSD_LABELS
    (model,) = load_models(default_models_dir(), ["musicnn"], device="cpu", cpu_variant=False)
    assert model.path.name == spec.file
    probs, tags = model.predict_with_tags(ref["patches"])
    assert tags is not None and tags.shape == ref["tags"].shape
    assert np.abs(tags - ref["tags"]).max() < TAG_ATOL
    for got, want in zip(tags, ref["tags"]):  # the same top tags in the same order
        assert np.argsort(-got)[:5].tolist() == np.argsort(-want)[:5].tolist()
    assert probs.shape == (len(ref["patches"]), 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


# The CPU variant (int8 timbral convolutions) against TensorFlow: measured 0.017 on the fixture.
VARIANT_TAG_ATOL = 0.05


def test_shipped_cpu_variant_is_what_a_cpu_runs_and_stays_close_to_tensorflow():
    ref = _reference()
    spec = _shipped_musicnn()
    variant = spec.extra.get("cpu_variant")
    if not variant:
        pytest.skip("the shipped musicnn has no CPU variant")
    root = default_models_dir()
    assert sha256_file(root / variant["file"]) == variant["sha256"]
    (model,) = load_models(root, ["musicnn"], device="cpu")
    assert model.path.name == variant["file"] and model.variant == "cpu_variant"
    # Not on the range's corners (every band at float16's maximum...): no audio gets there, and the
    # int8 ranges are calibrated on music. Real extremes are checked below.
    music = ~ref["range_corner"]
    _, tags = model.predict_with_tags(ref["patches"][music])
    assert np.abs(tags - ref["tags"][music]).max() < VARIANT_TAG_ATOL
    for got, want in zip(tags, ref["tags"][music]):  # the same leading tags (near-ties may swap)
        assert np.argmax(want) in np.argsort(-got)[:3]
        assert len(set(np.argsort(-got)[:5]) & set(np.argsort(-want)[:5])) >= 4
    agree = variant["agreement_with_float"]
    assert agree["window_label_agreement"] >= 0.95 and agree["windows"] >= 100


def test_shipped_cpu_variant_follows_the_float_model_on_extreme_audio():
    """Digital silence, full-scale noise, a full-scale square wave and a clipped, brick-walled
    signal: the int8 CPU variant gives the float model's genre on every window (one of its two leaders on
    a near-tie) and tags within 0.05."""
    spec = _shipped_musicnn()
    if not spec.extra.get("cpu_variant"):
        pytest.skip("the shipped musicnn has no CPU variant")
    root = default_models_dir()
    (q,) = load_models(root, ["musicnn"], device="cpu")
    (f,) = load_models(root, ["musicnn"], device="cpu", cpu_variant=False)
    rng = np.random.default_rng(0)
    sr, n = audio.SAMPLE_RATE, 6 * audio.SAMPLE_RATE
    t = np.arange(n) / sr
    signals = [np.zeros(n), rng.uniform(-1, 1, n), np.sign(np.sin(2 * np.pi * 440 * t)),
               np.clip(10 * rng.standard_normal(n), -1, 1), np.sin(2 * np.pi * 50 * t)]
    x = np.concatenate([musicnn_input.musicnn_patches(y.astype(np.float32), sr, 3 * sr) for y in signals])
    (pq, tq), (pf, tf) = q.predict_with_tags(x), f.predict_with_tags(x)
    # the float model's genre wherever it has one (a near-tie, within 0.05, may swap its two leaders)
    top2 = np.sort(pf, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05
    # (no genre fits silence or noise: the head may hesitate between two on several of these
    # windows; at least half of them must be clear, or the check below says nothing)
    assert clear.sum() >= len(x) // 2
    assert (pq.argmax(1) == pf.argmax(1))[clear].all()
    assert all(pq[i].argmax() in np.argsort(-pf[i])[:2] for i in np.flatnonzero(~clear))
    assert np.abs(tq - tf).max() < VARIANT_TAG_ATOL and np.abs(pq - pf).max() < 0.15


def test_shipped_musicnn_entry_is_complete():
    spec = _shipped_musicnn()
    root = default_models_dir()
    assert sha256_file(root / spec.file) == spec.sha256
    assert (root / spec.file).stat().st_size < 10e6
    assert spec.labels == GENRES and spec.sample_rate == 22050 and spec.window_seconds == 3.0
    assert spec.extra["input"]["internal_sample_rate"] == 16000 and spec.input_name == "musicnn_mel"
    assert spec.metrics["valid_track"]["accuracy"] > 0.1 and spec.metrics["valid_track"]["per_genre"]
    assert spec.extra["onnx_check"]["max_abs_prob_diff"] < 1e-4
    skipped = spec.extra["onnx_check"]["dead_filters"]  # proven-dead filters left out, outputs kept
    assert 0 < skipped["skipped_total"] <= sum(skipped["proven_dead"].values()) < skipped["filters"]
    assert skipped["max_abs_msd_tag_diff_vs_all_filters"] < 1e-4
    licence = (root / "MUSICNN_LICENSE.md").read_text()
    assert "ISC" in licence or "Permission to use, copy, modify" in licence
    assert "Pons" in licence


def _tiny_musicnn(seed: int = 0):
    torch.manual_seed(seed)
    net = build_model(frontend_filters=0.25, midend_filters=8, backend_units=16)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


class _TwoOutputs(torch.nn.Module):
    """A tiny musicnn with a random genre head (probabilities, msd_tags), at toy size."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.genre = torch.nn.Linear(16, 10)

    def forward(self, x):
        pooled = self.net.pooled(x)
        pen = self.net.penultimate(pooled)
        return torch.softmax(self.genre(pen), dim=1), torch.sigmoid(self.net.logits_from_penultimate(pen))


def _export_tiny(path: Path, net=None) -> torch.nn.Module:
    """Export ``net`` (default: a fresh tiny musicnn) with a random genre head."""
    module = _TwoOutputs(net if net is not None else _tiny_musicnn()).eval()
    torch.onnx.export(module, (torch.zeros(2, 187, 96),), str(path), dynamo=False, opset_version=17,
                      input_names=["musicnn_mel"], output_names=["probabilities", "msd_tags"],
                      dynamic_axes={"musicnn_mel": {0: "batch"}, "probabilities": {0: "batch"},
                                    "msd_tags": {0: "batch"}})
    return module


def test_tiny_random_musicnn_torch_and_onnx_agree(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    module = _export_tiny(tmp_path / "tiny.onnx")
    x = np.abs(np.random.default_rng(0).standard_normal((5, 187, 96))).astype(np.float32) * 2
    sess = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    p_o, t_o = sess.run(["probabilities", "msd_tags"], {"musicnn_mel": x})  # batch 5: the axis is dynamic
    with torch.no_grad():
        p_t, t_t = (v.numpy() for v in module(torch.from_numpy(x)))
    assert np.abs(p_o - p_t).max() < 1e-5 and np.abs(t_o - t_t).max() < 1e-5


def test_front_end_pools_first_at_inference_with_the_same_values():
    """Eval mode max-pools the conv output before ReLU and batch norm (cheaper); the values must be
    those of the original order, negative batch-norm scales (which turn the max into a min) included."""
    import torch.nn.functional as F

    net = _tiny_musicnn()
    branches = list(net.timbral) + list(net.temporal)
    with torch.no_grad():
        for b in branches:
            b.bn.weight.uniform_(-1.5, 1.5)
        assert any((b.bn.weight < 0).any() and (b.bn.weight > 0).any() for b in branches)
        x = net.bn_input(torch.from_numpy(
            np.abs(np.random.default_rng(2).standard_normal((3, 1, 187, 96))).astype(np.float32)))
        for b in branches:
            literal = b.bn(F.relu(b.conv(F.pad(x, (0, 0, *b.pad))))).amax(dim=3)
            got = b(x)
            assert got.shape == literal.shape and torch.allclose(got, literal, atol=1e-5)
        b = branches[0].train()  # training keeps the literal order (batch statistics)
        assert torch.allclose(b(x), b.bn(F.relu(b.conv(F.pad(x, (0, 0, *b.pad))))).amax(dim=3), atol=1e-5)


def _with_dead_filters(net, seed: int = 0):
    """Kill about half of each front-end branch's filters the way training kills them (ReLU input
    below 0 for every input: weights pushed down, bias negative), and make one timbral filter fire
    only on its worst-case input (so a bound that ignored the input range would call it dead)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for b in list(net.timbral) + list(net.temporal):
            kill = rng.random(b.conv.out_channels) < 0.5
            kill[0], kill[-1] = True, False
            w = b.conv.weight
            w[kill] = -w[kill].abs() * 0.1
            b.conv.bias[kill] = -1.0 - torch.rand(int(kill.sum()))
        b = net.timbral[0]  # filter 1: all weights +0.01, bias just below what x = x_max can overcome
        b.conv.weight[1] = 0.01
    return net


def test_dead_filter_proof_holds_on_the_worst_inputs():
    """Every filter dead_filters calls dead stays below 0 on the inputs that push it hardest (patches
    of 0 and MUSICNN_LOG_MEL_MAX, the corners of gtag's input range), and a filter that fires only
    on such a corner is not called dead."""
    import torch.nn.functional as F

    from training.musicnn import dead_filters

    net = _with_dead_filters(_tiny_musicnn())
    bn = net.bn_input
    a = float(bn.weight[0].detach() / torch.sqrt(bn.running_var[0] + 1e-3))
    c = float(bn.bias[0].detach() - a * bn.running_mean[0])
    b = net.timbral[0]
    with torch.no_grad():  # filter 1 reaches +0.05 only where the whole kernel sees x_max
        top = a * musicnn_input.MUSICNN_LOG_MEL_MAX + c
        b.conv.bias[1] = 0.05 - 0.01 * b.conv.weight[1].numel() * max(top, 0.0)
    dead = dead_filters(net)
    assert dead["timbral.0"][0] and not dead["timbral.0"][1]
    assert 0.2 < np.mean(np.concatenate(list(dead.values()))) < 0.8
    rng = np.random.default_rng(1)
    corners = [np.zeros((187, 96)), np.full((187, 96), musicnn_input.MUSICNN_LOG_MEL_MAX)]
    corners += [np.where(rng.random((187, 96)) < 0.5, 0.0, musicnn_input.MUSICNN_LOG_MEL_MAX) for _ in range(6)]
    x = torch.from_numpy(np.stack(corners).astype(np.float32))
    with torch.no_grad():
        xb = net.bn_input(x.unsqueeze(1))
        for name, br in [(f"timbral.{i}", q) for i, q in enumerate(net.timbral)] + \
                        [(f"temporal.{i}", q) for i, q in enumerate(net.temporal)]:
            z = br.conv(F.pad(xb, (0, 0, *br.pad)))  # the ReLU's input, every position
            assert (z[:, torch.from_numpy(dead[name])] < 0).all(), name
        z1 = b.conv(F.pad(xb, (0, 0, *b.pad)))[:, 1]
        assert z1.max() > 0  # the corner filter does fire: calling it dead would change outputs


@pytest.mark.parametrize("align", [1, 4])
def test_dropping_dead_filters_keeps_every_output(tmp_path, align):
    """The inference front end without the dead filters gives the network's outputs (torch and
    ONNX Runtime), on inputs across the whole range, silence and full scale included."""
    ort = pytest.importorskip("onnxruntime")
    full = _with_dead_filters(_tiny_musicnn())
    pruned = _with_dead_filters(_tiny_musicnn())
    report = pruned.drop_dead_filters(align=align)
    assert report["skipped_total"] > 0 and report["skipped_total"] <= sum(report["proven_dead"].values())
    total = {f"timbral_{i}": b.conv.out_channels for i, b in enumerate(full.timbral)}
    total |= {f"temporal_{i}": b.conv.out_channels for i, b in enumerate(full.temporal)}
    for name, branch in pruned.live.branches.items():  # whole blocks, unless too few dead filters to pad
        n = branch.conv.out_channels
        assert n % align == 0 or n == total[name]
        assert n == total[name] - report["skipped"][name.replace("_", ".")]
    rng = np.random.default_rng(4)
    x = np.concatenate([np.zeros((1, 187, 96)), np.full((1, 187, 96), musicnn_input.MUSICNN_LOG_MEL_MAX),
                        rng.uniform(0, musicnn_input.MUSICNN_LOG_MEL_MAX, (3, 187, 96)),
                        np.abs(rng.standard_normal((3, 187, 96))) * 2]).astype(np.float32)
    with torch.no_grad():
        want, got = full.embed(torch.from_numpy(x)), pruned.embed(torch.from_numpy(x))
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-4), k
    _export_tiny(tmp_path / "p.onnx", pruned)
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    _, tags = sess.run(["probabilities", "msd_tags"], {"musicnn_mel": x})
    assert np.abs(tags - torch.sigmoid(want["logits"]).numpy()).max() < 1e-5


def test_cpu_variant_is_loaded_on_cpu_checked_and_close(tmp_path, tiny_musicnn_models):
    """A manifest "cpu_variant" (int8 timbral convs) is what a CPU session runs, hash-checked like
    the main file; cpu_variant=False loads the float model."""
    from gtag.models.runtime import ModelError
    from training.export import quantize_nodes

    root = tiny_musicnn_models
    rng = np.random.default_rng(3)
    calib = np.abs(rng.standard_normal((16, 187, 96))).astype(np.float32) * 2
    sha = quantize_nodes(root / "mnn.onnx", root / "mnn_cpu.onnx", calib, "musicnn_mel", ("/timbral.",), {})
    import onnx

    qnodes = [n for n in onnx.load(str(root / "mnn_cpu.onnx")).graph.node if n.op_type == "DequantizeLinear"]
    assert qnodes, "nothing was quantised"
    entry = json.loads((root / "manifest.json").read_text())
    entry["models"][0]["cpu_variant"] = {"file": "mnn_cpu.onnx", "sha256": sha}
    (root / "manifest.json").write_text(json.dumps(entry))
    (q,) = load_models(root, device="cpu")
    (f,) = load_models(root, device="cpu", cpu_variant=False)
    assert q.path.name == "mnn_cpu.onnx" and q.variant == "cpu_variant" and q.sha256 == sha
    assert f.path.name == "mnn.onnx" and f.variant is None
    x = calib[:5]
    (pq, tq), (pf, tf) = q.predict_with_tags(x), f.predict_with_tags(x)
    assert np.abs(tq - tf).mean() < 0.02 and np.abs(pq - pf).mean() < 0.02
    # a --jobs worker loads what its parent loaded: the float model stays float in the workers
    from gtag.predict.pipeline import _WORKER_PREDICTORS, Predictor, predict_in_worker

    wav = write_wav(tmp_path / "a.wav", np.sin(np.arange(5 * 22050) * 0.05).astype(np.float32) * 0.3)
    for model in (q, f):
        parent = Predictor([model])
        assert parent.source.cpu_variant == (model is q)
        _WORKER_PREDICTORS.clear()
        got = predict_in_worker(wav, parent.source)
        assert np.allclose(got.probabilities, parent.predict_file(wav).probabilities, atol=1e-6)
        assert _WORKER_PREDICTORS[parent.source].models[0].path.name == model.path.name
    (root / "mnn_cpu.onnx").write_bytes((root / "mnn_cpu.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        load_models(root, device="cpu")


def test_musicnn_patches_follow_gtags_windows(tone):
    y = np.tile(tone, 2)  # 10 s
    p = musicnn_input.musicnn_patches(y)
    starts = features.analyze(y, want_features=False).starts
    assert p.shape == (len(starts), 187, 96) and p.dtype == np.float32
    assert p.min() >= 0 and np.isfinite(p).all()
    # Window i is the 3 s that start at gtag's window i: computed from that excerpt alone, its
    # interior frames are the same (edges differ: the excerpt's STFT pads where the track has audio).
    # With a hop of 0.8 s every start falls on a 16 kHz frame exactly (17,640 samples at 22,050 Hz
    # = 12,800 at 16 kHz = 50 frames); at the default 1.5 s hop it is rounded to the nearest frame.
    hop = 17_640
    p = musicnn_input.musicnn_patches(y, hop=hop)
    starts = audio.window_starts(y.size, audio.WINDOW_SAMPLES, hop)
    assert len(p) == len(starts) == 9
    for i, s in enumerate(starts):
        alone = musicnn_input.musicnn_patches(y[s:s + audio.WINDOW_SAMPLES])[0]
        assert np.median(np.abs(alone[4:-4] - p[i][4:-4])) < 1e-3


def test_musicnn_patches_of_short_and_silent_input():
    short = (0.1 * np.sin(np.arange(int(1.5 * audio.SAMPLE_RATE)) * 0.05)).astype(np.float32)
    assert musicnn_input.musicnn_patches(short).shape == (1, 187, 96)  # tiled to one window
    silent = musicnn_input.musicnn_patches(np.zeros(audio.WINDOW_SAMPLES, np.float32))
    assert silent.shape == (1, 187, 96) and np.allclose(silent, 0)  # log10(1 + 0)
    with pytest.raises(ValueError):
        musicnn_input.musicnn_patches(short, sr=16000)


@pytest.fixture
def tiny_musicnn_models(tmp_path) -> Path:
    root = tmp_path / "mnn_models"
    root.mkdir()
    _export_tiny(root / "mnn.onnx")
    entry = {"name": "mnn", "file": "mnn.onnx", "sha256": sha256_file(root / "mnn.onnx"), "kind": KIND_MUSICNN,
             "labels": list(GENRES), "msd_labels": list(MSD_LABELS), "sample_rate": 22050, "window_seconds": 3.0,
             "hop_seconds": 1.5, "weight": 1.0, "input_name": "musicnn_mel"}
    (root / "manifest.json").write_text(json.dumps({"format": 1, "models": [entry]}))
    return root


def test_predictor_reports_msd_tags(tmp_path, tiny_musicnn_models, tone):
    from gtag.predict.pipeline import Predictor

    path = write_wav(tmp_path / "a.wav", tone)
    pred = Predictor(load_models(tiny_musicnn_models, device="cpu")).predict_file(path)
    assert set(pred.models) == {"mnn"} and len(pred.window_genres) == 2
    tags = pred.tags["mnn"]
    assert sorted(t for t, _ in tags) == sorted(MSD_LABELS)
    scores = [s for _, s in tags]
    assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1


def test_max_batch_runs_a_long_track_in_chunks_with_the_same_result(tiny_musicnn_models):
    """A manifest "max_batch" splits the ONNX Runtime calls (bounded memory), nothing else."""
    entry = json.loads((tiny_musicnn_models / "manifest.json").read_text())
    x = np.abs(np.random.default_rng(1).standard_normal((7, 187, 96))).astype(np.float32)
    (whole,) = load_models(tiny_musicnn_models, device="cpu")
    entry["models"][0]["max_batch"] = 3
    (tiny_musicnn_models / "manifest.json").write_text(json.dumps(entry))
    (chunked,) = load_models(tiny_musicnn_models, device="cpu")
    p1, t1 = whole.predict_with_tags(x)
    p2, t2 = chunked.predict_with_tags(x)
    assert p2.shape == (7, 10) and t2.shape == (7, 50)
    assert np.allclose(p1, p2, atol=1e-6) and np.allclose(t1, t2, atol=1e-6)
    assert chunked.predict(x).shape == (7, 10)


def test_predict_prints_msd_tags_line_only_for_tag_models(tmp_path, tiny_musicnn_models, tiny_models, tone):
    from gtag.cli import main

    path = write_wav(tmp_path / "a.wav", tone)
    r = CliRunner().invoke(main, ["predict", "--models", str(tiny_musicnn_models), str(path)])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("MSD tags:"))
    assert len(line.split(",")) == 8
    r = CliRunner().invoke(main, ["predict", "--models", str(tiny_models), str(path)])
    assert r.exit_code == 0 and "MSD tags" not in r.output
    r = CliRunner().invoke(main, ["predict", "--json", "--models", str(tiny_musicnn_models), str(path)])
    [row] = json.loads(r.stdout)
    assert {"path", "genre", "confidence", "probabilities", "models", "would_tag"} <= set(row)
    [scores] = row["tags"].values()  # one tag model, every MSD tag scored
    assert len(scores) == 50 and all(0 <= p <= 1 for p in scores.values())
    r = CliRunner().invoke(main, ["predict", "--json", "--models", str(tiny_models), str(path)])
    assert "tags" not in json.loads(r.stdout)[0]  # a model without the MSD layer has none to show


@pytest.mark.slow
def test_shipped_musicnn_on_real_audio_sees_metal():
    """On a metal clip, the shipped model's MSD tags put metal tags on top (sanity of the whole
    16 kHz input path, not only the network)."""
    _shipped_musicnn()
    from gtag.predict.pipeline import Predictor

    clip = need(GTZAN / "audio" / "metal" / "metal.00000.ogg")
    pred = Predictor(load_models(default_models_dir(), ["musicnn"], device="cpu")).predict_file(clip)
    top = [t for t, _ in pred.tags["musicnn"][:5]]
    assert {"metal", "heavy metal", "hard rock"} & set(top)


def test_transfer_command_end_to_end(tmp_path):
    """`gtag-train transfer` on a toy dataset with random (full-size) musicnn weights: it chooses C,
    scores valid at the tag-time hop (every 3 s), exports the float model and its CPU variant with an
    `embedding` output (so gtag.learn.embed.Backbone cuts it and a new head attaches), a train-only copy
    for `gtag-train ensemble`, and a manifest entry that gtag loads (the variant on a CPU)."""
    from gtag.learn.embed import Backbone
    from gtag.models.head import EMBEDDING_OUTPUT
    from training.musicnn_onnx import CPU_VARIANT_FILE
    from training.transfer import TAG_HOP_SECONDS, TransferOptions, train_transfer

    from .test_nets import _write_dataset

    weights = save_weights(convert_variables(_fake_checkpoint()), tmp_path / "w.npz", source="test")
    (tmp_path / "MUSICNN_LICENSE.md").write_text("ISC License\n\nCopyright (c) 2019, Jordi Pons\n")
    _write_dataset(tmp_path / "data")  # 2 genres; valid clips of 4.5 s and 2.5 s each
    out, runs = tmp_path / "models", tmp_path / "runs"
    opts = TransferOptions(folds=2, logreg_c=(0.1, 1.0))
    report = train_transfer(tmp_path / "data", out, runs, weights, opts, command="test")
    # 1.5 s windows: 2 + 1 per genre; every 3 s, as gtag votes: 1 + 1 per genre.
    assert report["valid"]["window"]["n"] == 4
    assert report["head"]["C"] in (0.1, 1.0) and len(report["search"]) == 2
    (spec,) = read_manifest(out)
    assert spec.hop_seconds == TAG_HOP_SECONDS and spec.labels == ("noise", "sine")
    variant = spec.extra["cpu_variant"]
    assert variant["file"] == CPU_VARIANT_FILE and sha256_file(out / CPU_VARIANT_FILE) == variant["sha256"]
    assert variant["agreement_with_float"]["windows"] > 0
    check = spec.extra["onnx_check"]
    assert check["max_abs_prob_diff"] < 1e-4 and check["max_abs_embedding_diff"] < 1e-3
    assert check["dead_filters"]["max_abs_msd_tag_diff_vs_all_filters"] < 1e-4
    (cpu,) = load_models(out, device="cpu")
    (exact,) = load_models(out, device="cpu", cpu_variant=False)
    assert cpu.path.name == CPU_VARIANT_FILE and exact.path.name == "musicnn.onnx"
    assert {o.name for o in exact.session.get_outputs()} >= {"probabilities", "msd_tags", EMBEDDING_OUTPUT}
    # the exported backbone is what gtag learn / gtag-train musicnn-head embed with
    bb = Backbone(out)
    y = (0.1 * np.sin(np.arange(7 * audio.SAMPLE_RATE) * 0.05)).astype(np.float32)
    emb = bb.embed_samples(y)
    assert emb.shape == (2, 1706) and np.isfinite(emb).all()  # 7 s at a 3 s hop: 2 windows
    # the train-only copy gtag-train ensemble scores
    (train_only,) = read_manifest(runs / "valid_models")
    assert train_only.extra["training"] == {"fitted_on": "train"}
    assert sha256_file(runs / "valid_models" / "musicnn.onnx") == train_only.sha256
    assert "Pons" in (out / "MUSICNN_LICENSE.md").read_text()
    assert (runs / "transfer_metrics.json").is_file()
