"""The pretrained backbone as an embedder: a track -> its windows' embeddings, cached by content.

`gtag learn` and `gtag-train musicnn-head` both fit heads on these embeddings, and the exported
model (backbone + head, ``gtag.models.head.attach``) computes the very same ones at tag time: the backbone
is the shipped musicnn model's graph cut at its ``embedding`` output.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gtag.audio import decode as audio
from gtag.audio import musicnn_input, spans
from gtag.models.runtime import KIND_MUSICNN, ModelError, default_models_dir, read_manifest, sha256_file

BACKBONE_MODEL = "musicnn"  # the shipped model whose graph is the backbone
# Windows kept per track in the cache (evenly spread): a head learns a track's genre from a dozen
# 3 s windows as well as from all of them, and the cache stays ~50 KB per track (float16).
CACHED_WINDOWS = 16

def content_key(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes: the same audio under another name or after a move is a hit."""
    return sha256_file(path)


def spread(n: int, k: int = CACHED_WINDOWS) -> np.ndarray:
    """Indices of ``k`` evenly spread rows out of ``n`` (all of them when n <= k): the rule of
    ``gtag.audio.spans.spread``, which picks the windows `gtag tag` analyses on long tracks."""
    return spans.spread(n, k)


class Backbone:
    """ONNX Runtime session on the shipped backbone (float model: the same embedding everywhere)."""

    def __init__(self, models_dir: str | os.PathLike | None = None, name: str = BACKBONE_MODEL, threads: int = 0):
        import onnx
        import onnxruntime as ort

        from gtag.models.head import EMBEDDING_OUTPUT, backbone

        self.root = Path(models_dir) if models_dir else default_models_dir()
        specs = {s.name: s for s in read_manifest(self.root)}
        if name not in specs:
            raise ModelError(f"no backbone model {name!r} in {self.root}")
        self.spec = specs[name]
        path = self.root / self.spec.file
        if not path.is_file() or sha256_file(path) != self.spec.sha256:
            raise ModelError(f"backbone {path} is missing or does not match its manifest")
        self.full = onnx.load(str(path))
        self.graph = backbone(self.full)
        # The cache key is the backbone's own graph, not the model file: refitting the shipped head
        # changes the file but not one embedding.
        self.sha256 = hashlib.sha256(self.graph.SerializeToString()).hexdigest()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:  # `embed_files` on N threads: one ONNX Runtime thread each, not N x the cores
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.output = EMBEDDING_OUTPUT
        self.hop = int(round(self.spec.hop_seconds * audio.SAMPLE_RATE))
        self.max_batch = int(self.spec.extra.get("max_batch") or 32)

    @property
    def key(self) -> str:
        return f"{self.spec.name}:{self.sha256[:16]}:{self.spec.hop_seconds:g}"

    def embed_patches(self, x: np.ndarray) -> np.ndarray:
        """(windows, dims) float32 embeddings of musicnn log-mel patches."""
        parts = [self.session.run([self.output], {self.spec.input_name or "musicnn_mel": x[i:i + self.max_batch]})[0]
                 for i in range(0, len(x), self.max_batch)]
        return np.concatenate(parts).astype(np.float32)

    def embed_samples(self, y: np.ndarray) -> np.ndarray:
        """(windows, dims) float32 embeddings of every window of 22,050 Hz mono samples."""
        return self.embed_patches(musicnn_input.musicnn_patches(y, audio.SAMPLE_RATE, self.hop))

    def embed_file(self, path: str | os.PathLike, windows: int = CACHED_WINDOWS) -> np.ndarray:
        """Embeddings of ``windows`` evenly spread windows of a file (every window of a shorter one),
        the windows `gtag tag --max-windows` would pick; as there, only they are decoded where the
        file allows. Raises ``gtag.audio.decode.AudioLoadError`` (``SilentAudio`` for silence)."""
        from gtag.predict.pipeline import AnalysisConfig, analyse_file

        config = AnalysisConfig(hops=((KIND_MUSICNN, self.hop),), max_windows=windows)
        return self.embed_patches(analyse_file(Path(path), config).batches[KIND_MUSICNN])

    def embed_files(self, paths: Iterable[str | os.PathLike], jobs: int = 1) -> Iterator[np.ndarray | Exception]:
        """``embed_file`` of each path, in order: its embeddings, or the exception it raised.

        With ``jobs`` > 1 that many files are decoded and embedded at once on threads: decoding
        (libsndfile, PyAV, soxr), the mel (numpy) and ONNX Runtime release the GIL, so threads go
        as fast as processes here (40 one-minute tracks on 2 cores: 9.3 s on one thread, 6.5 s on
        two, each with a one-thread session) without a second copy of the model. At most 2 x jobs
        files are in flight, so a huge library costs no memory; stopping the iteration (Ctrl-C)
        waits only for the files being embedded."""
        if jobs <= 1:
            for p in paths:
                try:
                    yield self.embed_file(p)
                except Exception as exc:  # the caller reports it and goes on with the next file
                    yield exc
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(jobs, thread_name_prefix="gtag-embed")
        pending: deque = deque()
        it = iter(paths)
        try:
            while True:
                for p in it:
                    pending.append(pool.submit(self.embed_file, p))
                    if len(pending) >= 2 * jobs:
                        break
                if not pending:
                    return
                fut = pending.popleft()
                exc = fut.exception()
                if exc is not None and not isinstance(exc, Exception):
                    raise exc  # KeyboardInterrupt, SystemExit: not a file's error
                yield exc if exc is not None else fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def cached_embeddings(bb: Backbone, cache, paths: list, jobs: int = 1
                      ) -> Iterator[tuple[int, np.ndarray | Exception, bool]]:
    """``(index, embeddings or the exception met, computed now)`` for every path: what ``cache``
    (a ``gtag.run.cache.EmbeddingCache``) holds for the file's content first, then the rest embedded
    ``jobs`` at a time (``Backbone.embed_files``) and stored. Computed embeddings are returned as the
    cache stores them (float16-rounded), so a first run and a re-run learn the same model. What
    `gtag learn` and `gtag-train musicnn-head` both read. Closing the iterator (Ctrl-C) stops the
    embedding; what was stored stays stored."""
    from contextlib import closing

    missing: list[tuple[int, str]] = []
    for i, p in enumerate(paths):
        try:
            key = content_key(p)
            e = cache.get(key, bb.key)
        except OSError as exc:  # unreadable file
            yield i, exc, False
            continue
        if e is None:
            missing.append((i, key))
        else:
            yield i, e, False
    with closing(bb.embed_files((paths[i] for i, _ in missing), jobs)) as done:
        for (i, key), e in zip(missing, done):
            yield (i, e, False) if isinstance(e, Exception) else (i, cache.put(key, bb.key, e), True)
