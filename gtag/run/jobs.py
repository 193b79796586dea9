"""Where the heavy work runs: how many worker processes this machine can hold, and a local process
pool or a Ray cluster behind one executor interface.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

from gtag.predict.pipeline import analyse_file
from gtag.run.records import TagOptions
from gtag.run.workers import WorkerPool

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


def pool_broke(fut: Future | None) -> bool:
    """Whether ``fut`` failed because its worker pool died (not because of its own file)."""
    return fut is not None and fut.done() and (fut.cancelled() or isinstance(fut.exception(), BrokenProcessPool))
