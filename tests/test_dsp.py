"""gtag.audio.dsp computes what librosa computes, and the tag-time path of the spectrogram models imports
neither librosa nor scipy nor numba."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gtag.audio import decode as audio
from gtag.audio import dsp, features, musicnn_input
from tests.conftest import GENRES, GTZAN, need

librosa = pytest.importorskip("librosa")

ROOT = Path(__file__).resolve().parents[1]
# What the parity of the shipped models is held to: a track's voted probabilities may move by at
# most this much when librosa's spectrogram is replaced by gtag.audio.dsp's (docs/design.md states it). On the
# 123 valid tracks the largest change is 1.3e-5 (musicnn's CPU variant), with the same label on all.
PROBABILITY_TOLERANCE = 1e-4


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 22050
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("sr, n_fft, n_mels", [(16000, 512, 96), (22050, 2048, 128), (44100, 1024, 40)])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels):
    assert np.array_equal(dsp.mel_filterbank(sr, n_fft, n_mels), librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels))


@pytest.mark.parametrize("n", [100, 511, 2048, 66150, 66150 + 17])
@pytest.mark.parametrize("n_fft, hop", [(512, 256), (2048, 512)])
def test_stft_is_librosas(n, n_fft, hop):
    """Short signals too: a frame may reach past both ends (zero padding on each side)."""
    y = _signal(n)
    ref = librosa.stft(y, n_fft=n_fft, hop_length=hop)
    got = dsp.stft(y, n_fft, hop)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("n", [300, 48000 * 3 + 5])
def test_mel_power_is_librosas_melspectrogram(n):
    y = _signal(n, seed=1)
    ref = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96).T
    got = dsp.mel_power(y, 16000, 512, 256, 96)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref) / (ref + 1e-6 * ref.max())) < 1e-4


def test_blocks_of_frames_change_nothing(monkeypatch):
    """Frames are computed in blocks (bounded memory): block edges must not show (FFT and BLAS may
    round the last bit differently for another batch size, nothing more)."""
    y = _signal(30000, seed=2)
    whole_stft, whole_mel = dsp.stft(y, 512, 256), dsp.mel_power(y, 16000, 512, 256, 96)
    monkeypatch.setattr(dsp, "BLOCK_FRAMES", 7)
    assert np.allclose(dsp.stft(y, 512, 256), whole_stft, rtol=0, atol=1e-6 * np.abs(whole_stft).max())
    assert np.allclose(dsp.mel_power(y, 16000, 512, 256, 96), whole_mel, rtol=1e-6, atol=1e-9 * whole_mel.max())


def _librosa_mel_power(y, sr, n_fft, hop, n_mels):
    return librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels).T


def _with_librosa(fn, y: np.ndarray, **kw) -> np.ndarray:
    """``fn(y)`` computed with librosa's spectrogram in place of gtag.audio.dsp's: what gtag computed
    before gtag.audio.dsp, and what the shipped models were validated on."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dsp, "mel_power", _librosa_mel_power)
        mp.setattr(dsp, "stft", lambda y, n_fft, hop: librosa.stft(y, n_fft=n_fft, hop_length=hop))
        return fn(y, **kw)


def test_spectrogram_inputs_match_librosas(tone):
    a, b = _with_librosa(musicnn_input.musicnn_patches, tone), musicnn_input.musicnn_patches(tone)
    assert a.shape == b.shape
    # float16 storage may round a value the other way: one float16 step of a log10 is < 5e-4.
    assert np.max(np.abs(a - b)) < 5e-4 and np.mean(np.abs(a - b)) < 1e-6
    a, b = _with_librosa(features.log_mel_spectrogram, tone), features.log_mel_spectrogram(tone)
    assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-5


@pytest.mark.slow
def test_shipped_models_predict_as_with_librosa():
    """The default models (musicnn, its CPU variant, and the CNN) give each GTZAN valid track the same
    genre with probabilities within PROBABILITY_TOLERANCE (two tracks per genre here; all 123 in the
    check quoted in docs/design.md)."""
    from gtag.models import vote
    from gtag.models.runtime import load_models

    rows = [r.split("\t") for r in need(GTZAN / "MANIFEST.tsv").read_text().splitlines()[1:]]
    valid = {g: [r for r in rows if r[2] == "valid" and r[1] == g][:2] for g in GENRES}
    models = load_models(names=["musicnn", "cnn"], device="cpu", threads=1)
    models += load_models(names=["musicnn"], device="cpu", threads=1, cpu_variant=False)
    builds = {
        "musicnn_mel": (lambda y: _with_librosa(musicnn_input.musicnn_patches, y, hop=2 * audio.HOP_SAMPLES),
                        lambda y: musicnn_input.musicnn_patches(y, hop=2 * audio.HOP_SAMPLES)),
        "log_mel": (lambda y: _with_librosa(features.log_mel_spectrogram, y)[:, None],
                    lambda y: features.log_mel_spectrogram(y)[:, None]),
    }
    checked = 0
    for r in (r for group in valid.values() for r in group):
        y = audio.load_audio(GTZAN / r[4]).samples
        for m in models:
            old, new = (vote.track_probabilities(m.predict(build(y))) for build in builds[m.spec.kind])
            assert np.argmax(old) == np.argmax(new), (r[0], m.spec.name)
            assert np.max(np.abs(old - new)) <= PROBABILITY_TOLERANCE, (r[0], m.spec.name)
            checked += 1
    assert checked >= 3 * 10


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\nMODULES', *sys.modules)"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.splitlines()[-1].split()[1:])


def test_spectrogram_models_import_no_librosa_scipy_or_numba():
    """What a default tag run computes (musicnn's and the CNN's inputs, and ONNX) loads none of the
    libraries that cost seconds to import or compile."""
    loaded = _modules_after(
        "import numpy as np\n"
        "from gtag.audio import features, musicnn_input\n"
        "y = np.random.default_rng(0).standard_normal(100000).astype(np.float32)\n"
        "musicnn_input.musicnn_patches(y); features.log_mel_spectrogram(y)\n"
        "from gtag.models.runtime import load_models\n"
        "[m.predict(np.zeros((1, 187, 96), np.float32)) for m in load_models(names=['musicnn'], device='cpu')]\n"
    )
    assert "gtag.audio.features" in loaded and "onnxruntime" in loaded
    assert not {"librosa", "scipy", "numba"} & {m.split(".")[0] for m in loaded}


@pytest.mark.parametrize("args", [["--help"], ["models"]])
def test_help_and_models_import_neither_numpy_nor_onnxruntime(args):
    loaded = _modules_after(
        f"import sys\nfrom gtag.cli import main\nsys.argv = ['gtag'] + {args!r}\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    assert "gtag.cli" in loaded
    assert not {"numpy", "onnxruntime", "librosa"} & {m.split(".")[0] for m in loaded}


def test_workers_import_no_librosa_scipy_or_numba(tmp_path, tone):
    """A `--jobs N` worker (spawned: it imports everything itself) predicting with the default models
    loads none of them either, so each worker starts in a fraction of a second."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from gtag.models.runtime import load_models
    from gtag.predict.pipeline import Predictor
    from tests.conftest import write_wav
    from tests.worker_probe import modules_after_predicting

    source = Predictor(load_models(device="cpu", threads=1)).source
    path = write_wav(tmp_path / "tone.wav", tone)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        loaded = pool.submit(modules_after_predicting, str(path), source).result()
    assert "gtag.predict.pipeline" in loaded and "onnxruntime" in loaded
    assert not {"librosa", "scipy", "numba"} & {m.split(".")[0] for m in loaded}


def test_the_fork_server_never_loads_onnx_runtime():
    """Workers are forked from a server that imported WORKER_PRELOAD; ONNX Runtime is not fork-safe,
    so none of it may import ONNX Runtime (each worker loads it after the fork)."""
    from gtag.run.workers import WORKER_PRELOAD

    loaded = _modules_after("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in WORKER_PRELOAD))
    assert set(WORKER_PRELOAD) <= loaded
    assert "onnxruntime" not in {m.split(".")[0] for m in loaded}
