"""Distilling the WaveNet: the loss mixes teacher KL and label CE as documented, the teacher's
targets follow the window, and a tiny run reports, exports and ships only when it beats the shipped net."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from gtag.audio import decode as audio
from training import distil

SR = audio.SAMPLE_RATE
MODELS = Path(__file__).resolve().parent.parent / "exported_models"


def test_loss_is_kl_to_teacher_plus_ce_on_labelled_windows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    y = torch.tensor([0, -1, 1])  # the second window is unlabelled
    loss, kl, ce = distil.distil_loss(logits, teacher, y, temperature=2.0, alpha=0.7, label_smoothing=0.0)
    soft = torch.softmax(torch.log(teacher) / 2.0, 1)
    ref_kl = (soft * (soft.log() - torch.log_softmax(logits / 2.0, 1))).sum(1).mean() * 4.0
    ref_ce = torch.nn.functional.cross_entropy(logits[[0, 2]], y[[0, 2]])
    assert kl.item() == pytest.approx(ref_kl.item(), rel=1e-5)
    assert ce.item() == pytest.approx(ref_ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.7 * ref_kl.item() + 0.3 * ref_ce.item(), rel=1e-5)
    # a student that matches the teacher exactly has no KL to pay
    _, kl0, _ = distil.distil_loss(torch.log(teacher) + 1.0, teacher, y, 2.0, 0.7, 0.0)
    assert kl0.item() == pytest.approx(0.0, abs=1e-6)
    # no labelled window at all: CE term is zero, gradients still flow through KL
    loss_u, _, ce_u = distil.distil_loss(logits.requires_grad_(), teacher, torch.tensor([-1, -1, -1]), 2.0, 0.7, 0.0)
    loss_u.backward()
    assert ce_u.item() == 0.0 and logits.grad is not None


def test_window_target_follows_the_window():
    n = audio.WINDOW_SAMPLES + 3 * audio.HOP_SAMPLES  # 4 teacher windows
    probs = np.eye(4, dtype=np.float32)[:, :4]
    starts = audio.window_starts(n)
    for i, s in enumerate(starts):  # on a teacher window: exactly its label
        np.testing.assert_allclose(distil.window_target(probs, int(s), n), probs[i], atol=1e-6)
    mid = distil.window_target(probs, int(starts[1] + audio.HOP_SAMPLES // 2), n)
    assert mid[1] == pytest.approx(0.5, abs=1e-3) and mid[2] == pytest.approx(0.5, abs=1e-3) and mid.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("tilt,cutoff", [(3.0, None), (0.0, 6000.0)])
def test_eq_and_lowpass(tilt, cutoff):
    t = np.arange(audio.WINDOW_SAMPLES) / SR
    low, high = np.sin(2 * np.pi * 250 * t), np.sin(2 * np.pi * 8000 * t)
    out_low = distil.eq_and_lowpass((low).astype(np.float32), tilt, cutoff)
    out_high = distil.eq_and_lowpass((high).astype(np.float32), tilt, cutoff)
    rms = lambda v: float(np.sqrt(np.mean(v**2)))
    if cutoff:  # codec low-pass: 8 kHz gone, 250 Hz untouched
        assert rms(out_high) < 1e-3 * rms(high) and rms(out_low) == pytest.approx(rms(low), rel=1e-3)
    else:  # +3 dB/oct tilt: 8 kHz (3 octaves up) +9 dB, 250 Hz down 6 dB
        assert 20 * np.log10(rms(out_high) / rms(high)) == pytest.approx(9.0, abs=0.2)
        assert 20 * np.log10(rms(out_low) / rms(low)) == pytest.approx(-6.0, abs=0.2)


def _clip(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "classical":
        return (0.5 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)).astype(np.float32)
    return (0.3 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.slow
def test_distil_end_to_end(tmp_path):
    """A tiny student learns from the shipped musicnn (labelled and unlabelled audio), writes its
    report with before/after figures, and replaces the shipped wavenet only when it beats it."""
    sf = pytest.importorskip("soundfile")
    from gtag.models.runtime import load_models

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    splits: dict[str, list[str]] = {"train": [], "valid": []}
    for genre in ("classical", "rock"):
        (root / "audio" / genre).mkdir(parents=True)
        for i, seconds in enumerate((4.5, 2.0, 4.0)):
            tid = f"{genre}.{i:05d}"
            sf.write(root / "audio" / genre / f"{tid}.wav", _clip(genre, seconds, rng), SR)
            splits["valid" if i == 2 else "train"].append(tid)
    (root / "splits").mkdir()
    for name, ids in splits.items():
        (root / "splits" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    extra = tmp_path / "unlabelled"
    extra.mkdir()
    sf.write(extra / "x.wav", _clip("rock", 3.5, rng), SR)
    models = tmp_path / "models"
    models.mkdir()
    manifest = json.loads((MODELS / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] == "musicnn"]
    for m in manifest["models"]:
        m.pop("cpu_variant", None)  # the full-precision teacher only
        shutil.copy(MODELS / m["file"], models / m["file"])
    (models / "manifest.json").write_text(json.dumps(manifest))
    opts = distil.DistilOptions(epochs=2, epoch_windows=8, batch_size=4, patience=2, front_channels=(8, 8),
                                front_strides=(8, 8), pool=4, channels=8, skip_channels=8, layers=2, stacks=1,
                                tilt_p=1.0, lowpass_p=1.0, master_p=1.0, band_limit_p=0.5)
    runs = tmp_path / "runs"
    out = distil.train_distil(root, models, runs, opts, unlabelled=(str(extra),), command="test")
    assert (runs / "teacher_train.npz").is_file() and (runs / "report.json").is_file()
    assert out["distillation"]["student_audio"] == {"gtzan_train_tracks": 4, "unlabelled_files": 1,
                                                    "teacher_windows": 2 * (2 + 1) + 1}  # 4.5 s: 2 windows; 2 s and 3.5 s: 1
    assert len(out["history"]) == 2 and "valid_track_accuracy" in out["summary"]["after (distilled)"]
    # nothing shipped to beat: the student is exported with a complete manifest entry, weight 0
    assert out["exported"] is True
    entry = {m["name"]: m for m in json.loads((models / "manifest.json").read_text())["models"]}["wavenet"]
    assert entry["weight"] == 0.0 and entry["labels"] == ["classical", "rock"]
    assert entry["training"]["distillation"]["teacher"]["name"] == "musicnn"
    assert entry["export"]["max_abs_prob_diff"] <= 1e-4
    assert {m.spec.name for m in load_models(models, ["wavenet"])} == {"wavenet"}
    # the cache is reused: same teacher, same files
    before = (runs / "teacher_train.npz").stat().st_mtime_ns
    again = distil.train_distil(root, models, runs, opts, unlabelled=(str(extra),), command="test", ship=True)
    assert (runs / "teacher_train.npz").stat().st_mtime_ns == before
    # a shipped wavenet now exists and the test has no library: no claim, nothing replaced
    assert again["exported"] is False and again["summary"]["before (from scratch, shipped wavenet)"]
