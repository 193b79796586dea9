"""Run in a spawned worker process by tests/test_dsp.py (a module of its own, so the worker imports
nothing but gtag to reach it)."""

from __future__ import annotations

import sys


def modules_after_predicting(path: str, source) -> list[str]:
    """Predict one file as a `gtag tag --jobs N` worker does; return the modules the worker holds."""
    from gtag.predict.pipeline import predict_in_worker

    predict_in_worker(path, source)
    return sorted(sys.modules)


def parent_and_onnx_runtime(path: str) -> tuple[int, bool]:
    """In a `gtag tag --jobs N` worker (tests/test_robustness.py): the worker's parent process, and
    whether ONNX Runtime is loaded there before any model is."""
    import os

    return os.getppid(), "onnxruntime" in sys.modules
