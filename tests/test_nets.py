"""The neural models: they learn, they export to ONNX faithfully, and training sees gtag's inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from gtag.audio import decode as audio  # noqa: E402
from gtag.audio import features
from training import cnn, loop, nets, wavenet, windows  # noqa: E402

SR = audio.SAMPLE_RATE


def _clip(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A sine at a random pitch or white noise: two trivially separable 'genres'."""
    t = np.arange(int(seconds * SR)) / SR
    if kind == "sine":
        return (0.5 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)).astype(np.float32)
    return (0.3 * rng.standard_normal(t.size)).astype(np.float32)


def _tiny_cnn() -> nets.GenreCNN:
    return nets.GenreCNN(n_labels=2, depth=2, width=4, dropout=0.0)


def _tiny_wavenet() -> nets.WaveNetClassifier:
    return nets.WaveNetClassifier(n_labels=2, front_channels=(8, 8), front_strides=(8, 8), pool=4, channels=8,
                                  skip_channels=8, layers=3, stacks=1, dropout=0.0)


def _batch(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    clips = [_clip("sine" if c else "noise", audio.WINDOW_SECONDS, rng) for c in y]
    if kind == "log_mel":
        x = np.stack([features.log_mel_spectrogram(c)[0][None] for c in clips])
    else:
        x = np.stack(clips)[:, None]
    return x.astype(np.float32), y


def _loss_drop(net, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> tuple[float, float]:
    torch.manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    losses = []
    net.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.parametrize("kind", ["log_mel", "waveform"])
def test_a_few_steps_decrease_the_loss(kind):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = _tiny_cnn() if kind == "log_mel" else _tiny_wavenet()
    x, y = _batch(kind, 8)
    first, last = _loss_drop(net, x, y, steps=15, lr=1e-2)
    assert last < 0.75 * first, (first, last)


def test_output_shapes():
    assert _tiny_cnn()(torch.zeros(3, *nets.GenreCNN.input_shape)).shape == (3, 2)
    assert _tiny_wavenet()(torch.zeros(3, *nets.WaveNetClassifier.input_shape)).shape == (3, 2)


@pytest.mark.parametrize("kind", ["log_mel", "waveform"])
def test_onnx_export_matches_torch_with_dynamic_batch(kind, tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    net = (_tiny_cnn() if kind == "log_mel" else _tiny_wavenet()).eval()
    x, _ = _batch(kind, 4)
    path = tmp_path / f"{kind}.onnx"
    sha, check = loop.export_onnx(net, kind, path, {"labels": ["noise", "sine"]}, x, tolerance=1e-4)
    assert len(sha) == 64 and check["max_abs_prob_diff"] <= 1e-4

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [kind]
    assert [o.name for o in sess.get_outputs()] == ["probabilities"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # symbolic batch axis
    assert json.loads(sess.get_modelmeta().custom_metadata_map["labels"]) == ["noise", "sine"]
    for n in (1, 3):
        p = sess.run(["probabilities"], {kind: x[:n]})[0]
        assert p.shape == (n, 2)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        with torch.no_grad():
            ref = torch.softmax(net(torch.from_numpy(x[:n])), 1).numpy()
        np.testing.assert_allclose(p, ref, atol=1e-4)


@pytest.mark.parametrize("seconds", [7.3, 2.2])
def test_training_patches_are_gtags_patches(seconds):
    """A patch sliced from the cached track spectrogram equals what gtag computes for that window."""
    y = _clip("noise", seconds, np.random.default_rng(1)) + _clip("sine", seconds, np.random.default_rng(2))
    mel = windows.track_mel_power(y)
    hop = features.HOP_LENGTH * 4
    an = features.analyze(y, SR, hop, want_features=False)
    assert len(an.starts) >= 1
    for i, start in enumerate(an.starts):
        f = int(start) // features.HOP_LENGTH
        np.testing.assert_allclose(features.log_mel_patches(mel[:, f : f + features.WINDOW_FRAMES]),
                                   an.log_mel[i], atol=1e-5)


@pytest.mark.parametrize("tilt, cutoff", [(3.0, None), (-3.0, None), (0.0, 6000.0), (-2.0, 9000.0)])
def test_eq_on_the_stored_mel_is_the_eq_of_the_audio(tilt, cutoff):
    """The CNN's EQ augmentation scales a stored mel spectrogram per band: on broadband audio that is
    the mel spectrogram of the EQ'd audio (as the distilled net's wave-level EQ makes it), within 1 dB
    wherever the band keeps any energy."""
    from training import distil

    y = _clip("noise", 6.0, np.random.default_rng(3))
    got = windows.track_mel_power(y) * windows.mel_band_gain(tilt, cutoff)[:, None]
    want = windows.track_mel_power(distil.eq_and_lowpass(y, tilt, cutoff))
    keep = want.mean(axis=1) > 1e-3 * want.mean()  # bands the low-pass leaves audible
    if cutoff is not None:
        assert not keep.all() and keep[0]
    db = 10 * np.log10(got.mean(axis=1)[keep] / want.mean(axis=1)[keep])
    assert np.abs(db).max() < 1.0


def test_mel_windows_apply_eq_only_when_asked():
    rng = np.random.default_rng(0)
    y = _clip("noise", 5.0, rng)
    plain = loop.CnnOptions(band_limit_p=0.0, mask_bands=0, mask_frames=0)
    bright = loop.CnnOptions(band_limit_p=0.0, mask_bands=0, mask_frames=0, tilt_p=1.0, tilt_db=6.0)
    a = windows.MelWindows([y], plain, np.random.default_rng(1)).draw(0, np.random.default_rng(2))
    b = windows.MelWindows([y], plain, np.random.default_rng(1)).draw(0, np.random.default_rng(2))
    c = windows.MelWindows([y], bright, np.random.default_rng(1)).draw(0, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def _write_dataset(root) -> None:
    """Two 'genres' (noise, sine), full clips and short ones, with train/valid lists."""
    sf = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    splits: dict[str, list[str]] = {"train": [], "valid": []}
    for genre in ("noise", "sine"):
        (root / "audio" / genre).mkdir(parents=True)
        for i, seconds in enumerate((5.0, 4.0, 2.0, 4.5, 2.5)):
            tid = f"{genre}.{i:05d}"
            sf.write(root / "audio" / genre / f"{tid}.wav", _clip(genre, seconds, rng), SR)
            splits["valid" if i >= 3 else "train"].append(tid)
    (root / "splits").mkdir()
    for name, ids in splits.items():
        (root / "splits" / f"{name}.txt").write_text("\n".join(ids) + "\n")


def test_train_commands_end_to_end(tmp_path):
    """Both commands run, write their reports and a manifest entry gtag can load."""
    from gtag.models.runtime import load_models

    _write_dataset(tmp_path / "data")
    out, runs = tmp_path / "models", tmp_path / "runs"
    fit = dict(epochs=2, epoch_windows=16, batch_size=8, patience=2)
    cnn_report = cnn.train_cnn(tmp_path / "data", out, runs, loop.CnnOptions(
        **fit, search=(loop.CnnConfig(1, 4, 0.0, 3e-3), loop.CnnConfig(2, 4, 0.0, 3e-3)), search_epochs=1,
        short_views=2), command="test")
    wave = wavenet.train_wavenet(tmp_path / "data", out, runs, loop.WaveNetOptions(
        **fit, front_channels=(8, 8), front_strides=(8, 8), pool=4, channels=8, skip_channels=8, layers=2,
        stacks=1), command="test")
    for name, report in (("cnn", cnn_report), ("wavenet", wave)):
        assert report["onnx_check"]["max_abs_prob_diff"] <= 1e-4
        for suffix in ("metrics.json", "curves.png", "valid_track_confusion.png", "best.pt"):
            assert (runs / f"{name}_{suffix}").is_file()
    assert len(cnn_report["search"]) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {m["name"]: m for m in manifest["models"]}
    assert entries["cnn"]["kind"] == "log_mel" and entries["wavenet"]["input_name"] == "waveform"
    assert entries["cnn"]["labels"] == ["noise", "sine"] and entries["cnn"]["training"]["data"] == "data"
    models = load_models(out)
    assert {m.spec.name for m in models} == {"cnn", "wavenet"}
