"""The models gtag ships: ONNX files and ``manifest.json`` (data only; see the README)."""
