"""Model files: the manifest and ONNX Runtime sessions, with the device picked once (``runtime``);
shipped and learned collections and the model card (``catalog``, ``modelcard``); the linear heads on
the backbone (``head``) and the vote over windows and models with its abstain rule (``vote``).

Imports: gtag.genres only (the taxonomy behind the model card).
"""
