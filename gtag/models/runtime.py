"""Shipped models: the manifest that describes them and thin ONNX Runtime wrappers.

A model is usable only with what its manifest entry says: labels in output order, sample rate,
window and hop, which input to build (57 features, log-mel patches or raw waveform) and the sha256
of the file, checked before the file is loaded so a corrupt or swapped model is refused.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where arrays are handled: `gtag models` and --help need none
    import numpy as np

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
# Model kinds, i.e. which input a model takes; gtag.predict builds each from one track analysis.
KIND_FEATURES = "features"  # (batch, 57) float32, columns in gtag.audio.features.FEATURE_NAMES order
KIND_LOG_MEL = "log_mel"  # (batch, 1, N_MELS, WINDOW_FRAMES) float32, gtag.audio.features.log_mel_patches
KIND_WAVEFORM = "waveform"  # (batch, 1, WINDOW_SAMPLES) float32 raw samples at the sample rate
# (batch, MUSICNN_FRAMES, MUSICNN_N_MELS) float32, gtag.audio.musicnn_input.musicnn_patches (16 kHz log-mel
# computed from the 22,050 Hz track): the pretrained musicnn transfer model
KIND_MUSICNN = "musicnn_mel"
KINDS = (KIND_FEATURES, KIND_LOG_MEL, KIND_WAVEFORM, KIND_MUSICNN)
# Optional second output of a model: per-window tag scores (musicnn's 50 MSD tags), whose names the
# manifest entry lists under "msd_labels"; `gtag predict` shows them.
TAG_OUTPUT = "msd_tags"
# Optional per-window outputs that say how unlike its genres a window is (gtag.models.head): the share of a
# reject class ("unknown") and the distance to the nearest genre ("ood_distance"). Averaged per track,
# they decide with the manifest's "abstain" thresholds whether gtag writes a genre at all.
SIGNAL_OUTPUTS = ("unknown", "ood_distance")


class ModelError(Exception):
    """A model or its manifest is missing, corrupt or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: everything needed to feed a model and read its output."""

    name: str  # short id used on the command line (--model rf)
    file: str  # ONNX file name, relative to the manifest
    sha256: str  # hex digest of the file, checked at load time
    kind: str  # one of KINDS
    labels: tuple[str, ...]  # genre of each output column, in order
    sample_rate: int  # Hz of the audio the model was trained on
    window_seconds: float  # length of one analysed window
    hop_seconds: float  # hop between windows used at tag time
    weight: float = 1.0  # weight in the ensemble vote
    description: str = ""  # one line for `gtag models`
    input_name: str | None = None  # ONNX input name (read from the file when absent)
    feature_names: tuple[str, ...] = ()  # column order for KIND_FEATURES
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics, for display
    extra: dict[str, Any] = field(default_factory=dict)  # everything else in the entry

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        if not isinstance(d, dict):
            raise ModelError(f"a manifest entry must be an object, not {type(d).__name__}")
        _validate_entry(d)
        known = {
            "name", "file", "sha256", "kind", "labels", "sample_rate", "window_seconds",
            "hop_seconds", "weight", "description", "input_name", "feature_names", "metrics",
        }  # fmt: skip
        missing = {"name", "file", "sha256", "kind", "labels", "sample_rate", "window_seconds"} - d.keys()
        if missing:
            raise ModelError(f"manifest entry {d.get('name', '?')} lacks {sorted(missing)}")
        if d["kind"] not in KINDS:
            raise ModelError(f"model {d['name']}: unknown kind {d['kind']!r}")
        return cls(
            name=d["name"],
            file=d["file"],
            sha256=d["sha256"],
            kind=d["kind"],
            labels=tuple(d["labels"]),
            sample_rate=int(d["sample_rate"]),
            window_seconds=float(d["window_seconds"]),
            hop_seconds=float(d.get("hop_seconds", d["window_seconds"] / 2)),
            weight=float(d.get("weight", 1.0)),
            description=d.get("description", ""),
            input_name=d.get("input_name"),
            feature_names=tuple(d.get("feature_names", ())),
            metrics=dict(d.get("metrics", {})),
            extra={k: v for k, v in d.items() if k not in known},
        )


# Bounds of a manifest's values (seconds; windows per ONNX Runtime call): only what no model could mean.
RANGES = {"window_seconds": (0.1, 600.0), "hop_seconds": (0.01, 600.0)}
MAX_BATCH = 65536


def _one_node(labels: list[str]) -> tuple[str, str] | None:
    """Two labels that spell one taxonomy node ("Alt. Rock", "Alternative Rock"): one genre split in two."""
    from gtag.genres.taxonomy import default_taxonomy
    seen: dict[str, str] = {}
    for lab in labels:
        node = default_taxonomy().find(lab)
        if node is not None and seen.setdefault(node.name, lab) != lab:
            return seen[node.name], lab
    return None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str_list(v: Any, min_len: int = 0) -> bool:
    return isinstance(v, list) and len(v) >= min_len and all(isinstance(x, str) and x for x in v)


def _validate_entry(d: dict[str, Any]) -> None:
    """The types and ranges the code relies on, so a bad manifest is one clear ModelError (exit 3)
    when it is read, not a crash on the first file."""
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise ModelError(f"manifest entry {str(name)[:40]!r}: 'name' must be a non-empty string")
    problems = []
    for key in ("file", "sha256"):
        if key in d and not (isinstance(d[key], str) and d[key]):
            problems.append(f"'{key}' must be a non-empty string")
    if "file" in d and isinstance(d["file"], str) and (Path(d["file"]).is_absolute() or ".." in Path(d["file"]).parts):
        problems.append("'file' must name a file inside the models folder")
    if "kind" in d and (not isinstance(d["kind"], str) or d["kind"] not in KINDS):
        problems.append(f"unknown kind {str(d['kind'])[:40]!r}")
    if "labels" in d:
        labels = d["labels"]
        if not _str_list(labels, 2) or len(set(labels)) != len(labels):
            problems.append("'labels' must be a list of at least two distinct non-empty strings")
        elif (pair := _one_node(labels)) is not None:
            problems.append(f"labels {pair[0]!r} and {pair[1]!r} are one genre in gtag's taxonomy")
    if "sample_rate" in d and not (isinstance(d["sample_rate"], int) and not isinstance(d["sample_rate"], bool)
                                   and d["sample_rate"] > 0):
        problems.append("'sample_rate' must be a positive integer")
    for key, (low, high) in RANGES.items():
        # Ranges, not only signs: a hop of 1e-9 s is 0 samples (a division by zero on the first
        # file), and a window of an hour or a batch of a billion windows is no model gtag can run.
        if key in d and not (_is_num(d[key]) and low <= d[key] <= high):
            problems.append(f"'{key}' must be a number from {low:g} to {high:g}")
    if "weight" in d and not (_is_num(d["weight"]) and d["weight"] >= 0):
        problems.append("'weight' must be a number of 0 or more")
    for key in ("description", "input_name"):
        if d.get(key) is not None and not isinstance(d[key], str):
            problems.append(f"'{key}' must be a string")
    for key in ("feature_names", "msd_labels"):
        if key in d and not _str_list(d[key]):
            problems.append(f"'{key}' must be a list of non-empty strings")
    if "metrics" in d and not isinstance(d["metrics"], dict):
        problems.append("'metrics' must be an object")
    if "max_batch" in d and d["max_batch"] is not None and not (
            isinstance(d["max_batch"], int) and not isinstance(d["max_batch"], bool) and 0 < d["max_batch"] <= MAX_BATCH):
        problems.append(f"'max_batch' must be a whole number from 1 to {MAX_BATCH}")
    variant = d.get("cpu_variant")
    if variant is not None and not (isinstance(variant, dict) and all(
            isinstance(variant.get(k), str) and variant.get(k) for k in ("file", "sha256"))):
        problems.append("'cpu_variant' must be an object with 'file' and 'sha256' strings")
    elif isinstance(variant, dict) and (Path(variant["file"]).is_absolute() or ".." in Path(variant["file"]).parts):
        problems.append("'cpu_variant' file must be inside the models folder")
    if problems:
        raise ModelError(f"model {name[:40]}: " + "; ".join(problems))


def default_models_dir() -> Path:
    """Where the shipped models are: $GTAG_MODELS, else the ``exported_models`` package."""
    env = os.environ.get("GTAG_MODELS")
    if env:
        return Path(env).expanduser()
    try:
        import exported_models

        return Path(exported_models.__file__).resolve().parent
    except ImportError:  # running from a source tree without installing
        return Path(__file__).resolve().parents[2] / "exported_models"


def read_manifest(models_dir: str | os.PathLike | None = None) -> list[ModelSpec]:
    """Parse ``manifest.json`` of ``models_dir`` (default: the shipped models)."""
    root = Path(models_dir) if models_dir else default_models_dir()
    path = root / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no {MANIFEST_NAME} in {root}: train models or pass --models DIR") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, not UTF-8, nested beyond reason
        raise ModelError(f"{path}: invalid JSON ({str(exc)[:200]})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: the top level must be an object, not {type(data).__name__}")
    if data.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path}: unsupported manifest format {str(data.get('format'))[:40]!r}")
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ModelError(f"{path}: 'models' must be a list")
    try:
        specs = [ModelSpec.from_dict(d) for d in entries]
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    if not specs:
        raise ModelError(f"{path}: lists no models")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ModelError(f"{path}: model names must be unique")
    return specs


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True if ONNX Runtime's CUDA provider is installed *and* a CUDA device answers.

    Asking ORT for CUDA on a machine without a GPU logs a long error; probing the driver directly
    first keeps CPU-only machines quiet.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    lib = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(lib)
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return False
        return count.value > 0
    except (OSError, AttributeError):
        return False


def providers_for(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device`` in auto|cpu|cuda (cuda raises if unusable)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if not cuda_usable():
            raise ModelError("--device cuda: no usable CUDA device / onnxruntime-gpu provider")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_usable() else ["CPUExecutionProvider"]


class OnnxModel:
    """An ONNX Runtime session plus its manifest entry; ``predict`` returns probabilities."""

    def __init__(self, spec: ModelSpec, path: Path, device: str = "auto", threads: int = 0, cpu_variant: bool = True):
        import onnxruntime as ort

        self.spec = spec
        # how it was loaded, so a model it consults (its abstain rule's second opinion) loads alike
        self.load_options = {"device": device, "threads": threads, "cpu_variant": cpu_variant}
        providers = providers_for(device)
        sha256 = spec.sha256
        # Optional manifest field "cpu_variant": {"file", "sha256", ...}, the same model made cheaper
        # for CPUs (musicnn: its two big convolutions in int8), used when no GPU runs the session.
        variant = spec.extra.get("cpu_variant")
        self.variant: str | None = None
        if variant and cpu_variant and providers == ["CPUExecutionProvider"]:
            path, sha256, self.variant = path.parent / variant["file"], variant["sha256"], "cpu_variant"
        self.path = path
        if not path.is_file():
            raise ModelError(f"model {spec.name}: file {path} is missing")
        digest = sha256_file(path)
        if digest != sha256:
            raise ModelError(f"model {spec.name}: {path.name} sha256 {digest[:12]}… does not match manifest")
        self.sha256 = digest
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # ORT's idle threads spin by default, burning the cores that decoding (this process's, or a
        # worker's) and other programs need: on a busy 2-core machine musicnn ran 1.7x slower with
        # two spinning threads than with one; without spinning, extra threads cost little.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"model {spec.name}: ONNX Runtime cannot load {path.name}: {exc}") from exc
        inputs = self.session.get_inputs()
        self.input_name = spec.input_name or inputs[0].name
        self.output_name = self._probability_output()
        tag_labels = spec.extra.get("msd_labels")
        has_tags = any(o.name == TAG_OUTPUT for o in self.session.get_outputs())
        self.tag_output = TAG_OUTPUT if tag_labels and has_tags else None
        self.tag_labels: tuple[str, ...] = tuple(tag_labels or ())
        present = {o.name for o in self.session.get_outputs()}
        self.signal_outputs = tuple(n for n in SIGNAL_OUTPUTS if n in present)
        if self.tag_output:
            shape = next(o.shape for o in self.session.get_outputs() if o.name == TAG_OUTPUT)
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(self.tag_labels)):
                raise ModelError(f"model {spec.name}: {TAG_OUTPUT} has shape {shape}, "
                                 f"but msd_labels lists {len(self.tag_labels)} tags")
        meta = self.session.get_modelmeta().custom_metadata_map
        if "labels" in meta and json.loads(meta["labels"]) != list(spec.labels):
            raise ModelError(f"model {spec.name}: labels in the ONNX file differ from the manifest")

    def _probability_output(self) -> str:
        outs = self.session.get_outputs()
        for o in outs:
            if o.name in ("probabilities", "output_probability", "probs"):
                return o.name
        for o in outs:  # fall back to the first float matrix with one column per label
            if "float" in o.type and len(o.shape) == 2 and o.shape[1] in (len(self.spec.labels), None):
                return o.name
        raise ModelError(f"model {self.spec.name}: no probability output among {[o.name for o in outs]}")

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for a batch of inputs, in one ONNX Runtime call."""
        return self.predict_with_tags(batch, tags=False)[0]

    def predict_with_tags(self, batch: np.ndarray, tags: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, when the model has a tag output (``TAG_OUTPUT``) and ``tags``, its
        per-window tag scores ``(n, len(tag_labels))`` from the same ONNX Runtime call (else None)."""
        probs, scores, _ = self.predict_all(batch, tags=tags, signals=False)
        return probs, scores

    def predict_all(self, batch: np.ndarray, tags: bool = True, signals: bool = True
                    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        """``predict_with_tags`` plus the model's per-window abstain signals (``SIGNAL_OUTPUTS``)."""
        import numpy as np

        extra = list(self.signal_outputs) if signals else []
        names = [self.output_name] + ([self.tag_output] if tags and self.tag_output else []) + extra
        batch = np.ascontiguousarray(batch, np.float32)
        # Optional manifest field "max_batch": windows per ONNX Runtime call. A large network's
        # activations grow with the batch (musicnn: ~30 MB per window, so a 10-minute track in one
        # call would take GBs and run slower); such a model is run in chunks of max_batch windows.
        step = int(self.spec.extra.get("max_batch") or 0) or len(batch) or 1
        chunks = [self.session.run(names, {self.input_name: batch[i:i + step]})
                  for i in range(0, max(len(batch), 1), step)]
        res = [np.concatenate([c[k] for c in chunks]) for k in range(len(names))]
        out = np.asarray(res[0], dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != len(self.spec.labels):
            raise ModelError(f"model {self.spec.name}: output shape {out.shape} does not match its labels")
        scores = None
        if tags and self.tag_output:
            scores = np.asarray(res[1], dtype=np.float32)
            if scores.ndim != 2 or scores.shape[1] != len(self.tag_labels):
                raise ModelError(f"model {self.spec.name}: {TAG_OUTPUT} shape {scores.shape} does not match msd_labels")
        sig = {n: np.asarray(v, np.float64).reshape(-1) for n, v in zip(extra, res[len(names) - len(extra):])}
        return out, scores, sig


def load_models(
    models_dir: str | os.PathLike | None = None,
    names: list[str] | None = None,
    device: str = "auto",
    threads: int = 0,
    cpu_variant: bool = True,
) -> list[OnnxModel]:
    """Load the manifest's models (or only ``names``), verifying each file's hash. On a CPU a
    model's ``cpu_variant`` file is used when it has one, unless ``cpu_variant`` is False.

    Without ``names``: the models of the ensemble, i.e. those with a weight above zero (all of them
    if every weight is zero); a model the ensemble leaves out costs time and changes no vote."""
    root = Path(models_dir) if models_dir else default_models_dir()
    specs = select_models(root, names)
    return [OnnxModel(s, root / s.file, device=device, threads=threads, cpu_variant=cpu_variant) for s in specs]


def select_models(models_dir: str | os.PathLike | None = None, names: list[str] | None = None) -> list[ModelSpec]:
    """The manifest entries ``load_models`` loads (``names``, else the ensemble), found without
    ONNX Runtime or reading a model file: `gtag tag` calls it before walking a library, so a
    mistyped ``--model`` or a folder without a manifest is one line at once, not after the walk."""
    specs = read_manifest(Path(models_dir) if models_dir else default_models_dir())
    if not names:
        return [s for s in specs if s.weight > 0] or specs
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ModelError(f"unknown model(s) {unknown}; available: {sorted(by_name)}")
    return [by_name[n] for n in names]
