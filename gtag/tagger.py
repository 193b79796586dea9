"""`gtag tag`: walk, predict, decide by policy, write safely, report.

Decoding and feature extraction (the heavy part) run in worker processes; ONNX inference and every
tag write happen in the main process, one file at a time, in the order the files were found. Each
write is atomic (see gtag.tags), and the cache commits after each file, so an interrupted run
leaves every file untouched or fully tagged and the next run resumes where this one stopped.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__, refine, signals, tags
from .album import album_vote, group_albums
from .audio import AudioLoadError, SilentAudio
from .cache import PredictionCache, file_identity
from .config import DEFAULT_NAMES, GenrePolicy
from .library import not_regular
from .messages import file_failure, low_confidence_reason, not_a_regular_file, refusal_reason
from .taxonomy import STYLE
from .pipeline import Prediction, Predictor, analyse_file, cache_record, predict_in_worker, prediction_from_cache
from .workers import WorkerPool

# What gtag writes for each GTZAN label by default (the config file's [names] can change them).
DISPLAY_NAMES = DEFAULT_NAMES

# Record statuses (the `status` field of the report).
TAGGED = "tagged"
WOULD_TAG = "would tag"  # dry run
SKIPPED_HAS_GENRE = "skipped: has genre"
SKIPPED_LOW_CONFIDENCE = "skipped: low confidence"  # below an explicit --min-confidence
SKIPPED_EXCLUDED = "skipped: excluded by config"  # the top genre is refused by exclude / only, no other one reaches the bar
SKIPPED_UNCERTAIN = "skipped: uncertain"  # the models' own abstain rule: no tag beats a wrong tag
SKIPPED_NOT_REGULAR = "skipped: not a regular file"  # a FIFO, a device, a socket: never opened
SKIPPED_CHANGED = "skipped: changed during analysis"  # left for the next run
SKIPPED_SILENT = "skipped: silent"  # silence or near-silence: no genre to hear
SKIPPED_UNREADABLE = "skipped: unreadable"  # a folder that cannot be listed: counts as a failure
UNCHANGED = "unchanged"  # the file already holds exactly what gtag would write
FAILED = "failed"


# Peak memory of one worker process on a typical track (measured: ~450 MiB for a 5-minute track
# with musicnn, ~480 MiB with the CNN), with headroom: the default --jobs never plans more workers
# than the memory that is available can hold.
WORKER_MEMORY_BYTES = 768 * 2**20


def plan_jobs(cpus: int, available_bytes: int | None, per_worker: int = WORKER_MEMORY_BYTES) -> int:
    """Default number of worker processes: one per usable CPU, fewer when the available memory
    would not hold that many workers (a 64-core box with 16 GB must not start 64 of them)."""
    jobs = max(1, cpus)
    if available_bytes is not None:
        jobs = min(jobs, max(1, available_bytes // per_worker))
    return jobs


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the whole box)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def default_jobs() -> int:
    """``plan_jobs`` for this machine: ``usable_cpus`` and MemAvailable from /proc/meminfo where
    there is one."""
    cpus = usable_cpus()
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return plan_jobs(cpus, available)


@dataclass(frozen=True)
class TagOptions:
    """Policy of one `gtag tag` run."""

    dry_run: bool = False  # predict and report, change no byte of any file
    force: bool = False  # also retag files that already have a genre
    # write nothing for a file whose top genre is less probable; None: the models' abstain rule
    # (manifest "abstain": calibrated probability, reject class, distance), 0: always write
    min_confidence: float | None = None
    top_k: int = 1  # write up to k genres, each at least min_confidence probable
    jobs: int = 1  # worker processes for decoding and features (1: in the main process)
    write_confidence: bool = False  # also record GTAG_CONFIDENCE and GTAG_SOURCE custom tags
    backend: str = "local"  # "local" (process pool) or "ray" (a Ray cluster)
    ray_address: str | None = None  # Ray cluster address; None starts a local Ray instance
    separator: str | None = None  # join several genres into one value with this (config file)
    policy: GenrePolicy = field(default_factory=GenrePolicy)  # names, whitelist, exclude list
    merge: bool = False  # add to the genres a file has (no doubles) instead of skipping it
    album: bool = False  # tracks of one album vote together and get the same genre(s)
    depth: str = STYLE  # how deep in the taxonomy to write: "genre", or "style" where one is sure
    replace: bool = False  # with force: also replace a finer genre the file has (gtag.refine)


@dataclass
class Record:
    """One file's outcome; becomes one row/object of the report."""

    path: str
    status: str = ""
    genre: str | None = None  # the voted genre (display name)
    genres: list[str] = field(default_factory=list)  # top-k genres chosen (display names)
    confidence: float | None = None
    existing: list[str] = field(default_factory=list)  # genre(s) found in the file before
    written: list[str] = field(default_factory=list)  # written, or would be in a dry run
    probabilities: dict[str, float] = field(default_factory=dict)
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    format: str | None = None
    cached: bool = False
    error: str | None = None
    reason: str | None = None  # why no genre was written (skipped: uncertain, low confidence, excluded by config)
    agreed: str | None = None  # the abstain rule's second model, when its agreeing let the genre be written
    # The taxonomy's decision: written path (genre first) and who named the genre (head, tags, head+tags)
    levels: list[str] = field(default_factory=list)
    source: str | None = None
    nodes: dict[str, float] = field(default_factory=dict)  # taxonomy node -> probability from the MSD tags
    album: dict | None = None  # --album: the album's key, tracks, vote and confidence
    note: str | None = None  # what was kept, refined or replaced of the file's genres, and why (gtag.refine)
    prediction: Prediction | None = field(default=None, repr=False, compare=False)  # not reported
    # (dev, inode, size, mtime_ns) before analysis: the content the prediction is about. Not reported.
    before: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)

    def to_json(self, top_k: int) -> dict:
        d: dict = {"path": self.path, "status": self.status, "format": self.format}
        if top_k > 1:
            d["genres"] = self.genres
        else:
            d["genre"] = self.genre
        d.update(confidence=self.confidence, existing=self.existing, written=self.written,
                 probabilities=self.probabilities, models=self.models, cached=self.cached)
        if self.error:
            d["error"] = self.error
        if self.reason:
            d["reason"] = self.reason
        if self.agreed:
            d["agreed"] = self.agreed
        if self.nodes:
            d["nodes"] = self.nodes
        if self.levels:
            d["levels"], d["source"] = self.levels, self.source
        if self.album is not None:
            d["album"] = self.album
        if self.note:
            d["note"] = self.note
        return d


def choose_genres(pred: Prediction, min_confidence: float, top_k: int,
                  policy: GenrePolicy | None = None) -> list[str]:
    """Labels to write: the top-k genres whose probability reaches ``min_confidence`` (none when
    even the best one does not: no tag is better than a guess), among those the config's
    whitelist and exclude list allow (probabilities are not renormalised)."""
    ranked = pred.top(len(pred.labels))
    if policy is not None:
        ranked = [(g, p) for g, p in ranked if policy.allowed(g)]
    return [g for g, p in ranked[:top_k] if p >= min_confidence]


@dataclass(frozen=True)
class Decision:
    """What the policy makes of one prediction for a file that holds ``existing`` genres."""

    status: str  # TAGGED (write ``genres``), UNCHANGED, or a skip: uncertain / low confidence / excluded
    genres: list[str]  # the genres the file should hold (display names); empty unless TAGGED/UNCHANGED
    chosen: list[str]  # gtag's own pick (genre first, then its style), before keeping what the file has
    reason: str | None = None  # why nothing is written (a skip)
    agreed: str | None = None  # the second-opinion model whose agreeing let the genre be written
    note: str | None = None  # what was kept or replaced of the file's own genres (gtag.refine)
    genre: str | None = None  # the genre gtag hears (display name), for lines and reports
    confidence: float | None = None  # its probability: the vote's, or the node scorer's (from the tags)
    levels: tuple[str, ...] = ()  # the taxonomy path written, genre first (gtag.hierarchy)
    source: str | None = None  # who named the genre: "head", "tags" or "head+tags"
    nodes: dict[str, float] = field(default_factory=dict)  # taxonomy node -> probability from the MSD tags


def node_name(policy: GenrePolicy, node: str) -> str:
    """The written name of a taxonomy node (the config's [names] may rename it)."""
    from .taxonomy import default_taxonomy

    n = default_taxonomy().nodes.get(node)
    return policy.node_name(node, n.gtzan if n is not None else None)


def node_allowed(policy: GenrePolicy, node: str) -> bool:
    """The config's whitelist / exclude list, asked of a taxonomy node (by its label or name)."""
    from .taxonomy import default_taxonomy

    n = default_taxonomy().nodes.get(node)
    if n is not None and n.gtzan and not policy.allowed(n.gtzan):
        return False
    return policy.allowed(node) and policy.allowed(node_name(policy, node))


def decide(predictor: Predictor, pred: Prediction, existing: list[str], opts: TagOptions,
           fmt: str = "") -> Decision:
    """The policy on one prediction (pure: no file read or written), for `gtag tag` and the beets
    plugin alike: with --min-confidence, the top-k allowed genres that reach it; else the genre >
    style decision (gtag.hierarchy) where the models have a taxonomy, else the abstain rule; then
    the file's own genres kept, refined or replaced (gtag.refine). ``fmt``: the container, whose
    room for values (ID3v2.3 without a separator: one) the result must fit."""
    explicit = opts.min_confidence is not None
    min_p = opts.min_confidence if explicit else predictor.min_probability(pred)
    genre, confidence = opts.policy.name(pred.genre), round(pred.confidence, 4)
    chosen = opts.policy.names_of(choose_genres(pred, min_p, opts.top_k, opts.policy))
    agreed, levels, source, nodes = None, (), None, {}
    tree = None
    if not explicit and predictor.abstain_rule is not None:
        tree = predictor.decide(pred, opts.depth, opts.policy.enable, lambda n: node_allowed(opts.policy, n))
    if tree is not None:  # genre > style, level by level
        nodes = {n: round(p, 4) for n, p in predictor.node_scores(pred).items()}
        if not tree.path:
            head = predictor.taxonomy_node(pred)
            if head is not None and not node_allowed(opts.policy, head) and predictor.abstain_reason(pred) is None:
                status, reason = _no_genre(pred, opts, min_p)  # the config refused the genre it is sure of
                return Decision(status, [], [], reason, genre=genre, confidence=confidence, nodes=nodes)
            return Decision(SKIPPED_UNCERTAIN, [], [], tree.reason, genre=genre, confidence=confidence, nodes=nodes)
        levels, source = tuple(tree.path), tree.source
        genre, confidence = node_name(opts.policy, tree.path[0]), round(float(tree.confidence), 4)
        chosen = [node_name(opts.policy, n) for n in tree.path]
        agreed = predictor.agreed_by(pred) if tree.source != "tags" else None
    elif not explicit and predictor.abstain_rule is not None:
        reason = predictor.abstain_reason(pred)
        if reason:
            return Decision(SKIPPED_UNCERTAIN, [], [], reason, genre=genre, confidence=confidence)
        agreed = predictor.agreed_by(pred)
    if not chosen:
        status, reason = _no_genre(pred, opts, min_p)
        return Decision(status, [], [], reason, agreed, genre=genre, confidence=confidence, nodes=nodes)
    one_value = len(tags.fit_genres(fmt, ["a", "b"], opts.separator)) < 2
    mode = refine.MERGE if opts.merge else refine.REPLACE if opts.replace else refine.REFINE
    kept = refine.decide(list(existing), chosen, mode, one_value)
    out = tags.fit_genres(fmt, kept.values, opts.separator) if fmt else list(kept.values)
    if kept.values == list(existing):
        out = list(existing)  # the file keeps what it has: nothing to write
    return Decision(UNCHANGED if list(existing) == out else TAGGED, out, chosen, None, agreed, kept.note or None,
                    genre, confidence, levels, source, nodes)


def _fill(rec: Record, pred: Prediction, opts: TagOptions, min_confidence: float) -> None:
    rec.genre = opts.policy.name(pred.genre)
    rec.confidence = round(pred.confidence, 4)
    rec.probabilities = {lab: round(float(p), 4) for lab, p in zip(pred.labels, pred.probabilities)}
    rec.models = {n: {lab: round(float(x), 4) for lab, x in zip(pred.labels, p)} for n, p in pred.models.items()}
    rec.genres = opts.policy.names_of(choose_genres(pred, min_confidence, opts.top_k, opts.policy))


def _short_error(exc: BaseException, path: Path) -> str:
    return file_failure(path, exc)  # the words predict, learn and the report use too


def _no_genre(pred: Prediction, opts: TagOptions, min_probability: float) -> tuple[str, str]:
    """Status and reason of a prediction from which no genre is chosen: the config refused the top
    genre (and no allowed one reaches the bar), or the top genre is not probable enough."""
    refused = refusal_reason(pred.top(len(pred.labels)), min_probability, opts.policy)
    if refused is not None:
        return SKIPPED_EXCLUDED, refused
    return SKIPPED_LOW_CONFIDENCE, low_confidence_reason(opts.policy.name(pred.genre), pred.confidence,
                                                         min_probability)


class RayExecutor:
    """The part of concurrent.futures.Executor the tagger uses, on a Ray cluster.

    Decoding and feature extraction run as Ray tasks; their results come back to this process,
    which runs the ONNX models and writes every tag exactly as the local backend does (same
    safety, cache and report). Workers must see the files at the same paths (a shared folder).
    """

    def __init__(self, address: str | None, jobs: int):
        import ray

        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, log_to_driver=False, include_dashboard=False,
                     **({} if address else {"num_cpus": jobs}))
        self._task = ray.remote(analyse_file)

    def submit(self, fn: Callable, *args) -> Future:
        assert fn is analyse_file  # the only work shipped to the cluster
        return self._task.remote(*args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._started:
            self._ray.shutdown()

    stop = close = shutdown

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def make_executor(opts: "TagOptions"):
    """A process pool (the default) or a Ray cluster (``--backend ray``)."""
    if opts.backend == "ray":
        try:
            return RayExecutor(opts.ray_address, opts.jobs)
        except ImportError:
            raise RuntimeError("--backend ray needs Ray: pip install 'gtag[ray]'") from None
    return WorkerPool(opts.jobs)


def _broken(fut: Future | None) -> bool:
    return fut is not None and fut.done() and (fut.cancelled() or isinstance(fut.exception(), BrokenProcessPool))


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
        self.journal = journal  # a gtag.journal.RunJournal: every write recorded first (gtag undo)

    def _needs_prediction(self, path: Path, rec: Record) -> bool:
        """Read the existing tag first: a file that keeps its genre needs no analysis at all."""
        what = not_regular(path)
        if what is not None:
            rec.status, rec.error = SKIPPED_NOT_REGULAR, f"{path}: {not_a_regular_file(what)}"
            return False
        rec.before = file_identity(path)
        try:
            rec.format, rec.existing = tags.read_format_and_genres(path, self.opts.separator)
        except tags.TagError as exc:
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
                    if _broken(fut) and isinstance(pool, WorkerPool):
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
            if rec.status or not _broken(fut):
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
                reason = _no_genre(vote, opts, self._min_probability(vote))[1]
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
        _fill(rec, pred, self.opts, self._min_probability(pred))
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
        _fill(rec, pred, self.opts, self._min_probability(pred))
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
            blocker = tags.predict_write_failure(path)
            if blocker:  # say now what the real run would meet
                rec.status, rec.error, rec.written = FAILED, blocker, []
            else:
                rec.status = WOULD_TAG
            return
        try:  # through the undo journal when there is one: recorded before the file changes
            (self.journal or tags).write_genres(path, rec.written, extra, separator=self.opts.separator,
                                                expect=rec.before)
        except tags.FileChanged:
            rec.status, rec.error, rec.written = SKIPPED_CHANGED, _changed_message(path), []
            return
        except (tags.TagError, OSError) as exc:
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
        return all(tags.read_extra(path, k) == v for k, v in (extra or {}).items())
    except tags.TagError:
        return False


def summarize(records: list[Record]) -> dict:
    """Counts for the end-of-run table: per status and per written genre."""
    by_status = Counter(r.status for r in records)
    by_genre = Counter(g for r in records if r.status in (TAGGED, WOULD_TAG, UNCHANGED) for g in r.written)
    return {"files": len(records), "status": dict(by_status), "genres": dict(by_genre.most_common())}


def write_report(records: list[Record], path: Path, top_k: int) -> None:
    """JSON array or CSV, chosen by the report file's extension; written atomically. A file name
    that is not UTF-8 is kept as its bytes in CSV, and as \\udcXX escapes in JSON."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            labels = sorted({lab for r in records for lab in r.probabilities})
            models = sorted({m for r in records for m in r.models})
            albums = any(r.album for r in records)  # --album: the album and its vote, after the error
            notes = any(r.note for r in records)  # what was kept or replaced of a file's genres (gtag.refine)
            head = ["path", "status", "format", "genre", "genres", "confidence", "existing", "written", "cached",
                    "error", "reason"] + (["note"] if notes else []) \
                + (["album", "album_genres", "album_confidence"] if albums else []) \
                + [f"p_{lab}" for lab in labels] + [f"{m}_{lab}" for m in models for lab in labels]
            with tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
                w = csv.writer(f)
                w.writerow(head)
                for r in records:
                    w.writerow([r.path, r.status, r.format or "", r.genre or "", ";".join(r.genres),
                                "" if r.confidence is None else r.confidence, ";".join(r.existing),
                                ";".join(r.written), int(r.cached), r.error or "", r.reason or ""]
                               + ([r.note or ""] if notes else [])
                               + ([(r.album or {}).get("key", ""), ";".join((r.album or {}).get("genres", [])),
                                   (r.album or {}).get("confidence", "")] if albums else [])
                               + [r.probabilities.get(lab, "") for lab in labels]
                               + [r.models.get(m, {}).get(lab, "") for m in models for lab in labels])
        else:
            tmp.write_text(json.dumps([r.to_json(top_k) for r in records], indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
