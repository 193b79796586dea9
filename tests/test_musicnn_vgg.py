"""musicnn's VGG checkpoints (MSD_vgg, MTT_vgg) ported to PyTorch: the port reproduces TensorFlow running
each checkpoint's own graph (stored reference, no TensorFlow needed). The fixture holds TensorFlow's
outputs with closed-form synthetic weights (so the architecture, pools, layouts and flatten order are
checked without the real weights) and with the real weights (checked when converted weights exist)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import musicnn_vgg as V

REFERENCE = Path(__file__).resolve().parent / "data" / "musicnn_vgg_reference.npz"
# Converted weights (python -m training.musicnn_vgg --out DIR): DIR/<name>.npz; checked when present.
WEIGHTS_DIR = Path(os.environ.get("GTAG_MUSICNN_VGG_DIR", Path(__file__).resolve().parent.parent / "runs" / "vgg"))
OUTPUTS = ("logits", "pool5", "pool4_stats")
# Measured max abs diffs to TensorFlow 2.21: <= 3e-5 on outputs of magnitude ~10 (real weights).
ATOL = 1e-4


def _reference() -> dict[str, np.ndarray]:
    if not REFERENCE.is_file():
        pytest.skip("tests/data/musicnn_vgg_reference.npz missing (made by python -m training.musicnn_vgg)")
    with np.load(REFERENCE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _embed(model, patches: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.embed(torch.from_numpy(patches)).items()}


def test_variable_map_reads_every_checkpoint_variable_and_fits_the_model():
    shapes = V.checkpoint_shapes()
    assert {v for v, _, _ in V.VARIABLE_MAP} == set(shapes)
    state = V.convert_variables(V.synthetic_variables())
    model = V.build_vgg("MSD_vgg")
    ref = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ref == {k: v.shape for k, v in state.items()}
    # The checkpoints hold 607,032 values: these, 1,282 batch-norm statistics and Adam's two counters.
    assert sum(int(np.prod(s)) for k, s in shapes.items() if "moving" not in k) == 605_748


def test_both_checkpoints_end_in_a_two_by_one_map():
    for name in V.POOLS:
        assert V.pooled_shape(V.POOLS[name]) == (2, 1)
    assert V.POOLS["MSD_vgg"] != V.POOLS["MTT_vgg"]


@pytest.mark.parametrize("name", sorted(V.CHECKPOINTS))
def test_port_matches_tensorflow_graph_with_synthetic_weights(name, tmp_path):
    ref = _reference()
    path = V.save_weights(V.convert_variables(V.synthetic_variables()), tmp_path / "w.npz", name)
    model, meta = V.load_pretrained(path)
    assert meta["labels"] == list(V.LABELS[name])
    got = _embed(model, ref["patches"])
    for k in OUTPUTS:
        want = ref[f"{name}/synthetic/{k}"]
        assert want.std(axis=0).mean() > 100 * ATOL  # outputs depend on the patch, far beyond the tolerance
        np.testing.assert_allclose(got[k], want, atol=ATOL * max(1.0, float(np.abs(want).max())), err_msg=k)


def test_the_two_graphs_differ_where_their_pools_differ():
    """The fixture would not catch swapped pools if both graphs gave the same outputs (same weights)."""
    ref = _reference()
    assert np.abs(ref["MSD_vgg/synthetic/logits"] - ref["MTT_vgg/synthetic/logits"]).max() > 100 * ATOL


@pytest.mark.parametrize("name", sorted(V.CHECKPOINTS))
def test_converted_weights_reproduce_tensorflow(name):
    ref = _reference()
    path = WEIGHTS_DIR / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} missing (converted weights are not committed)")
    model, _ = V.load_pretrained(path)
    got = _embed(model, ref["patches"])
    for k in OUTPUTS:
        np.testing.assert_allclose(got[k], ref[f"{name}/real/{k}"], atol=ATOL, rtol=1e-4, err_msg=k)


def test_weights_file_refuses_other_formats(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, __meta__=np.array('{"format": "gtag-musicnn-msd-1"}'))
    with pytest.raises(ValueError, match="not a converted musicnn VGG"):
        V.load_pretrained(path)
