"""gtag: tag a music library with genres predicted from the audio itself.

The Python API (``gtag.api``, docs/api.md) is importable from here too: ``from gtag import
load_predictor``. Its names load on first use, so ``import gtag`` itself imports nothing heavy.
"""

__version__ = "0.1.0"

_API = ("Decision", "GenrePredictor", "Prediction", "TagOptions", "load_config", "load_predictor")


def __getattr__(name: str):
    if name in _API:
        from gtag import api

        return getattr(api, name)
    raise AttributeError(f"module 'gtag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
