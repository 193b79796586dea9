"""`gtag learn`: a genre model learned from the tags a library already has. ``labels`` reads the
library and merges spellings into labels, ``embed`` runs the shipped backbone over every track
(cached by content), ``learner`` cross-validates by artist and exports the ONNX model.

Imports: gtag.audio, gtag.genres, gtag.models, gtag.predict, gtag.tags, gtag.run, gtag.exitcodes.
"""
