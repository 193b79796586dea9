"""Writing models into ``exported_models/``: the ONNX file, its metadata and its manifest entry."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import gtag
from gtag.models.runtime import MANIFEST_FORMAT, MANIFEST_NAME, sha256_file


def set_onnx_metadata(model, meta: dict[str, Any]) -> None:
    """Store labels and preprocessing in the ONNX file itself (``metadata_props``), JSON-encoded."""
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def save_onnx(model, path: Path, meta: dict[str, Any]) -> str:
    """Save ``model`` (an onnx.ModelProto) with ``meta`` in its metadata; return the file's sha256."""
    import onnx

    set_onnx_metadata(model, meta)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, model.SerializeToString())
    return sha256_file(path)


# A model's vote weight is chosen by `gtag-train ensemble` alone (``set_manifest_fields``): a trainer
# records its metrics, never promotes itself into the vote (retraining one model must not change
# what the default run writes). A new model enters with weight 0, which the default run skips.
NEW_MODEL_WEIGHT = 0.0
# Fields another step owns, kept when a trainer rewrites its entry: the vote (``gtag-train ensemble``)
# and the taxonomy's node scorers (``gtag-train taxonomy``, which reads MSD tags a head retrain
# leaves as they were).
KEPT_FIELDS = ("weight", "ensemble", "taxonomy")


def update_manifest(out_dir: Path, entry: dict[str, Any]) -> Path:
    """Insert or replace the entry named ``entry['name']`` in ``out_dir/manifest.json``. The entry
    keeps the vote ``weight`` it had (``NEW_MODEL_WEIGHT`` when new) and the other ``KEPT_FIELDS``;
    those fields in ``entry`` are ignored, as only their own steps set them."""
    path = out_dir / MANIFEST_NAME
    data = {"format": MANIFEST_FORMAT, "models": []}
    if path.is_file():
        data = json.loads(path.read_text())
    old = next((m for m in data.get("models", []) if m.get("name") == entry["name"]), {})
    models = [m for m in data.get("models", []) if m.get("name") != entry["name"]]
    kept = {k: old[k] for k in KEPT_FIELDS if k in old}
    entry = {**{k: v for k, v in entry.items() if k not in KEPT_FIELDS}, "weight": NEW_MODEL_WEIGHT, **kept,
             "gtag_version": gtag.__version__,
             "exported": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    models.append(entry)
    order = {"rf": 0, "knn": 1, "cnn": 2, "wavenet": 3}
    models.sort(key=lambda m: (order.get(m["name"], 9), m["name"]))
    data["models"] = models
    _atomic_write_bytes(path, (json.dumps(_jsonable(data), indent=2) + "\n").encode())
    return path


def training_record(ds, tracks, windows: int, fitted_on: str, seed: int, command: str,
                    **extra: Any) -> dict[str, Any]:
    """The manifest's ``training`` block of a model fitted on ``tracks`` of dataset ``ds``: which
    data (the folder actually used, not an assumed one), split, variants, sizes, seed, command."""
    return {
        "data": Path(ds.root).resolve().name,
        "split": "splits/train.txt and splits/valid.txt of the dataset (for GTZAN: the Kereliuk/Sturm "
                 "fault-filtered artist-disjoint lists)",
        "fitted_on": fitted_on,
        "variants": sorted({t.variant for t in tracks}),
        "tracks": len(tracks),
        "windows": int(windows),
        **extra,
        "seed": seed,
        "command": command,
    }


def set_manifest_fields(out_dir: Path, fields: dict[str, dict[str, Any]]) -> Path:
    """Set ``fields[name]`` on the existing entries of ``out_dir/manifest.json`` (e.g. ensemble
    weights), leaving each entry's export time and everything else as it was."""
    path = out_dir / MANIFEST_NAME
    data = json.loads(path.read_text())
    missing = set(fields) - {m.get("name") for m in data.get("models", [])}
    if missing:
        raise KeyError(f"{path}: no entries named {sorted(missing)}")
    for m in data["models"]:
        m.update(fields.get(m["name"], {}))
    _atomic_write_bytes(path, (json.dumps(_jsonable(data), indent=2) + "\n").encode())
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped files must be readable by everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def quantize_nodes(src: Path, dst: Path, calibration: np.ndarray, input_name: str, prefixes: tuple[str, ...],
                   meta: dict[str, Any], op_type: str = "Conv") -> str:
    """Write ``dst``: ``src`` with its ``op_type`` nodes whose names start with one of ``prefixes``
    (ONNX scope names, e.g. ``/timbral.``) in int8 (ONNX Runtime static QDQ quantisation:
    per-channel int8 weights with 7-bit range, uint8 activations whose ranges are the min/max over
    ``calibration`` inputs), with ``meta`` as its metadata; returns its sha256. The rest of the
    graph stays float32."""
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._it = iter({input_name: calibration[i:i + 8].astype(np.float32)}
                            for i in range(0, len(calibration), 8))

        def get_next(self):
            return next(self._it, None)

    def not_preprocessing_advice(record: logging.LogRecord) -> bool:
        # quantize_static always suggests its shape-inference pre-processing; our graphs come from
        # torch.onnx.export with static shapes and the caller checks the result against the float
        # model, so the advice is noise in a training log.
        return "pre-processing" not in record.getMessage()

    nodes = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == op_type and n.name.startswith(prefixes)]
    if not nodes:
        raise ValueError(f"{src.name}: no {op_type} node named {prefixes}* to quantise")
    root = logging.getLogger()
    root.addFilter(not_preprocessing_advice)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q.onnx"
            quantize_static(str(src), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes, calibrate_method=CalibrationMethod.MinMax)
            model = onnx.load(str(out))
    finally:
        root.removeFilter(not_preprocessing_advice)
    return save_onnx(model, dst, meta)


# --------------------------------------------------------------------------------------------------
# Licences of third-party weights shipped in exported_models/
# --------------------------------------------------------------------------------------------------

MUSICNN_LICENCE_FILE = "MUSICNN_LICENSE.md"
MUSICNN_LICENCE_HEADER = """# musicnn: licence and attribution

`musicnn.onnx` contains the pretrained weights of **musicnn** (`MSD_musicnn`, trained on the Million
Song Dataset), converted from the TensorFlow checkpoint in the PyPI wheel `musicnn-0.1.0` by
`training/musicnn.py`, with a genre head (`gtag/models/head.py`) fitted on top by `training/transfer.py`
(GTZAN) and `training/musicnn_head.py` (GTZAN and real library tracks).

- Jordi Pons and Xavier Serra, "musicnn: Pre-trained convolutional neural networks for music audio
  tagging", Late-breaking/demo session, ISMIR 2019. <https://github.com/jordipons/musicnn>
- Jordi Pons, Oriol Nieto, Matthew Prockup, Erik M. Schmidt, Andreas F. Ehmann and Xavier Serra,
  "End-to-end learning for music audio tagging at scale", ISMIR 2018.

The musicnn code and weights are distributed under the ISC licence, reproduced below as shipped in
the wheel (`musicnn-0.1.0.dist-info/LICENSE.md`). The rest of gtag is under its own licence.

---

"""


def write_musicnn_licence(out_dir: Path, source: Path) -> bool:
    """Write ``out_dir/MUSICNN_LICENSE.md``: attribution, then the wheel's licence text from ``source``
    (saved there by `gtag-train musicnn-convert`). False, and nothing written, when ``source`` is missing."""
    if not Path(source).is_file():
        return False
    text = MUSICNN_LICENCE_HEADER + Path(source).read_text().strip() + "\n"
    _atomic_write_bytes(Path(out_dir) / MUSICNN_LICENCE_FILE, text.encode())
    return True
