"""`gtag tag`: walk, predict, decide by policy, write safely, report.

Decoding and feature extraction (the heavy part) run in worker processes; ONNX inference and every
tag write happen in the main process, one file at a time, in the order the files were found. Each
write is atomic (see gtag.tags), and the cache commits after each file, so an interrupted run
leaves every file untouched or fully tagged and the next run resumes where this one stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from gtag import __version__
from gtag.audio.decode import AudioLoadError, SilentAudio
from gtag.predict.album import album_vote, group_albums
from gtag.predict.pipeline import Predictor, analyse_file, predict_in_worker
from gtag.predict.prediction import Prediction, cache_record, prediction_from_cache
from gtag.run import signals
from gtag.run.cache import PredictionCache, file_identity
from gtag.run.decision import fill_record, no_genre, choose_genres, decide
from gtag.run.jobs import pool_broke, make_executor
from gtag.run.library import not_regular
from gtag.run.messages import file_failure, not_a_regular_file

from gtag.run.records import (
    FAILED,
    SKIPPED_CHANGED,
    SKIPPED_HAS_GENRE,
    SKIPPED_NOT_REGULAR,
    SKIPPED_SILENT,
    TAGGED,
    UNCHANGED,
    WOULD_TAG,
    Record,
    TagOptions,
)
from gtag.run.workers import WorkerPool
from gtag.tags import formats, reading, writing


def _short_error(exc: BaseException, path: Path) -> str:
    return file_failure(path, exc)  # the words predict, learn and the report use too


class Tagger:
    """Runs the tag job over files; ``run`` yields one Record per file, in order."""

    def __init__(self, predictor: Predictor, opts: TagOptions, cache: PredictionCache | None = None,
                 pool: WorkerPool | None = None, journal=None):
        """``pool``: workers started before the models were loaded (``WorkerPool(jobs, fork=True)``),
        used by the next ``run`` with more than one job, which closes it; default: a pool made then."""
        self.predictor = predictor
        self.opts = opts
        self.cache = cache
        self.pool = pool
        self.keep_predictions = False  # --album's prediction pass needs them after each record
        self.journal = journal  # a gtag.keep.journal.RunJournal: every write recorded first (gtag undo)

    def _needs_prediction(self, path: Path, rec: Record) -> bool:
        """Read the existing tag first: a file that keeps its genre needs no analysis at all."""
        what = not_regular(path)
        if what is not None:
            rec.status, rec.error = SKIPPED_NOT_REGULAR, f"{path}: {not_a_regular_file(what)}"
            return False
        rec.before = file_identity(path)
        try:
            rec.format, rec.existing = reading.read_format_and_genres(path, self.opts.separator)
        except formats.TagError as exc:
            rec.status, rec.error = FAILED, _short_error(exc, path)
            return False
        if rec.existing and not (self.opts.force or self.opts.merge):
            rec.status = SKIPPED_HAS_GENRE
            return False
        return True

    def run(self, paths: Iterable[Path]) -> Iterator[Record]:
        if self.opts.album:
            yield from self._run_albums(list(paths))
            return
        jobs = max(1, self.opts.jobs)
        if jobs == 1 and self.opts.backend == "local":
            for path in paths:
                signals.check()
                rec = Record(str(path))
                if self._needs_prediction(path, rec):
                    self._predict_and_write(path, rec, lambda p=path: self.predictor.predict_file(p))
                yield rec
            return
        # Bounded look-ahead: at most 2 files per worker decoded ahead of the writer, so memory
        # stays flat on any library size while inference overlaps decoding of the next files.
        # Local pool with CPU models: workers run the whole pipeline, models included. Ray (and a GPU)
        # ship analysis only; the models then run here, once.
        source = self.predictor.source if self.opts.backend == "local" else None

        def submit(path: Path) -> Future:
            try:
                if source is not None:
                    return pool.submit(predict_in_worker, path, source)
                return pool.submit(analyse_file, path, self.predictor.config)
            except BrokenProcessPool as exc:  # broke before we noticed: recovered below
                fut: Future = Future()
                fut.set_exception(exc)
                return fut

        pool, self.pool = self.pool or make_executor(self.opts), None
        # (path, record, future, retries): the future is None when nothing needs computing.
        pending: deque[tuple[Path, Record, Future | None, int]] = deque()
        it = iter(paths)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < 2 * jobs:
                    try:
                        path = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    rec = Record(str(path))
                    fut = None
                    if self._needs_prediction(path, rec) and not self._cached(path):
                        fut = submit(path)
                    pending.append((path, rec, fut, 0))
                if not pending:
                    break
                signals.check()  # a stop signal that a library swallowed still ends the run
                path, rec, fut, _ = pending[0]
                if fut is not None and not rec.status:
                    wait([fut])
                    if pool_broke(fut) and isinstance(pool, WorkerPool):
                        self._recover(pool, pending, submit)
                        continue
                pending.popleft()
                if not rec.status:
                    if fut is None:
                        compute = None
                    elif source is not None:
                        compute = fut.result
                    else:
                        compute = lambda f=fut, p=path: self.predictor.infer(p, f.result())  # noqa: E731
                    self._predict_and_write(path, rec, compute)
                yield rec
        except BaseException:
            pool.stop()  # Ctrl-C, SIGTERM, or a bug: no worker outlives the run
            raise
        pool.close()

    @staticmethod
    def _recover(pool: WorkerPool, pending: deque, submit: Callable[[Path], Future]) -> None:
        """A worker died: its file fails with one line, the pool is rebuilt, and the files that
        were queued on the dead pool are submitted again, once."""
        crashed = pool.post_mortem()
        pool.restart()
        for i, (path, rec, fut, retries) in enumerate(pending):
            if rec.status or not pool_broke(fut):
                continue  # nothing to compute, or its result came back before the crash
            if str(path) in crashed:
                rec.status, rec.error = FAILED, f"{path}: {crashed[str(path)]}"
            elif retries >= 1:
                rec.status, rec.error = FAILED, f"{path}: analysis process crashed twice while this file was queued"
            else:
                pending[i] = (path, rec, submit(path), retries + 1)

    def _cached(self, path: Path) -> Prediction | None:
        if self.cache is None:
            return None
        hit = self.cache.get(path)
        try:
            return prediction_from_cache(str(path), hit) if hit else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a row of another shape: analyse again (the put replaces it)

    def _run_albums(self, paths: list[Path]) -> Iterator[Record]:
        """--album: predict every track of an album (through the usual pool, cache and order), then
        decide once for the album from the mean of its tracks' probabilities and write each track.

        Tracks that keep their genre by policy still vote, so a resumed run finds the same album
        genre as the interrupted one (their predictions come from the cache)."""
        groups = group_albums(paths)
        ordered = [p for _, members in groups for p in members]
        key_of = {p: key for key, members in groups for p in members}
        # Predict only: every track (force), nothing written (dry run); the decision comes after.
        predict_only = Tagger(self.predictor, replace(self.opts, album=False, force=True, merge=False,
                                                      dry_run=True), self.cache, self.pool)
        self.pool = None
        predict_only.keep_predictions = True
        batch: list[tuple[Path, Record]] = []
        for rec in predict_only.run(ordered):
            path = Path(rec.path)
            if batch and key_of[batch[0][0]] != key_of[path]:
                yield from self._decide_album(key_of[batch[0][0]], batch)
                batch = []
            batch.append((path, rec))
        if batch:
            yield from self._decide_album(key_of[batch[0][0]], batch)

    def _decide_album(self, key: str, batch: list[tuple[Path, Record]]) -> Iterator[Record]:
        preds = [rec.prediction for _, rec in batch if rec.prediction is not None]
        vote = album_vote(preds) if preds else None
        summary = None
        if vote is not None:
            opts = self.opts
            reason = self.predictor.abstain_reason(vote) if opts.min_confidence is None else None
            chosen = [] if reason else opts.policy.names_of(
                choose_genres(vote, self._min_probability(vote), opts.top_k, opts.policy))
            if not reason and not chosen:
                reason = no_genre(vote, opts, self._min_probability(vote))[1]
            summary = {"key": key, "tracks": len(batch), "voters": len(preds),
                       "genre": self.opts.policy.name(vote.genre), "genres": chosen,
                       "confidence": round(vote.confidence, 4), **({"reason": reason} if reason else {}),
                       "probabilities": {lab: round(float(p), 4) for lab, p in zip(vote.labels, vote.probabilities)}}
        for path, rec in batch:
            rec.album = summary
            if rec.status == FAILED or vote is None:
                yield rec
                continue
            own = (rec.probabilities, rec.models)
            rec.status = ""
            if rec.existing and not (self.opts.force or self.opts.merge):
                rec.status = SKIPPED_HAS_GENRE  # voted, keeps its genre
            else:
                self._decide_and_write(path, rec, vote)
            rec.probabilities, rec.models = own  # the report keeps each track's own vote
            rec.prediction = None
            yield rec

    def _predict_and_write(self, path: Path, rec: Record, compute: Callable[[], Prediction] | None) -> None:
        pred = self._predict(path, rec, compute)
        if pred is not None:
            self._decide_and_write(path, rec, pred)
        if not self.keep_predictions:  # the caller may keep every record: not their window arrays too
            rec.prediction = None

    def _predict(self, path: Path, rec: Record, compute: Callable[[], Prediction] | None) -> Prediction | None:
        """The file's prediction (from the cache, or computed and cached); None after a failure."""
        pred = self._cached(path)
        rec.cached = pred is not None
        try:
            if pred is None:
                if compute is None:  # cache entry vanished between look-ahead and now
                    compute = lambda: self.predictor.predict_file(path)  # noqa: E731
                pred = compute()
                if self._changed(path, rec):
                    return
                if self.cache is not None:  # under the key the analysed content had
                    self.cache.put(path, cache_record(pred), identity=rec.before)
        except SilentAudio as exc:
            rec.status, rec.error = SKIPPED_SILENT, _short_error(exc, path)
            return
        except (AudioLoadError, ValueError, OSError) as exc:
            rec.status, rec.error = FAILED, _short_error(exc, path)
            return None
        fill_record(rec, pred, self.opts, self._min_probability(pred))
        rec.prediction = pred
        return pred

    def _min_probability(self, pred: Prediction) -> float:
        """The probability a written genre of ``pred`` needs: --min-confidence (or the config's) when
        given, else the models' abstain rule's (lower where its second opinion agrees), else 0."""
        if self.opts.min_confidence is not None:
            return self.opts.min_confidence
        return self.predictor.min_probability(pred)

    def _decide_and_write(self, path: Path, rec: Record, pred: Prediction) -> None:
        """Apply the policy to ``pred`` (the file's own, or its album's) and write when needed."""
        fill_record(rec, pred, self.opts, self._min_probability(pred))
        d = decide(self.predictor, pred, rec.existing, self.opts, rec.format or "")
        rec.reason, rec.agreed, rec.note, rec.nodes = d.reason, d.agreed, d.note, d.nodes
        rec.genre, rec.confidence = d.genre, d.confidence
        rec.levels, rec.source = list(d.levels), d.source
        if d.status not in (TAGGED, UNCHANGED):
            rec.status, rec.genres = d.status, []
            return
        rec.genres, rec.written = d.chosen, d.genres
        extra = None
        if self.opts.write_confidence:
            extra = {"GTAG_CONFIDENCE": f"{pred.confidence:.3f}",
                     "GTAG_SOURCE": f"gtag {__version__} ({'+'.join(pred.models)})"}
        if rec.existing == rec.written and _has_extra(path, extra):
            rec.status = UNCHANGED
            return
        if self.opts.dry_run:
            blocker = writing.predict_write_failure(path)
            if blocker:  # say now what the real run would meet
                rec.status, rec.error, rec.written = FAILED, blocker, []
            else:
                rec.status = WOULD_TAG
            return
        try:  # through the undo journal when there is one: recorded before the file changes
            (self.journal or writing).write_genres(path, rec.written, extra, separator=self.opts.separator,
                                                expect=rec.before)
        except formats.FileChanged:
            rec.status, rec.error, rec.written = SKIPPED_CHANGED, _changed_message(path), []
            return
        except (formats.TagError, OSError) as exc:
            rec.status, rec.error, rec.written = FAILED, _short_error(exc, path), []
            return
        rec.status = TAGGED
        if self.cache is not None:  # same audio, new size/mtime: keep the re-run instant
            self.cache.put(path, cache_record(rec.prediction or pred))

    @staticmethod
    def _changed(path: Path, rec: Record) -> bool:
        """A file replaced or rewritten while it was analysed: its prediction is about content it
        no longer has, so it is neither cached nor written (the next run sees the new content)."""
        if rec.before is None or file_identity(path) == rec.before:
            return False
        rec.status, rec.error, rec.written = SKIPPED_CHANGED, _changed_message(path), []
        return True


def _changed_message(path: Path) -> str:
    return f"{path}: changed during analysis, not tagged; the next run analyses the new content"


def _has_extra(path: Path, extra: dict[str, str] | None) -> bool:
    """Whether the file already holds these extra fields (so the genre alone decides UNCHANGED)."""
    try:
        return all(reading.read_extra(path, k) == v for k, v in (extra or {}).items())
    except formats.TagError:
        return False
