"""The numpy genre head: fitting, calibration, abstain signals and the ONNX graph it becomes."""

from __future__ import annotations

import numpy as np
import pytest

from gtag.models import head as heads
from gtag.models.vote import AbstainRule, abstain_reason

LABELS = ("a", "b", "c")


def clusters(n_tracks: int = 30, windows: int = 4, dims: int = 12, seed: int = 0):
    """Windows of tracks from three well separated Gaussian genres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dims)) * 4
    x, y, g = [], [], []
    for t in range(n_tracks):
        c = t % 3
        x.append(centres[c] + rng.standard_normal((windows, dims)))
        y += [c] * windows
        g += [t] * windows
    return np.concatenate(x), np.array(y), np.array(g), centres


def test_head_learns_separable_genres_and_knows_what_is_far():
    x, y, g, centres = clusters()
    h = heads.fit_head(x, y, g, LABELS, C=1.0)
    assert (h.predict_proba(x).argmax(1) == y).mean() > 0.95
    near = h.distances(x).mean()
    far = h.distances(centres.mean(0) + 40 * np.ones((3, x.shape[1]))).mean()
    assert far > 5 * near


def test_balanced_weights_count_each_track_and_genre_once():
    y = np.array([0, 0, 0, 0, 1])
    g = np.array([0, 0, 0, 1, 2])  # genre 0: a 3-window track and a 1-window track; genre 1: one track
    w = heads.balanced_weights(y, g, 2)
    assert w[:3].sum() == pytest.approx(w[3])  # a track weighs the same whatever its windows
    assert w[:4].sum() == pytest.approx(w[4])  # a genre weighs the same whatever its tracks


@pytest.mark.parametrize("exponent", [0.0, 0.25, 1.0])
def test_source_boost_weighs_tracks_within_their_genre_and_moves_priors_by_the_exponent(exponent):
    # genre 0: two GTZAN clips and one library track (boost 3); genre 1: two GTZAN clips
    y = np.array([0, 0, 0, 0, 1, 1])
    g = np.array([0, 0, 1, 2, 3, 4])
    boost = np.array([1.0, 1.0, 1.0, 3.0, 1.0, 1.0])
    w = heads.balanced_weights(y, g, 2) * heads.source_boost(y, g, boost, 2, exponent)
    assert w[3] == pytest.approx(3 * w[2]) and w[:2].sum() == pytest.approx(w[2])  # within genre: 3 clips' worth
    plain = heads.balanced_weights(y, g, 2) * boost  # genre 0's total grows 5/3 with the plain boost
    ratio = (plain[:4].sum() / plain[4:].sum()) ** exponent
    assert w[:4].sum() / w[4:].sum() == pytest.approx(ratio)  # 0: equal totals; 1: as the plain boost


def test_temperature_is_folded_into_the_weights():
    x, y, g, _ = clusters()
    h = heads.fit_head(x, y, g, LABELS, C=1.0)
    logits = h.logits(x[:5])
    heads.calibrate(h, 2.5)
    assert np.allclose(h.predict_proba(x[:5]), heads._softmax(logits / 2.5))


def test_temperature_fit_softens_an_overconfident_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    # logits that point to the right class only 60 % of the time, but with huge margins
    right = rng.random(200) < 0.6
    cls = np.where(right, y, (y + 1) % 3)
    logits = [np.eye(3)[[c]] * 20.0 for c in cls]
    assert heads.fit_temperature(logits, y) > 5


def test_group_folds_never_split_a_group():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 15, 120)
    y = groups % 3
    folds = heads.group_folds(y, groups, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))
    for i, a in enumerate(folds):
        for b in folds[i + 1:]:
            assert not set(groups[a]) & set(groups[b])


def test_threshold_reaches_the_precision_asked():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 1, 0, 1, 0], bool)
    t = heads.choose_threshold(conf, correct, 0.99)
    assert t == pytest.approx(0.7)
    assert heads.coverage_precision(conf, correct, t) == (pytest.approx(0.5), 1.0)


def test_threshold_for_each_set_holds_in_every_set_and_ignores_a_set_with_nothing_at_it():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.85])
    correct = np.array([1, 1, 1, 0, 1, 1, 1], bool)
    sets = np.array(["a"] * 5 + ["b"] * 2)
    # "b" (all right, but nothing below 0.85) does not hold "a" back, nor does it let "a" go lower
    # than "a" alone allows: pooled, its two right tags would buy 0.5 (6 of 7 right)
    assert heads.choose_threshold_each(conf, correct, sets, 0.85) == pytest.approx(0.7)
    assert heads.choose_threshold(conf, correct, 0.85) == pytest.approx(0.5)
    assert heads.choose_threshold_each(conf, correct, np.array(["a"] * 7), 0.85) == pytest.approx(0.5)
    assert heads.choose_threshold_each(conf, np.zeros(7, bool), sets, 0.9) == 1.0


def _tiny_backbone(dims: int):
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["x"], [heads.EMBEDDING_OUTPUT]),
             helper.make_node("Sigmoid", ["x"], ["msd_tags"])]
    graph = helper.make_graph(nodes, "bb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims])],
                              [helper.make_tensor_value_info(heads.EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", dims]),
                               helper.make_tensor_value_info("msd_tags", TensorProto.FLOAT, ["batch", dims])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("reject", [False, True])
def test_onnx_head_matches_numpy(reject):
    pytest.importorskip("onnx")
    import onnxruntime as ort

    x, y, g, _ = clusters()
    labels = LABELS + (("other",) if reject else ())
    if reject:  # a fourth, "none of these" class far from the others
        x = np.concatenate([x, x[:20] + 30])
        y = np.concatenate([y, np.full(20, 3)])
        g = np.concatenate([g, g[:20] + 1000])
    h = heads.calibrate(heads.fit_head(x, y, g, labels, C=1.0), 1.7)
    model = heads.attach(heads.backbone(_tiny_backbone(x.shape[1])), h, n_known=3)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names[0] == "probabilities" and "msd_tags" in names and heads.DISTANCE_OUTPUT in names
    assert (heads.UNKNOWN_OUTPUT in names) == reject
    out = dict(zip(names, sess.run(None, {"x": x[:16].astype(np.float32)})))
    logits = h.logits(x[:16])
    assert np.allclose(out["probabilities"], heads._softmax(logits[:, :3]), atol=1e-5)
    assert np.allclose(out[heads.DISTANCE_OUTPUT], h.distances(x[:16]), rtol=1e-4, atol=1e-4)
    if reject:
        assert np.allclose(out[heads.UNKNOWN_OUTPUT], heads._softmax(logits)[:, 3], atol=1e-5)


def test_refitting_a_head_keeps_the_backbone_and_its_cache_key():
    """The embedding cache is keyed by the backbone graph's hash: attaching a new head (as every
    `gtag-train musicnn-head` does) must not change it, or every cached embedding is lost."""
    pytest.importorskip("onnx")
    x, y, g, _ = clusters()
    base = heads.backbone(_tiny_backbone(x.shape[1]))
    h1 = heads.fit_head(x, y, g, LABELS, C=1.0)
    h2 = heads.fit_head(x, y, g, LABELS, C=0.1)
    once = heads.backbone(heads.attach(base, h1))
    twice = heads.backbone(heads.attach(once, h2))
    assert base.SerializeToString() == once.SerializeToString() == twice.SerializeToString()


@pytest.mark.parametrize("confidence, signals, expected", [
    (0.9, {"unknown": 0.05, "ood_distance": 1.0}, None),
    (0.9, {"unknown": 0.6, "ood_distance": 1.0}, "none of its genres"),
    (0.9, {"unknown": 0.05, "ood_distance": 3.0}, "unlike the music"),
    (0.4, {"unknown": 0.05, "ood_distance": 1.0}, "9 times in 10"),
    (0.4, {}, "9 times in 10"),  # a model without signals still abstains on low confidence
])
def test_abstain_reason(confidence, signals, expected):
    rule = AbstainRule("m", min_probability=0.5, max_unknown=0.3, max_distance=2.0)
    reason = abstain_reason(confidence, signals, rule)
    assert (reason is None) if expected is None else (expected in reason)


SECOND = AbstainRule("m", min_probability=0.6, max_unknown=0.3, max_distance=2.0,
                     second_model="cnn", second_min_probability=0.4)


@pytest.mark.parametrize("confidence, second_genre, expected", [
    (0.7, None, None),  # sure enough alone: the second model is not needed
    (0.7, "jazz", None),  # nor can it veto
    (0.5, "rock", None),  # between the thresholds, it names the voted genre: written
    (0.5, "jazz", "cnn hears jazz"),  # it names another: not sure enough
    (0.5, None, "9 times in 10"),  # not asked (an album, a cached prediction): the plain rule
    (0.3, "rock", "even with cnn agreeing"),  # below the lower threshold even when it agrees
])
def test_a_second_opinion_lowers_the_threshold_only_when_it_agrees(confidence, second_genre, expected):
    reason = abstain_reason(confidence, {"unknown": 0.05, "ood_distance": 1.0}, SECOND, second_genre, "rock")
    assert (reason is None) if expected is None else (expected in reason)


@pytest.mark.parametrize("confidence, signals, asked", [
    (0.5, {"unknown": 0.05, "ood_distance": 1.0}, True),
    (0.7, {"unknown": 0.05, "ood_distance": 1.0}, False),  # written anyway
    (0.3, {"unknown": 0.05, "ood_distance": 1.0}, False),  # abstains anyway
    (0.5, {"unknown": 0.6, "ood_distance": 1.0}, False),  # none of its genres: no opinion helps
    (0.5, {"unknown": 0.05, "ood_distance": 3.0}, False),
])
def test_the_second_model_is_asked_only_where_its_answer_matters(confidence, signals, asked):
    assert SECOND.needs_second_opinion(confidence, signals) is asked
    assert not AbstainRule("m", 0.6).needs_second_opinion(confidence, signals)


@pytest.mark.parametrize("second, expected", [
    ({"model": "cnn", "min_probability": 0.4}, ("cnn", 0.4)),
    ({"model": "cnn"}, (None, None)),  # no threshold: no second opinion
    ({"model": "", "min_probability": 0.4}, (None, None)),
    ({"min_probability": 0.4}, (None, None)),
    ("cnn", (None, None)),
])
def test_second_opinion_from_the_manifest(second, expected):
    rule = AbstainRule.from_manifest("m", {"min_probability": 0.6, "second_opinion": second})
    assert (rule.second_model, rule.second_min_probability) == expected


def test_abstain_rule_ignores_bad_manifest_values():
    rule = AbstainRule.from_manifest("m", {"min_probability": "x", "max_unknown": float("nan"), "max_distance": 2})
    assert rule == AbstainRule("m", 0.0, None, 2.0)


def _old_musicnn_export(path, d_pooled: int = 6, d_pen: int = 3, n: int = 4):
    """A musicnn-shaped export of an earlier release: ``embedding`` = the pooled features alone
    (``/Flatten_output_0``), a penultimate layer feeding ``msd_tags``, a head reading ``embedding``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w_pool", (5, d_pooled)), ("w_pen", (d_pooled, d_pen)), ("w_tags", (d_pen, 2)),
              ("head.mean", (d_pooled,)), ("head.w", (d_pooled, n)))]
    nodes = [helper.make_node("MatMul", ["x", "w_pool"], ["/Flatten_output_0"]),
             helper.make_node("MatMul", ["/Flatten_output_0", "w_pen"], ["/bn_dense/BatchNormalization_output_0"]),
             helper.make_node("MatMul", ["/bn_dense/BatchNormalization_output_0", "w_tags"], ["t"]),
             helper.make_node("Sigmoid", ["t"], ["msd_tags"]),
             helper.make_node("Identity", ["/Flatten_output_0"], ["embedding"]),
             helper.make_node("Sub", ["embedding", "head.mean"], ["head.centred"]),
             helper.make_node("MatMul", ["head.centred", "head.w"], ["head.logits"]),
             helper.make_node("Softmax", ["head.logits"], ["probabilities"], axis=-1)]
    f = TensorProto.FLOAT
    g = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", f, ["batch", 5])],
                          [helper.make_tensor_value_info("probabilities", f, ["batch", n]),
                           helper.make_tensor_value_info("msd_tags", f, ["batch", 2]),
                           helper.make_tensor_value_info("embedding", f, ["batch", d_pooled])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime reads, whatever the installed onnx writes by default
    onnx.save(model, str(path))


def test_an_older_musicnn_export_is_widened_in_place_and_predicts_as_before(tmp_path):
    """`gtag-train musicnn-head` upgrades an export whose embedding is the pooled features alone: the
    embedding becomes pooled + penultimate, the old head keeps its predictions, and a second call
    changes nothing."""
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from training.musicnn_head import widen_embedding

    path = tmp_path / "musicnn.onnx"
    _old_musicnn_export(path)
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)

    def run():
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(zip(["probabilities", "msd_tags", "embedding"], s.run(["probabilities", "msd_tags", "embedding"], {"x": x})))

    before = run()
    assert widen_embedding(path) is True
    after = run()
    np.testing.assert_array_equal(after["probabilities"], before["probabilities"])
    np.testing.assert_array_equal(after["msd_tags"], before["msd_tags"])
    assert after["embedding"].shape == (3, 6 + 3)
    np.testing.assert_array_equal(after["embedding"][:, :6], before["embedding"])
    assert widen_embedding(path) is False  # already wide: untouched
