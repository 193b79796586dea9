"""One track, from its path to a prediction: decode and analyse once, one batched ONNX call per
model, the vote and the taxonomy's decision (``pipeline``), the ``Prediction`` and its cache record
(``prediction``), and the album vote over a folder's tracks (``album``).

Imports: gtag.audio, gtag.genres, gtag.models, gtag.tags (an album's name).
"""
