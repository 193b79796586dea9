"""Training for gtag: dataset readers, feature extraction, model fitting, evaluation and ONNX export.

Needs the ``train`` extra (torch, scikit-learn, skl2onnx, onnx). ``gtag`` itself never imports this.
"""
