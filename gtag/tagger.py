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
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, tags
from .audio import AudioLoadError
from .cache import PredictionCache
from .pipeline import (Prediction, Predictor, analyse_file, cache_record, predict_in_worker, prediction_from_cache,
                       worker_context)

# What gtag writes for each GTZAN label: the ID3v1/Winamp genre names that players and beets know.
DISPLAY_NAMES = {
    "blues": "Blues", "classical": "Classical", "country": "Country", "disco": "Disco",
    "hiphop": "Hip-Hop", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "reggae": "Reggae", "rock": "Rock",
}  # fmt: skip

# Record statuses (the `status` field of the report).
TAGGED = "tagged"
WOULD_TAG = "would tag"  # dry run
SKIPPED_HAS_GENRE = "skipped: has genre"
SKIPPED_LOW_CONFIDENCE = "skipped: low confidence"
UNCHANGED = "unchanged"  # the file already holds exactly what gtag would write
FAILED = "failed"


def display_name(label: str) -> str:
    return DISPLAY_NAMES.get(label, label.title())


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


def default_jobs() -> int:
    """``plan_jobs`` for this machine: the CPUs this process may run on (affinity, not the whole
    box) and MemAvailable from /proc/meminfo where there is one."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
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
    min_confidence: float = 0.0  # write nothing for a file whose top genre is less probable
    top_k: int = 1  # write up to k genres, each at least min_confidence probable
    jobs: int = 1  # worker processes for decoding and features (1: in the main process)
    write_confidence: bool = False  # also record GTAG_CONFIDENCE and GTAG_SOURCE custom tags
    backend: str = "local"  # "local" (process pool) or "ray" (a Ray cluster)
    ray_address: str | None = None  # Ray cluster address; None starts a local Ray instance


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
        return d


def choose_genres(pred: Prediction, min_confidence: float, top_k: int) -> list[str]:
    """Labels to write: the top-k genres whose probability reaches ``min_confidence`` (none when
    even the best one does not: no tag is better than a guess)."""
    return [g for g, p in pred.top(top_k) if p >= min_confidence]


def _fill(rec: Record, pred: Prediction, opts: TagOptions) -> None:
    rec.genre = display_name(pred.genre)
    rec.confidence = round(pred.confidence, 4)
    rec.probabilities = {lab: round(float(p), 4) for lab, p in zip(pred.labels, pred.probabilities)}
    rec.models = {n: {lab: round(float(x), 4) for lab, x in zip(pred.labels, p)} for n, p in pred.models.items()}
    rec.genres = [display_name(g) for g in choose_genres(pred, opts.min_confidence, opts.top_k)]


def _short_error(exc: BaseException, path: Path) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg if str(path) in msg else f"{path}: {msg}"


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
    # Not a fork of this process: it already holds ONNX Runtime sessions and their thread pools, and
    # a forked child that then creates sessions of its own can crash (ORT is not fork-safe). Workers
    # come from a fork server that never loads ORT, or are spawned (pipeline.worker_context).
    return ProcessPoolExecutor(max(1, opts.jobs), mp_context=worker_context())


class Tagger:
    """Runs the tag job over files; ``run`` yields one Record per file, in order."""

    def __init__(self, predictor: Predictor, opts: TagOptions, cache: PredictionCache | None = None):
        self.predictor = predictor
        self.opts = opts
        self.cache = cache

    def _needs_prediction(self, path: Path, rec: Record) -> bool:
        """Read the existing tag first: a file that keeps its genre needs no analysis at all."""
        try:
            rec.format = tags.format_name(path)
            rec.existing = tags.read_genres(path)
        except tags.TagError as exc:
            rec.status, rec.error = FAILED, _short_error(exc, path)
            return False
        if rec.existing and not self.opts.force:
            rec.status = SKIPPED_HAS_GENRE
            return False
        return True

    def run(self, paths: Iterable[Path]) -> Iterator[Record]:
        jobs = max(1, self.opts.jobs)
        if jobs == 1 and self.opts.backend == "local":
            for path in paths:
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
        with make_executor(self.opts) as pool:
            pending: deque[tuple[Path, Record, Future | None]] = deque()
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
                            if source is not None:
                                fut = pool.submit(predict_in_worker, path, source)
                            else:
                                fut = pool.submit(analyse_file, path, self.predictor.config)
                        pending.append((path, rec, fut))
                    if not pending:
                        break
                    path, rec, fut = pending.popleft()
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
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _cached(self, path: Path) -> Prediction | None:
        if self.cache is None:
            return None
        hit = self.cache.get(path)
        return prediction_from_cache(str(path), hit) if hit else None

    def _predict_and_write(self, path: Path, rec: Record, compute: Callable[[], Prediction] | None) -> None:
        pred = self._cached(path)
        rec.cached = pred is not None
        try:
            if pred is None:
                if compute is None:  # cache entry vanished between look-ahead and now
                    compute = lambda: self.predictor.predict_file(path)  # noqa: E731
                pred = compute()
                if self.cache is not None:
                    self.cache.put(path, cache_record(pred))
        except (AudioLoadError, ValueError, OSError) as exc:
            rec.status, rec.error = FAILED, _short_error(exc, path)
            return
        _fill(rec, pred, self.opts)
        if not rec.genres:
            rec.status = SKIPPED_LOW_CONFIDENCE
            return
        rec.written = list(rec.genres)
        extra = None
        if self.opts.write_confidence:
            extra = {"GTAG_CONFIDENCE": f"{pred.confidence:.3f}",
                     "GTAG_SOURCE": f"gtag {__version__} ({'+'.join(pred.models)})"}
        if rec.existing == rec.written and _has_extra(path, extra):
            rec.status = UNCHANGED
            return
        if self.opts.dry_run:
            rec.status = WOULD_TAG
            return
        try:
            tags.write_genres(path, rec.written, extra)
        except (tags.TagError, OSError) as exc:
            rec.status, rec.error, rec.written = FAILED, _short_error(exc, path), []
            return
        rec.status = TAGGED
        if self.cache is not None:  # same audio, new size/mtime: keep the re-run instant
            self.cache.put(path, cache_record(pred))


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
    """JSON array or CSV, chosen by the report file's extension; written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".csv":
        labels = sorted({lab for r in records for lab in r.probabilities})
        models = sorted({m for r in records for m in r.models})
        head = ["path", "status", "format", "genre", "genres", "confidence", "existing", "written", "cached",
                "error"] + [f"p_{lab}" for lab in labels] + [f"{m}_{lab}" for m in models for lab in labels]
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(head)
            for r in records:
                w.writerow([r.path, r.status, r.format or "", r.genre or "", ";".join(r.genres),
                            "" if r.confidence is None else r.confidence, ";".join(r.existing),
                            ";".join(r.written), int(r.cached), r.error or ""]
                           + [r.probabilities.get(lab, "") for lab in labels]
                           + [r.models.get(m, {}).get(lab, "") for m in models for lab in labels])
    else:
        tmp.write_text(json.dumps([r.to_json(top_k) for r in records], indent=2) + "\n")
    os.replace(tmp, path)
