"""Training for gtag: dataset readers, feature extraction, model fitting, evaluation and ONNX export.

Needs the ``train`` extra (torch, scikit-learn, skl2onnx, onnx). ``gtag`` itself never imports this.

Import picture: a module imports only from rows below its own, never from its row, so no trainer
imports another (check: ``grep -nE "from \\.(classic|loop|transfer|musicnn_head|realworld) " training/*.py``
lists only cli.py and ensemble.py; tests/test_training_layout.py checks the whole picture).

    cli            gtag-train: one command per module below, each imported when its command runs
    ensemble       the only module that combines models: train-only copies, vote weights, leave-one-out
    classic | loop | transfer | musicnn_head | realworld
                   trainers side by side: rf/knn, cnn/wavenet, musicnn export + GTZAN head, musicnn
                   head on GTZAN + a library; realworld measures the shipped models on a library
    musicnn_onnx   musicnn's ONNX export (backbone + gtag.head head), CPU variant and checks
    nets | musicnn the networks: cnn/wavenet; musicnn's torch port (and its `musicnn-convert` command)
    extract | evaluate | export
                   cached features, metrics, ONNX + manifest + licences
    data           readers and splits

Speed measurements live in ``benchmarks/`` (``bench_musicnn.py``: the musicnn path against the CNN's).
"""
