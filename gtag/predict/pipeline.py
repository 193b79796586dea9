"""From a file path to a prediction: decode once, analyse once, one batched ONNX call per model."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gtag.audio import decode as audio
from gtag.audio import features, musicnn_input, spans
from gtag.genres import hierarchy
from gtag.genres.taxonomy import STYLE
from gtag.models import vote
from gtag.models.runtime import KIND_FEATURES, KIND_LOG_MEL, KIND_MUSICNN, KIND_WAVEFORM, ModelError, OnnxModel
from gtag.predict.prediction import Prediction


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute from a track; picklable, so worker processes can do the heavy part."""

    # (model kind, samples between its window starts), one pair per input kind to build. Each
    # kind has its own hop: musicnn reads non-overlapping 3 s patches (its authors' default) while
    # the cheaper models vote every 1.5 s.
    hops: tuple[tuple[str, int], ...]
    # At most this many windows per kind, evenly spread over a longer track (0: every window);
    # see gtag.audio.spans. A track with no more windows than this is analysed whole, as with 0.
    max_windows: int = 0
    # Keep the audio of musicnn's windows (``Analysed.window_audio``) for a second opinion asked after the
    # vote (``Predictor``: the abstain rule's second model reads those windows, no second decode).
    keep_spans: bool = False


@dataclass(frozen=True)
class Analysed:
    """A decoded and analysed track, ready for inference."""

    starts: dict[str, np.ndarray]  # model kind -> start sample of each of its windows
    batches: dict[str, np.ndarray]  # model kind -> input batch
    duration: float  # seconds of the whole file
    truncated: bool  # only part of a long file was analysed
    # With ``AnalysisConfig.keep_spans``: the 22,050 Hz audio of musicnn's windows (and a margin),
    # and the length in samples of the signal they were windowed from.
    window_audio: tuple[spans.Span, ...] = ()
    n_samples: int = 0


def analyse_file(path: str | os.PathLike, config: AnalysisConfig) -> Analysed:
    """Decode and analyse one file (no ONNX): the part worth running in parallel processes."""
    hops = dict(config.hops)
    if config.max_windows and set(hops) == {KIND_MUSICNN}:
        # musicnn alone (the default vote) reads its spread windows straight from the file.
        analysed = _analyse_spans(path, hops[KIND_MUSICNN], config.max_windows, config.keep_spans)
        if analysed is not None:
            return analysed
    decoded = audio.load_audio(Path(path))
    y, sr = decoded.samples, decoded.sample_rate
    if audio.is_silent(y):
        raise audio.SilentAudio(f"{path}: silent (below -60 dBFS), no genre to hear")
    batches: dict[str, np.ndarray] = {}
    # Every kind windows the same (tiled when short) signal: gtag.audio.decode.window_starts.
    n = max(y.size, audio.WINDOW_SAMPLES)
    every = {k: audio.window_starts(n, audio.WINDOW_SAMPLES, hop) for k, hop in hops.items()}
    starts = {k: spans.capped_starts(n, hop, config.max_windows) for k, hop in hops.items()}
    # The 57 features and the log-mel patches share one STFT when they share a hop.
    shared = [k for k in (KIND_FEATURES, KIND_LOG_MEL) if k in hops]
    for hop in sorted({hops[k] for k in shared}):
        same = [k for k in shared if hops[k] == hop]
        an = features.analyze(y, sr, hop, want_features=KIND_FEATURES in same, want_mel=KIND_LOG_MEL in same)
        if KIND_FEATURES in same:
            batches[KIND_FEATURES] = an.features
        if KIND_LOG_MEL in same:
            batches[KIND_LOG_MEL] = an.log_mel[:, None, :, :]
    if KIND_WAVEFORM in hops:
        frames = audio.frame_signal(y, audio.WINDOW_SAMPLES, hops[KIND_WAVEFORM])
        batches[KIND_WAVEFORM] = np.ascontiguousarray(frames)[:, None, :]
    kept: tuple[spans.Span, ...] = ()
    if KIND_MUSICNN in hops:
        picked = starts[KIND_MUSICNN]
        spread = len(picked) < len(every[KIND_MUSICNN])
        if config.keep_spans or spread:  # views of the decoded track, tiled as every kind's windows are
            windows = spans.spans_from_signal(audio.fit_to_window(y), picked)
            kept = tuple(windows) if config.keep_spans else ()
        if spread:  # spread windows: only they are transformed
            batches[KIND_MUSICNN] = musicnn_input.musicnn_span_patches(windows, picked)
        else:
            batches[KIND_MUSICNN] = musicnn_input.musicnn_patches(y, sr, hops[KIND_MUSICNN])
    for k, b in batches.items():
        if len(b) != len(starts[k]):  # every window computed, the spread ones kept
            assert len(b) == len(every[k]), (k, len(b), len(every[k]))
            batches[k] = b[spans.spread(len(b), config.max_windows)]
    return Analysed(starts, batches, decoded.duration, decoded.truncated, kept, n if kept else 0)


def _analyse_spans(path: str | os.PathLike, hop: int, max_windows: int, keep_spans: bool = False) -> Analysed | None:
    """musicnn's spread windows of a long file, decoding only them (``gtag.audio.spans.read_spans``);
    None when the file must be decoded whole (short enough to analyse whole, a length libsndfile
    does not declare, no seeking, a header that overstates the length)."""
    n = spans.declared_samples(path)
    if n is None:
        return None
    starts = spans.capped_starts(n, hop, max_windows)
    if len(starts) == len(audio.window_starts(max(n, audio.WINDOW_SAMPLES), audio.WINDOW_SAMPLES, hop)):
        return None
    try:
        parts = spans.read_spans(path, starts)
    except Exception:  # any decoding trouble: load_audio decodes it whole and reports what fails
        return None
    if parts is None:
        return None
    if audio.is_silent(np.concatenate([p.samples for p in parts])):
        raise audio.SilentAudio(f"{path}: silent (below -60 dBFS), no genre to hear")
    return Analysed({KIND_MUSICNN: starts}, {KIND_MUSICNN: musicnn_input.musicnn_span_patches(parts, starts)},
                    n / audio.SAMPLE_RATE, False, tuple(parts) if keep_spans else (), n if keep_spans else 0)


def second_opinion(model: OnnxModel, analysed: Analysed) -> np.ndarray:
    """A log-mel model's track probabilities (its labels' order) on the audio of musicnn's windows
    (``Analysed.window_audio``, kept with ``AnalysisConfig.keep_spans``): the abstain rule's second
    opinion, the same windows musicnn heard, no second decode."""
    if not analysed.window_audio:
        raise ValueError("no window audio kept (AnalysisConfig.keep_spans)")
    patches = features.log_mel_span_patches(list(analysed.window_audio), analysed.starts[KIND_MUSICNN],
                                            analysed.n_samples)
    return vote.track_probabilities(model.predict(patches[:, None, :, :]))


@dataclass(frozen=True)
class ModelSource:
    """Enough to rebuild a Predictor in another process (it holds no ONNX sessions itself)."""

    models_dir: str  # folder with manifest.json
    names: tuple[str, ...]  # the models, in vote order
    hop_seconds: float | None  # one hop for every model, or None: each model's manifest hop
    weights: tuple[tuple[str, float], ...] = ()  # vote weight per model, as the parent votes
    cpu_variant: bool = True  # load models' CPU variants, as the parent did
    max_windows: int = 0  # windows analysed per track and kind (0: all), as the parent analyses


_WORKER_PREDICTORS: dict[ModelSource, "Predictor"] = {}

def predict_in_worker(path: str | os.PathLike, source: ModelSource) -> Prediction:
    """Decode, analyse and predict one file in a pool worker. Each worker loads the models once
    (CPU, one thread per session) and keeps them, so `--jobs N` scales the models' cost too, not
    only decoding and features (a parent running every model would be the bottleneck)."""
    predictor = _WORKER_PREDICTORS.get(source)
    if predictor is None:
        from gtag.models.runtime import load_models

        models = load_models(source.models_dir, list(source.names), device="cpu", threads=1,
                             cpu_variant=source.cpu_variant)
        predictor = _WORKER_PREDICTORS[source] = Predictor(models, source.hop_seconds, dict(source.weights) or None,
                                                                    source.max_windows)
    return predictor.predict_file(path)


class Predictor:
    """Keeps ONNX sessions alive across files and predicts one track at a time."""

    def __init__(self, models: list[OnnxModel], hop_seconds: float | None = None,
                 weights: dict[str, float] | None = None, max_windows: int = 0):
        """``weights``: vote weight per model name (default: each manifest entry's ``weight``);
        ``max_windows``: windows analysed per track and kind, spread over longer tracks (0: all;
        `gtag` itself uses ``gtag.config.DEFAULT_MAX_WINDOWS``)."""
        if max_windows < 0:
            raise ValueError(f"max_windows must be 0 (all) or more, not {max_windows}")
        if not models:
            raise ValueError("no models to predict with")
        rates = {m.spec.sample_rate for m in models}
        windows = {m.spec.window_seconds for m in models}
        if rates != {audio.SAMPLE_RATE} or windows != {audio.WINDOW_SECONDS}:
            raise ValueError(f"models expect {rates} Hz / {windows} s windows; gtag analyses "
                             f"{audio.SAMPLE_RATE} Hz / {audio.WINDOW_SECONDS} s")
        self.models = models
        self.hop_seconds = hop_seconds
        self.labels = {m.spec.name: m.spec.labels for m in models}
        self.weights = {m.spec.name: float((weights or {}).get(m.spec.name, m.spec.weight)) for m in models}
        # Each kind's hop: the override, else its model's manifest hop (the finest, should two
        # models of one kind differ).
        hops: dict[str, int] = {}
        for m in models:
            hop = int(round((hop_seconds or m.spec.hop_seconds) * audio.SAMPLE_RATE))
            hops[m.spec.kind] = min(hop, hops.get(m.spec.kind, hop))
        self._rule = self._find_abstain_rule()
        self.nodes = self._load_node_rules()
        # The abstain rule's second opinion: a model that does not vote, asked only about tracks whose
        # vote falls between the rule's two thresholds, on the audio of the rule model's windows.
        self.second: OnnxModel | None = self._load_second_opinion()
        self.config = AnalysisConfig(hops=tuple(sorted(hops.items())), max_windows=max_windows,
                                     keep_spans=self.second is not None)

    @property
    def signature(self) -> str:
        """Identifies what produced a prediction (models, weights, hop, version) for the cache."""
        import hashlib

        from gtag import __version__

        # A cap is part of what was computed; without one the signature is what it always was.
        cap = [f"max_windows={self.config.max_windows}"] if self.config.max_windows else []
        parts = [__version__, repr(self.config.hops), *cap] + [f"{m.spec.name}:{m.sha256}:{self.weights[m.spec.name]}"
                                                         for m in self.models]
        if self.second is not None:  # a cached prediction holds the second opinion where it was asked
            parts.append(f"second:{self.second.spec.name}:{self.second.sha256}")
        if self.nodes is not None:  # cached predictions hold the MSD tags the node scorers read
            parts.append("tags")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]

    def infer(self, path: str | os.PathLike, analysed: Analysed) -> Prediction:
        """Run every model on its batch (one call each) and vote."""
        window_probs: dict[str, np.ndarray] = {}
        track: dict[str, np.ndarray] = {}
        tags: dict[str, list[tuple[str, float]]] = {}
        signals: dict[str, dict[str, float]] = {}
        for m in self.models:
            p, scores, sig = m.predict_all(analysed.batches[m.spec.kind])
            window_probs[m.spec.name] = p
            track[m.spec.name] = vote.track_probabilities(p)
            if sig:  # a track is as unknown / as far as its windows are on average
                signals[m.spec.name] = {k: float(np.mean(v)) for k, v in sig.items()}
            if scores is not None:  # tag scores averaged over the windows, as musicnn's taggram is
                mean = scores.mean(axis=0)
                tags[m.spec.name] = [(m.tag_labels[i], float(mean[i])) for i in np.argsort(-mean, kind="stable")]
        labels, probs = vote.combine(track, self.labels, self.weights)
        aligned = {n: vote.align(p, self.labels[n], labels) for n, p in track.items()}
        rule = self._rule
        if (self.second is not None and rule is not None and analysed.window_audio
                and rule.needs_second_opinion(float(np.max(probs)), signals.get(rule.model, {}))):
            # not a vote: shown with the models' probabilities, read by abstain_reason
            aligned[self.second.spec.name] = vote.align(second_opinion(self.second, analysed), self.second.spec.labels, labels)
        # Genre over time: the weighted ensemble of each window, on the finest hop's windows; a
        # model with a coarser hop contributes the window of its own that starts nearest.
        kind_of = {m.spec.name: m.spec.kind for m in self.models}
        grid = max((analysed.starts[k] for k in sorted(set(kind_of.values()))), key=len)
        w = vote.model_weights(list(window_probs), self.weights)
        per_window = sum(wi * vote.align(window_probs[n], self.labels[n], labels)[
                             vote.nearest_windows(grid, analysed.starts[kind_of[n]])]
                         for wi, n in zip(w, window_probs))
        return Prediction(
            path=str(path),
            labels=labels,
            probabilities=probs,
            models=aligned,
            window_starts=grid / audio.SAMPLE_RATE,
            window_genres=[labels[i] for i in np.argmax(per_window, axis=1)],
            duration=analysed.duration,
            truncated=analysed.truncated,
            tags=tags,
            signals=signals,
        )

    def _find_abstain_rule(self) -> vote.AbstainRule | None:
        ranked = sorted((m for m in self.models if isinstance(m.spec.extra.get("abstain"), dict)),
                        key=lambda m: -self.weights[m.spec.name])
        if not ranked:
            return None
        return vote.AbstainRule.from_manifest(ranked[0].spec.name, ranked[0].spec.extra["abstain"])

    def _load_node_rules(self) -> hierarchy.NodeRules | None:
        """The taxonomy's node scorers of the first model that has them (manifest ``taxonomy``) and
        MSD tags to feed them; None: genres come from the head's vote alone."""
        from gtag.genres.taxonomy import default_taxonomy

        for m in self.models:
            block = m.spec.extra.get("taxonomy")
            if isinstance(block, dict) and m.tag_labels:
                try:
                    return hierarchy.NodeRules.from_manifest(block, default_taxonomy(), m.tag_labels, m.spec.name)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ModelError(f"model {m.spec.name}: bad taxonomy block in its manifest ({exc})") from exc
        return None

    def decide(self, pred: Prediction, depth: str = STYLE, enabled: frozenset[str] = frozenset(),
               allowed=lambda name: True) -> hierarchy.Decision | None:
        """The genre > style decision for ``pred`` (gtag.genres.hierarchy); None without node scorers or
        without the tags they read (then the head's rule alone decides)."""
        tags = pred.tags.get(self.nodes.model) if self.nodes is not None else None
        if not tags:
            return None
        from gtag.genres.taxonomy import default_taxonomy

        tax = default_taxonomy()
        scores = self.nodes.scores(dict(tags))
        sure = hierarchy.sure_nodes(scores, self.nodes, enabled)
        head_node, reason = tax.by_gtzan.get(pred.genre), self.abstain_reason(pred)
        if reason is not None and self._held_back_for_probability(pred):
            agreed = hierarchy.agreeing_node(head_node, pred.confidence, scores, self.nodes)
            if agreed is not None:  # the genre's own MSD evidence settles what the head was unsure of
                d = hierarchy.decide(head_node, pred.confidence, None, {**sure, agreed: scores[agreed]}, tax,
                                     depth, allowed)
                return replace(d, source=hierarchy.AGREE) if d.path else d
        return hierarchy.decide(head_node, pred.confidence, reason, sure, tax, depth, allowed)

    def _held_back_for_probability(self, pred: Prediction) -> bool:
        """Whether the rule held ``pred``'s genre back only because it was not probable enough (its
        model heard one of its genres, and music like what it learned from)."""
        rule = self._rule
        return rule is not None and vote.abstain_reason(1.0, pred.signals.get(rule.model, {}), rule) is None

    def taxonomy_node(self, pred: Prediction) -> str | None:
        """The taxonomy node of the vote's genre (None: no node scorers, or a label outside it)."""
        if self.nodes is None:
            return None
        from gtag.genres.taxonomy import default_taxonomy

        return default_taxonomy().by_gtzan.get(pred.genre)

    def node_scores(self, pred: Prediction) -> dict[str, float]:
        """Every scorable node's probability for ``pred`` (empty without node scorers or tags)."""
        tags = pred.tags.get(self.nodes.model) if self.nodes is not None else None
        return self.nodes.scores(dict(tags)) if tags else {}

    def _load_second_opinion(self) -> OnnxModel | None:
        """The rule's second model, loaded as the rule's own model was (None: the rule has none). A
        second model gtag cannot feed from the rule model's windows (only the log-mel CNN can be), or
        that is already voting, needs no extra session; one the manifest lacks is an error."""
        rule = self._rule
        if rule is None or rule.second_model is None:
            return None
        owner = next(m for m in self.models if m.spec.name == rule.model)
        if owner.spec.kind != KIND_MUSICNN or rule.second_model in self.labels:
            return None
        from gtag.models.runtime import ModelError, load_models

        (second,) = load_models(Path(owner.path).parent, [rule.second_model], **owner.load_options)
        if second.spec.kind != KIND_LOG_MEL:
            raise ModelError(f"model {rule.model}: its second opinion {rule.second_model} is not a log-mel model")
        return second

    @property
    def abstain_rule(self) -> vote.AbstainRule | None:
        """The abstain thresholds of the vote: those of the heaviest-voting model whose manifest
        entry has them (None: no model says when to abstain)."""
        return self._rule

    def abstain_reason(self, pred: Prediction) -> str | None:
        """Why ``pred`` should be written nowhere under the manifest's rule (None: write it)."""
        rule = self._rule
        if rule is None:
            return None
        return vote.abstain_reason(pred.confidence, pred.signals.get(rule.model, {}), rule,
                                   self._second_genre(pred), pred.genre)

    def _second_genre(self, pred: Prediction) -> str | None:
        """The top genre of the rule's second opinion on ``pred`` (None: not asked, or no rule)."""
        rule = self._rule
        second = pred.models.get(rule.second_model) if rule is not None and rule.second_model else None
        return pred.labels[int(np.argmax(second))] if second is not None else None

    def agreed_by(self, pred: Prediction) -> str | None:
        """The second-opinion model whose agreeing lets ``pred`` be written below the rule's
        ``min_probability`` (None: written on its own, or not written)."""
        rule = self._rule
        if rule is None or rule.second_model is None or pred.confidence >= rule.min_probability:
            return None
        return rule.second_model if self.abstain_reason(pred) is None else None

    def min_probability(self, pred: Prediction) -> float:
        """The probability a written genre of ``pred`` needs under the manifest's rule: its
        ``min_probability``, or its second opinion's where that model names the voted genre; 0
        without a rule."""
        rule = self._rule
        if rule is None:
            return 0.0
        if rule.second_min_probability is not None and self._second_genre(pred) == pred.genre:
            return min(rule.min_probability, rule.second_min_probability)
        return rule.min_probability

    @property
    def source(self) -> ModelSource | None:
        """How a worker process can rebuild this predictor (CPU sessions of one thread each), or
        None when it cannot or should not: models on a GPU stay in one process."""
        if any("CUDAExecutionProvider" in m.session.get_providers() for m in self.models):
            return None
        dirs = {str(Path(m.path).parent) for m in self.models}
        if len(dirs) != 1:
            return None
        variants = all(m.variant is not None or not m.spec.extra.get("cpu_variant") for m in self.models)
        return ModelSource(dirs.pop(), tuple(m.spec.name for m in self.models), self.hop_seconds,
                           tuple(self.weights.items()), variants, self.config.max_windows)

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """Decode, analyse and predict one file. Raises AudioLoadError / ValueError on bad input."""
        return self.infer(path, analyse_file(path, self.config))
