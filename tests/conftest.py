"""Shared fixtures: paths to the shared audio, synthetic signals and tiny ONNX models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gtag.audio.decode import SAMPLE_RATE
from gtag.audio.features import FEATURE_NAMES, N_MELS, WINDOW_FRAMES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
GTZAN = SHARED / "gtzan"
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def shipped_models_copy(tmp_path: Path, edit) -> Path:
    """A copy of the shipped models under ``tmp_path/models`` whose manifest entries went through
    ``edit(entry)`` (skips without shipped models)."""
    import shutil

    from gtag.models.runtime import default_models_dir

    src = default_models_dir()
    if not (src / "manifest.json").is_file():
        pytest.skip("no shipped models")
    dst = tmp_path / "models"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    manifest = json.loads((dst / "manifest.json").read_text())
    for entry in manifest["models"]:
        edit(entry)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (the shared data sits beside the checkout)")
    return path


@pytest.fixture
def tone() -> np.ndarray:
    """Five seconds of a 440 Hz tone with a little noise, float32 at 22,050 Hz."""
    rng = np.random.default_rng(0)
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_wav(path: Path, y: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    import soundfile as sf

    sf.write(str(path), y, sr, subtype="PCM_16")
    return path


def _linear_model(input_name: str, in_shape: list, flat: int, labels, seed: int, kind: str):
    """An ONNX graph input -> flatten -> matmul -> softmax named 'probabilities'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((flat, len(labels))) * 0.05).astype(np.float32), "W")
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, f"tiny_{kind}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def tiny_models(tmp_path: Path) -> Path:
    """A models folder with two tiny untrained models (features and log-mel kinds, labels in
    different orders) and a valid manifest: exercises loading, hashing, batching and voting."""
    pytest.importorskip("onnx")
    from gtag.models.runtime import sha256_file

    root = tmp_path / "models"
    root.mkdir()
    specs = [
        ("feat", "features", "features", ["batch", 57], 57, list(GENRES)),
        ("mel", "log_mel", "log_mel", ["batch", 1, N_MELS, WINDOW_FRAMES], N_MELS * WINDOW_FRAMES,
         list(reversed(GENRES))),
    ]
    entries = []
    for i, (name, kind, input_name, shape, flat, labels) in enumerate(specs):
        model = _linear_model(input_name, shape, flat, labels, i, kind)
        (root / f"{name}.onnx").write_bytes(model.SerializeToString())
        entries.append({
            "name": name, "file": f"{name}.onnx", "sha256": sha256_file(root / f"{name}.onnx"),
            "kind": kind, "labels": labels, "sample_rate": SAMPLE_RATE, "window_seconds": 3.0,
            "hop_seconds": 1.5, "weight": 1.0, "input_name": input_name,
            "feature_names": list(FEATURE_NAMES) if kind == "features" else [],
        })
    (root / "manifest.json").write_text(json.dumps({"format": 1, "models": entries}))
    return root


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path_factory, monkeypatch):
    """Tests never read the user's own gtag config file, nor list the models they learned."""
    monkeypatch.setenv("GTAG_CONFIG", str(tmp_path_factory.getbasetemp() / "no-such-config.toml"))
    monkeypatch.setenv("GTAG_USER_MODELS", str(tmp_path_factory.getbasetemp() / "no-learned-models"))


@pytest.fixture(autouse=True)
def _signals_as_from_a_terminal():
    """Every test runs with the stop signals a terminal gives (SIGINT raises KeyboardInterrupt,
    SIGTERM terminates), however pytest was launched: a background job (a script's `cmd &`) starts
    with SIGINT ignored, which Python and gtag keep. The gtag processes a test starts
    inherit this too (exec resets a handled signal to its default, but keeps an ignored one)."""
    import signal

    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    old = {s: signal.signal(s, h) for s, h in defaults.items() if signal.getsignal(s) is signal.SIG_IGN}
    yield
    for s, h in old.items():
        signal.signal(s, h)


@pytest.fixture(autouse=True)
def _own_undo_journal(tmp_path, monkeypatch):
    """gtag tag records its writes in a journal of the test's own, never the user's (gtag.keep.journal)."""
    monkeypatch.setenv("GTAG_JOURNAL", str(tmp_path / "undo-journal.sqlite3"))
