"""gtag's Python API: genres of audio files, heard from the audio, and what a tagger should do.

For programs that embed gtag (the beets plugin in ``beetsplug/gtag.py`` is one); documented in
docs/api.md. ``import gtag`` stays light: these names load on first use.

    from gtag.api import TagOptions, load_predictor

    predictor = load_predictor()                  # the shipped ensemble, loaded once
    pred = predictor.predict("song.flac")         # decode + analyse + vote: a Prediction
    decision = predictor.decide(pred, existing=["Rock"], options=TagOptions(merge=True))
    decision.status, decision.genres              # ("tagged", ["Rock", "Metal"])

What is written where stays the caller's business: nothing here touches a file's tags.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from concurrent.futures.process import BrokenProcessPool

from gtag.audio.decode import AudioLoadError, SilentAudio
from gtag.config import DEFAULT_MAX_WINDOWS, Config, ConfigError, GenrePolicy, load_config, parse_config
from gtag.models.runtime import ModelError
from gtag.predict.pipeline import Predictor, predict_in_worker
from gtag.predict.prediction import Prediction, cache_record, prediction_from_cache
from gtag.run.decision import Decision, choose_genres, decide
from gtag.run.records import (
    FAILED,
    SKIPPED_LOW_CONFIDENCE,
    SKIPPED_SILENT,
    SKIPPED_UNCERTAIN,
    TAGGED,
    UNCHANGED,
    Record,
    TagOptions,
    write_report,
)
from gtag.run.jobs import default_jobs

__all__ = ["AudioLoadError", "Config", "ConfigError", "Decision", "GenrePolicy", "GenrePredictor", "ModelError",
           "PREDICT_ERRORS", "Prediction", "Record", "SilentAudio", "TagOptions", "default_jobs", "load_config",
           "load_predictor",
           "parse_config", "prediction_from_dict", "prediction_to_dict", "write_report",
           "FAILED", "SKIPPED_LOW_CONFIDENCE", "SKIPPED_SILENT", "SKIPPED_UNCERTAIN", "TAGGED", "UNCHANGED"]

# What ``predict`` raises on a file gtag cannot hear (unreadable, not audio, silent: SilentAudio is an
# AudioLoadError): one line each, and the caller goes on with the next file.
PREDICT_ERRORS = (AudioLoadError, ValueError, OSError)


def prediction_to_dict(pred: Prediction, windows: bool = True) -> dict:
    """A JSON-able form of ``pred`` (everything but its path), for a cache or a database; without
    ``windows``, the genre-over-time lists are left out (what a decision needs is kept)."""
    d = cache_record(pred)
    if not windows:
        d["window_starts"], d["window_genres"] = [], []
    return d


def prediction_from_dict(d: dict, path: str = "") -> Prediction:
    """The Prediction ``prediction_to_dict`` made; KeyError/TypeError/ValueError on another shape."""
    return prediction_from_cache(path, d)


class GenrePredictor:
    """Loaded models, ready to predict files one by one (or a batch with worker processes) and to
    decide what a file should hold. Made by ``load_predictor``; not thread-safe (one at a time)."""

    def __init__(self, predictor: Predictor, jobs: int = 1):
        self._predictor = predictor
        self.jobs = max(1, jobs)

    @property
    def signature(self) -> str:
        """Identifies the models and settings (a new model or gtag version: a new signature). A stored
        prediction with another signature is out of date."""
        return self._predictor.signature

    @property
    def labels(self) -> list[str]:
        """Every genre label the models can predict."""
        return sorted({lab for labs in self._predictor.labels.values() for lab in labs})

    def predict(self, path: str | os.PathLike) -> Prediction:
        """Decode, analyse and predict one file; raises one of ``PREDICT_ERRORS`` on bad input."""
        return self._predictor.predict_file(path)

    def predict_many(self, paths: Sequence[str | os.PathLike]) -> Iterator[tuple[str, Prediction | Exception]]:
        """(path, its Prediction or the error it raised) for each of ``paths``, in order. With
        ``jobs`` > 1 and CPU models, files are decoded and predicted in worker processes, a few ahead
        of the one yielded; a worker that crashes fails its file only."""
        paths = [os.fspath(p) for p in paths]
        source = self._predictor.source
        if self.jobs == 1 or len(paths) < 2 or source is None:
            for p in paths:
                yield p, self._try(p)
            return
        from gtag.run.workers import WorkerPool

        pool = WorkerPool(min(self.jobs, len(paths)))
        pending: deque[tuple[str, Future, int]] = deque()
        todo = iter(paths)
        try:
            while True:
                while len(pending) < 2 * pool.jobs and (p := next(todo, None)) is not None:
                    pending.append((p, pool.submit(predict_in_worker, p, source), 0))
                if not pending:
                    break
                path, fut, tries = pending[0]
                wait([fut])
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    crashed = pool.post_mortem()
                    pool.restart()
                    again = deque()
                    for p, f, t in pending:  # the crashed file fails; the others are queued once more
                        broken = f.cancelled() or isinstance(f.exception(), BrokenProcessPool)
                        if broken and (p in crashed or t >= 1):
                            again.append((p, _failed(RuntimeError(f"{p}: {crashed.get(p, 'analysis process crashed')}")), t))
                        else:
                            again.append((p, pool.submit(predict_in_worker, p, source) if broken else f, t + broken))
                    pending = again
                    continue
                pending.popleft()
                yield path, exc if exc is not None else fut.result()
        finally:
            pool.stop()

    def _try(self, path: str) -> Prediction | Exception:
        try:
            return self.predict(path)
        except PREDICT_ERRORS as exc:
            return exc

    def decide(self, pred: Prediction, existing: Iterable[str] = (), options: TagOptions | None = None) -> Decision:
        """What a file holding ``existing`` genres should hold after ``pred``, under ``options`` (the
        rules of `gtag tag`: the models' abstain rule or --min-confidence, top-k, the config's names,
        whitelist and exclude list, --merge). Whether a file that has genres is considered at all
        (--force, --merge) is the caller's call."""
        return decide(self._predictor, pred, list(existing), options or TagOptions())

    def heard(self, pred: Prediction, options: TagOptions | None = None) -> list[str]:
        """The top-k genres gtag hears (display names, the config's whitelist and exclude list
        applied), whether or not they are confident enough to write."""
        opts = options or TagOptions()
        return opts.policy.names_of(choose_genres(pred, 0.0, opts.top_k, opts.policy))

    def album_vote(self, preds: Sequence[Prediction]) -> Prediction:
        """One prediction for tracks that belong together (an album): their mean, as `gtag tag --album`."""
        from gtag.predict.album import album_vote

        return album_vote(preds)


def load_predictor(models: str | Sequence[str] | None = None, models_dir: str | os.PathLike | None = None,
                   device: str = "auto", jobs: int = 1, max_windows: int = DEFAULT_MAX_WINDOWS,
                   threads: int = 0) -> GenrePredictor:
    """Load models once, as `gtag tag` does: ``models`` names some to vote equally (a list, or
    "a,b"; default: the ensemble with its manifest weights); ``models_dir`` is a folder with
    manifest.json or the name of a model learned with `gtag learn` (default: the shipped models, or
    $GTAG_MODELS); ``device`` "auto", "cpu" or "cuda"; ``jobs`` worker processes of
    ``predict_many``; ``max_windows`` 3 s windows analysed per track (0: all); ``threads`` ONNX
    Runtime threads per session (0: its default). Raises ModelError (one line) when they cannot load."""
    from gtag.models.catalog import resolve_models_dir
    from gtag.models.runtime import load_models

    names = [n.strip() for n in (models.split(",") if isinstance(models, str) else models or []) if n.strip()]
    root = resolve_models_dir(os.fspath(models_dir) if models_dir is not None else None)
    try:
        loaded = load_models(root, names or None, device=device, threads=threads)
        predictor = Predictor(loaded, weights=dict.fromkeys(names, 1.0) if names else None, max_windows=max_windows)
    except ValueError as exc:  # models gtag cannot feed (rate, window)
        raise ModelError(str(exc)) from exc
    return GenrePredictor(predictor, jobs)


def _failed(exc: Exception) -> Future:
    fut: Future = Future()
    fut.set_exception(exc)
    return fut

